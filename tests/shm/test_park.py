"""Park/wake across unrelated processes, and the CPU cost of an idle parked reader."""

from __future__ import annotations

import json
import time

import numpy as np
import psutil
from bus_procs import payload
from conftest import spawn

import shm
from shm.layout import DoorbellOffsets
from shm.segment import Segment


def _waiters(name: str) -> int:
    bell = Segment.open(name + ".wake", writable=False, magic=shm.layout.DOORBELL_MAGIC)
    try:
        return int(bell.words[DoorbellOffsets.WAITERS >> 3]) & 0xFFFFFFFF
    finally:
        bell.close()


def _wait_parked(name: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while _waiters(name) == 0:
        assert time.monotonic() < deadline, "reader never parked"
        time.sleep(0.01)


def test_parked_unrelated_process_wakes_on_commit(instance: str) -> None:
    name = shm.segment_name(instance, "binance", "trades")
    with shm.Writer(name, shm.TRADE, 64) as w:
        # a 20 s park timeout: a reader that only woke on its timeout would take seconds
        proc = spawn("idle_reader", name, 20_000)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        _wait_parked(name)
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
        proc = spawn("idle_reader", name, 100)  # default-like timeout: wakes 10×/s to check
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        _wait_parked(name)
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
