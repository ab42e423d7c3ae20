"""Park/wake across unrelated processes, and the CPU cost of an idle parked reader."""

from __future__ import annotations

import json
import subprocess
import time

import numpy as np
import psutil
from bus_procs import payload
from conftest import spawn

import shm
from shm.layout import DoorbellOffsets
from shm.segment import Segment


def _parked(name: str) -> int:
    bell = Segment.open(name + ".wake", writable=False, magic=shm.layout.DOORBELL_MAGIC)
    try:
        return bell.get(DoorbellOffsets.PARKED)
    finally:
        bell.close()


def _wait_parked(name: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while _parked(name) == 0:
        assert time.monotonic() < deadline, "reader never parked"
        time.sleep(0.01)


def _parked_reader(name: str, park_timeout_ms: int) -> subprocess.Popen[str]:
    """An unrelated process parked on ``name`` (it reports on its first record)."""
    proc = spawn("idle_reader", name, park_timeout_ms)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    _wait_parked(name)
    return proc


def test_parked_unrelated_process_wakes_on_commit(instance: str) -> None:
    name = shm.segment_name(instance, "binance", "trades")
    with shm.Writer(name, shm.TRADE, 64) as w:
        # a 20 s park timeout: a reader that only woke on its timeout would take seconds
        proc = _parked_reader(name, 20_000)
        time.sleep(0.2)
        w.commit(payload(np.array([0]))[0])
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    result = json.loads(out)
    assert result["n"] == 1 and result["parks"] >= 1
    assert result["latency_us"] < 100_000, f"woken by timeout, not by the commit: {result}"


def test_idle_parked_reader_uses_almost_no_cpu(instance: str) -> None:
    name = shm.segment_name(instance, "okx", "trades")
    with shm.Writer(name, shm.TRADE, 64) as w:
        proc = _parked_reader(name, 100)  # default-like timeout: wakes 10×/s to check
        ps = psutil.Process(proc.pid)
        before = ps.cpu_times()
        time.sleep(2.0)
        after = ps.cpu_times()
        w.commit(payload(np.array([0]))[0])
        proc.communicate(timeout=30)
    cpu_s = (after.user + after.system) - (before.user + before.system)
    assert cpu_s < 0.1, f"idle parked reader burnt {cpu_s:.3f} CPU-s in 2 s"


def test_writer_does_not_wake_when_nobody_is_parked(instance: str) -> None:
    name = shm.segment_name(instance, "okx", "bbo")
    with shm.Writer(name, shm.TRADE, 64) as w:
        seg = Segment.open(name)
        w.commit_batch(payload(np.arange(10)))
        assert seg.get(shm.layout.H.WAKES) == 0
        seg.close()


def test_reader_killed_while_parked_stops_costing_wakeups(instance: str) -> None:
    name = shm.segment_name(instance, "bybit", "bbo")
    with shm.Writer(name, shm.TRADE, 64) as w:
        proc = _parked_reader(name, 20_000)
        proc.kill()
        proc.wait(timeout=10)
        assert _parked(name) != 0  # its bit is stuck: every commit would pay a FUTEX_WAKE
        seg = Segment.open(name)
        w.commit(payload(np.array([0]))[0])
        assert seg.get(shm.layout.H.WAKES) == 1
        w.heartbeat()  # the control-plane tick reaps dead readers' slots
        assert _parked(name) == 0
        w.commit_batch(payload(np.arange(1, 5)))
        assert seg.get(shm.layout.H.WAKES) == 1
        seg.close()


def test_doorbell_slots_are_returned_on_close(instance: str) -> None:
    name = shm.segment_name(instance, "okx", "depth")
    with shm.Writer(name, shm.TRADE, 8):
        readers = [shm.Reader(name) for _ in range(70)]  # more readers than the 64 slots
        assert sum(r._bell is not None for r in readers) == DoorbellOffsets.SLOT_COUNT
        assert readers[-1].poll(timeout_s=0.01).size == 0  # slotless: still waits, times out
        for r in readers:
            r.close()
        again = [shm.Reader(name) for _ in range(DoorbellOffsets.SLOT_COUNT)]
        assert all(r._bell is not None for r in again)
        for r in again:
            r.close()
