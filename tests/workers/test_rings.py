"""``RingSet.pending``: one compiled check names the rings with records; a sweep every
``sweep_s`` names them all, so that late rings and writer restarts are still found."""

from __future__ import annotations

import threading
import time

import numpy as np

import shm
from workers.rings import RingSet

KEYS = [("binance", "trades"), ("binance", "bbo"), ("okx", "trades")]


def _writer(instance: str, owner: str, stream: str) -> shm.Writer:
    return shm.Writer(shm.segment_name(instance, owner, stream),
                      shm.TRADE if stream == "trades" else shm.BBO, 1024)


def _trade(w: shm.Writer, n: int) -> None:
    rec = np.zeros(1, shm.TRADE)[0]
    rec["trade_id"] = n
    w.commit(rec)


def _sweep(rings: RingSet, keys: list[tuple[str, str]]) -> None:
    """Force the next pending() to be a sweep, and poll what it names (as the loops do)."""
    rings._next_sweep = 0.0
    for key in rings.pending(keys):
        rings.poll(*key)


def test_pending_names_only_rings_with_records(instance: str) -> None:
    writers = {k: _writer(instance, *k) for k in KEYS}
    rings = RingSet(instance, sweep_s=3600.0)
    keys = list(KEYS)
    try:
        _sweep(rings, keys)                      # attaches all three
        assert rings.pending(keys) == []
        _trade(writers[("okx", "trades")], 1)
        assert rings.pending(keys) == [("okx", "trades")]
        batch, _ = rings.poll("okx", "trades")
        assert batch is not None and batch["trade_id"].tolist() == [1]
        assert rings.pending(keys) == []
        _trade(writers[("binance", "trades")], 2)
        _trade(writers[("okx", "trades")], 3)
        assert rings.pending(keys) == [("binance", "trades"), ("okx", "trades")]   # keys order
    finally:
        rings.close()
        for w in writers.values():
            w.close(unlink=True)


def test_a_sweep_names_every_key_and_finds_a_late_ring(instance: str) -> None:
    rings = RingSet(instance, retry_s=0.0, sweep_s=0.05)
    keys = [("binance", "trades")]
    w = None
    try:
        assert rings.pending(keys) == keys       # the first call sweeps
        assert rings.poll("binance", "trades") == (None, False)   # not there yet
        assert rings.pending(keys) == []         # nothing attached, nothing pending
        w = _writer(instance, "binance", "trades")
        _trade(w, 7)
        time.sleep(0.06)
        assert rings.pending(keys) == keys       # the sweep
        rings.poll("binance", "trades")          # attaches ("latest": the 7 is history)
        _trade(w, 8)
        assert rings.pending(keys) == keys       # now seen by the compiled check
        batch, _ = rings.poll("binance", "trades")
        assert batch is not None and batch["trade_id"].tolist() == [8]
    finally:
        rings.close()
        if w is not None:
            w.close(unlink=True)


def test_a_restarted_writer_is_followed_at_its_new_mapping(instance: str) -> None:
    keys = [("binance", "trades")]
    w = _writer(instance, "binance", "trades")
    rings = RingSet(instance, sweep_s=3600.0)
    try:
        _sweep(rings, keys)
        _trade(w, 1)
        assert rings.pending(keys) == keys
        rings.poll("binance", "trades")
        w.close(unlink=True)                     # the worker stops, a new one starts
        w = _writer(instance, "binance", "trades")
        _trade(w, 2)
        # the old mapping's tail does not move: only a poll (the sweep) finds the new writer
        deadline = time.monotonic() + 5
        got: list[int] = []
        while not got and time.monotonic() < deadline:
            _sweep(rings, keys)
            time.sleep(0.01)
            got = [] if (b := rings.poll("binance", "trades")[0]) is None else \
                b["trade_id"].tolist()
        assert rings.discontinuities == 1
        _trade(w, 3)
        assert rings.pending(keys) == keys       # the new mapping's words
        batch, _ = rings.poll("binance", "trades")
        assert batch is not None and batch["trade_id"].tolist() == [3]
    finally:
        rings.close()
        w.close(unlink=True)


def _follow(instance: str, window_us: int, gaps_s: list[float]) -> tuple[int, list[int], float]:
    """A writer thread commits a trade, then one more after each of ``gaps_s``; this thread
    follows the ring as the loops do (poll, else wait). Returns (wait() calls, commit → poll
    latency in ns, seconds from the first commit to the last record read)."""
    w = _writer(instance, "binance", "trades")
    rings = RingSet(instance, sweep_s=3600.0, batch_window_us=window_us)
    count = len(gaps_s) + 1

    def write() -> None:
        time.sleep(0.05)
        _trade(w, 0)
        for n, gap in enumerate(gaps_s, 1):
            time.sleep(gap)
            _trade(w, n)

    waits, latency, first, last = 0, [], 0, 0
    try:
        _sweep(rings, [("binance", "trades")])
        thread = threading.Thread(target=write)
        thread.start()
        deadline = time.monotonic() + 30
        while len(latency) < count and time.monotonic() < deadline:
            batch, _ = rings.poll("binance", "trades")
            if batch is not None and len(batch):
                last = time.perf_counter_ns()
                first = first or int(batch["ts_commit_ns"][0])
                latency += (last - batch["ts_commit_ns"]).tolist()
                continue
            rings.wait(0.5)
            waits += 1
        thread.join()
    finally:
        rings.close()
        w.close(unlink=True)
    assert len(latency) == count
    return waits, latency, (last - first) / 1e9


def test_a_batch_window_gathers_frequent_commits_into_fewer_wake_ups(instance: str) -> None:
    plain, _, _ = _follow(instance, 0, [0.002] * 99)
    windowed, latency, span = _follow(instance, 20_000, [0.002] * 99)
    assert plain >= 50                           # about one wake-up per commit
    assert windowed <= span / 0.020 + 5          # about one per 20 ms window
    # a record waits about a window at most: half within one (a wrong window fails this),
    # p90 with room for a stalled host's late wake-ups; a window that never closed would
    # hold records to the 0.5 s wait's end
    assert np.percentile(latency, 50) < 20_000_000 and np.percentile(latency, 90) < 60_000_000
    assert max(latency) < 250_000_000


def test_a_batch_window_leaves_slow_traffic_alone(instance: str) -> None:
    # a close pair (busy for one window), then commits 1.5 windows apart: each is woken by
    # its commit, not by a timer, and costs one wake-up
    waits, latency, _ = _follow(instance, 20_000, [0.001] + [0.030] * 8)
    assert waits <= 9 + 4
    assert sorted(latency)[len(latency) // 2] < 10_000_000
