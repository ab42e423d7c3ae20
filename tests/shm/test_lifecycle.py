"""Process lifecycle: readers never remove segments; dead writers are detected and collected."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from bus_procs import payload
from conftest import spawn

import shm


def test_reader_exit_does_not_remove_segment(instance: str) -> None:
    name = shm.segment_name(instance, "okx", "trades")
    with shm.Writer(name, shm.TRADE, 64) as w:
        w.commit_batch(payload(np.arange(5)))
        code = (f"import shm; r = shm.Reader({name!r}, start='oldest'); "
                "print(len(r.poll())); r.close()")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True, timeout=60)
        assert out.stdout.strip() == "5"
        assert os.path.exists(os.path.join(shm.SHM_DIR, name))
        w.commit_batch(payload(np.arange(5, 7)))  # still a working ring
        with shm.Reader(name, start="oldest") as r:
            assert len(r.poll()) == 7


def test_killed_writer_is_detected_and_collected(instance: str) -> None:
    name = shm.segment_name(instance, "bybit", "trades")
    proc = spawn("hold_writer", name)
    assert proc.stdout is not None
    pid = json.loads(proc.stdout.readline())["pid"]
    reader = shm.Reader(name, start="oldest")
    assert len(reader.poll()) == 3
    info = {i.name: i for i in shm.list_segments(instance)}[name]
    assert info.writer_alive and info.writer_pid == pid
    assert shm.gc_segments(instance) == []  # a live writer's segment is kept

    os.kill(pid, signal.SIGKILL)
    proc.wait(timeout=10)
    with pytest.raises(shm.WriterGone, match="died"):
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            reader.poll(timeout_s=0.1)
    reader.close()
    assert not {i.name: i for i in shm.list_segments(instance)}[name].writer_alive
    removed = shm.gc_segments(instance)
    assert removed == [name, name + ".wake"]
    assert shm.list_segments(instance) == []


def test_new_writer_after_crash_is_followed_with_discontinuity(instance: str) -> None:
    name = shm.segment_name(instance, "bybit", "trades")
    proc = spawn("hold_writer", name)
    assert proc.stdout is not None
    proc.stdout.readline()
    reader = shm.Reader(name, start="oldest")
    assert len(reader.poll()) == 3
    proc.kill()
    proc.wait(timeout=10)
    with shm.Writer(name, shm.TRADE, 64) as w:  # takes over the dead writer's segment
        w.commit_batch(payload(np.arange(3, 6)))
        assert reader.poll(timeout_s=1)["seq"].tolist() == [3, 4, 5]
        assert reader.stats.discontinuities == 1
    reader.close()


def test_reader_mapping_is_read_only(instance: str) -> None:
    name = shm.segment_name(instance, "binance", "bbo")
    with shm.Writer(name, shm.BBO, 8) as w, shm.Reader(name) as r:
        w.commit_batch(np.zeros(2, shm.BBO))
        with pytest.raises(TypeError):
            r._mem[5000] = 1  # the reader's only handle on the records
        with pytest.raises(TypeError):
            r._hw[shm.layout.H.TAIL >> 3] = 0
        seg = shm.segment.Segment.open(name)
        with pytest.raises(ValueError, match="read-only"):
            seg.words[0] = 0
        seg.close()
        copy = r.poll()  # what poll returns is the caller's own writable copy
        copy["bid_px"] = 1.0
        with shm.Reader(name, start="oldest") as again:
            assert again.poll()["bid_px"].tolist() == [0.0, 0.0]  # the ring is untouched
