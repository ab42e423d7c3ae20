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
    # (seconds, not microseconds: room for a stalled host, far from the 20 s timeout)
    assert result["latency_us"] < 5_000_000, f"woken by timeout, not by the commit: {result}"


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


def test_wait_any_wakes_on_any_ring_of_another_process(instance: str) -> None:
    """One futex_waitv over three rings: a commit on the last one, made by another process,
    ends the wait long before its timeout; with nothing new it times out."""
    import subprocess
    import sys
    import time

    writers = [shm.Writer(shm.segment_name(instance, "x", f"r{i}"), shm.TRADE, 1024)
               for i in range(2)]
    name = shm.segment_name(instance, "x", "r2")
    code = ("import time, numpy as np, shm, sys\n"
            "w = shm.Writer(sys.argv[1], shm.TRADE, 1024)\nprint('ready', flush=True)\n"
            "sys.stdin.readline()\ntime.sleep(0.3)\n"
            "w.commit_batch(np.zeros(1, shm.TRADE))\ntime.sleep(1.0)\nw.close(unlink=True)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, name], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline().strip() == "ready"
        readers = [shm.Reader(w.name) for w in writers] + [shm.Reader(name)]
        t0 = time.perf_counter()
        assert not shm.wait_any(readers, 0.2)
        assert 0.18 < time.perf_counter() - t0 < 5.0   # the timeout, give or take a stall
        proc.stdin.write("go\n")
        proc.stdin.flush()
        t0 = time.perf_counter()
        assert shm.wait_any(readers, 10.0)
        waited = time.perf_counter() - t0
        assert 0.25 < waited < 3, waited   # woken by the commit, not by the timeout
        assert len(readers[2].poll()) == 1 and not len(readers[0].poll())
        assert readers[0].stats.parks >= 1
        for r in readers:
            r.close()
    finally:
        proc.wait(timeout=30)
        for w in writers:
            w.close(unlink=True)
