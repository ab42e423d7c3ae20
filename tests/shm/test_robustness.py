"""Crashes, corrupt headers, misuse and races: the bus degrades with clear errors, never UB."""

from __future__ import annotations

import json
import os
import signal
import time

import numpy as np
import pytest
from bus_procs import mismatches, payload
from conftest import spawn

import shm
import shm.registry
from shm.layout import H
from shm.segment import Segment


def _run(role: str, *args: object) -> None:
    proc = spawn(role, *args)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err


def test_torn_slots_of_a_crashed_writer_are_lost_not_delivered(instance: str) -> None:
    name = shm.segment_name(instance, "binance", "trades")
    _run("crash_mid_commit", name)
    with shm.Reader(name, start="oldest") as r, shm.Writer(name, shm.TRADE, 8) as w:
        assert w.generation == 2
        got = r.poll()
        # slots of seqs 0 and 1 were being overwritten by 8 and 9: never trust them
        assert got["seq"].tolist() == [4, 5, 6, 7] and mismatches(got) == 0
        assert r.stats.lost == 4 and r.stats.invalid == 0
        w.commit_batch(payload(np.arange(8, 10)))
        assert r.poll()["seq"].tolist() == [8, 9]


def test_latest_takeover_voids_a_row_left_mid_update(instance: str) -> None:
    name = shm.segment_name(instance, "okx", "trades", suffix="latest")
    _run("latest_crash_mid_update", name)
    w = shm.LatestWriter(name, shm.TRADE, 4)
    table = shm.LatestReader(name)
    assert table.get("BTCUSDT") is None  # torn row: no record, but the name survives
    w.update(1, payload(np.array([6]))[0])
    assert table.get(1)["trade_id"] == 19
    table.close()
    w.close(unlink=True)


def test_poll_into_buffer_is_rechecked_after_the_segment_is_recreated(instance: str) -> None:
    name = shm.segment_name(instance, "bybit", "book")
    small = shm.book_dtype(1)
    w = shm.Writer(name, small, 8)
    r = shm.Reader(name, start="oldest")
    buf = np.zeros(4, small)
    w.commit_batch(np.zeros(2, small))
    assert r.poll_into(buf) == 2
    w.close(unlink=True)
    with shm.Writer(name, shm.BOOK, 8) as w2:  # a new file with 704-byte records
        w2.commit_batch(np.zeros(3, shm.BOOK))
        for _ in range(50):
            try:
                r.poll_into(buf, timeout_s=0.05)
            except shm.LayoutMismatch:
                break
            except shm.WriterGone:
                continue
        else:
            pytest.fail("a buffer of the old layout was accepted after the re-open")
        assert len(r.poll(timeout_s=1.0)) == 3 and r.dtype == shm.BOOK
    r.close()


def test_closed_writer_raises_at_once_without_spinning(instance: str) -> None:
    name = shm.segment_name(instance, "okx", "bbo")
    w = shm.Writer(name, shm.TRADE, 8)
    r = shm.Reader(name)
    w.close()
    cpu, wall = time.process_time(), time.monotonic()
    with pytest.raises(shm.WriterGone, match="closed"):
        r.poll(timeout_s=2.0)
    assert time.monotonic() - wall < 0.5 and time.process_time() - cpu < 0.5
    r.close()
    w.close(unlink=True)


def test_reader_used_after_close_raises(instance: str) -> None:
    name = shm.segment_name(instance, "binance", "bbo")
    with shm.Writer(name, shm.TRADE, 8):
        with shm.Reader(name) as r:
            pass
        with pytest.raises(ValueError, match="closed"):
            r.poll()
        with pytest.raises(ValueError, match="closed"):
            r.poll_into(np.zeros(2, shm.TRADE))


@pytest.mark.parametrize("field, value, match", [
    (H.CAPACITY, 1 << 40, "cannot hold"),
    (H.CAPACITY, 12, "power of two"),
    (H.RECORD_SIZE, 88, "inconsistent"),
    (H.DATA_OFFSET, 0, "cannot hold"),
    (H.KIND, 2, "not a ring"),
])
def test_corrupt_header_is_rejected(instance: str, field: int, value: int, match: str) -> None:
    name = shm.segment_name(instance, "bybit", "trades")
    with shm.Writer(name, shm.TRADE, 64):
        seg = Segment.open(name, writable=True)
        seg.set(field, value)
        seg.close()
        with pytest.raises(shm.LayoutMismatch, match=match):
            shm.Reader(name)


def test_garbage_dtype_description_is_rejected(instance: str) -> None:
    name = shm.segment_name(instance, "bybit", "bbo")
    with shm.Writer(name, shm.TRADE, 64):
        seg = Segment.open(name, writable=True)
        seg.set_text(H.DESCR, H.DESCR_SIZE, '{"itemsize": 80, "fields": [["seq"')
        seg.close()
        with pytest.raises(shm.LayoutMismatch, match="unreadable"):
            shm.Reader(name)
        assert shm.list_segments(instance)[0].kind == "ring"


def test_start_beyond_the_tail_waits_for_it(instance: str) -> None:
    name = shm.segment_name(instance, "okx", "depth")
    with shm.Writer(name, shm.TRADE, 64) as w, shm.Reader(name, start=12) as r:
        w.commit_batch(payload(np.arange(10)))
        assert len(r.poll()) == 0 and len(r.poll(timeout_s=0.01)) == 0
        w.commit_batch(payload(np.arange(10, 15)))
        assert r.poll()["seq"].tolist() == [12, 13, 14]


def test_gc_never_removes_a_segment_claimed_after_it_looked(instance: str,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    name = shm.segment_name(instance, "binance", "depth")
    proc = spawn("hold_writer", name)
    assert proc.stdout is not None and json.loads(proc.stdout.readline())["pid"]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    real, restarted = shm.registry.list_segments, []

    def list_then_restart(inst: str | None = None) -> list[shm.SegmentInfo]:
        infos = real(inst)  # sees the dead writer ...
        restarted.append(shm.Writer(name, shm.TRADE, 64))  # ... which restarts meanwhile
        return infos

    monkeypatch.setattr(shm.registry, "list_segments", list_then_restart)
    assert shm.registry.gc_segments(instance) == []
    assert os.path.exists(os.path.join(shm.SHM_DIR, name))
    with shm.Reader(name, start="oldest") as r:
        assert len(r.poll()) == 3
    restarted[0].close(unlink=True)


def test_reader_waits_quietly_for_a_segment_nobody_writes_yet(instance: str) -> None:
    name = shm.segment_name(instance, "okx", "trades")
    w = shm.Writer(name, shm.TRADE, 8)
    seg = Segment.open(name, writable=True)
    seg.set(H.STATE, shm.layout.SegmentState.INIT)  # as a supervisor leaves a fresh segment
    seg.set(H.WRITER_PID, 0)
    seg.close()
    with shm.Reader(name) as r:
        for _ in range(3):
            assert len(r.poll(timeout_s=0.3)) == 0  # waits, no WriterGone
    w.close(unlink=True)


def test_registry_survives_unknown_state(instance: str) -> None:
    name = shm.segment_name(instance, "okx", "funding")
    with shm.Writer(name, shm.TRADE, 8):
        seg = Segment.open(name, writable=True)
        seg.set(H.STATE, 7)
        seg.close()
        assert shm.list_segments(instance)[0].state == "UNKNOWN(7)"
        assert shm.gc_segments(instance) == []
