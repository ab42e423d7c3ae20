"""Roles the bus tests run as separate processes: ``python bus_procs.py ROLE ARGS...``.

Every record written here has a payload that is a known function of its ``seq``
(:func:`payload`), so a reader can prove it never received a torn or mixed record.
Each role prints one JSON line (or ``ready``) on stdout.
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

import shm


def payload(seqs: np.ndarray) -> np.ndarray:
    """Trade records whose every field is derived from ``seqs``."""
    seqs = seqs.astype(np.uint64)
    s = seqs.astype(np.int64)
    out = np.zeros(len(seqs), shm.TRADE)
    out["seq"] = seqs
    out["ts_exchange_ns"] = s * 10
    out["ts_recv_ns"] = s * 11
    out["ts_mono_ns"] = s * 13
    out["symbol_id"] = s % 997
    out["exchange"] = s % 3 + 1
    out["market"] = 1
    out["flags"] = s % 65536
    out["price"] = s * 0.25
    out["qty"] = (s % 1000).astype(np.float64)
    out["trade_id"] = s * 3 + 1
    out["side"] = np.where(s % 2 == 0, 1, -1)
    return out


def mismatches(records: np.ndarray) -> int:
    """Number of records whose payload is not ``payload(seq)`` (ts_commit_ns excluded)."""
    if len(records) == 0:
        return 0
    expected = payload(records["seq"])
    bad = np.zeros(len(records), bool)
    for field in shm.TRADE.names or ():
        if field != "ts_commit_ns":
            bad |= records[field] != expected[field]
    return int(bad.sum())


def writer(name: str, seconds: str, capacity: str) -> None:
    """Commit payload records at full speed (random batch sizes, some single) then close."""
    rng = np.random.default_rng(1)
    w = shm.Writer(name, shm.TRADE, int(capacity))
    print("ready", flush=True)
    time.sleep(0.5)  # let the readers attach
    stop = time.monotonic() + float(seconds)
    while time.monotonic() < stop:
        for _ in range(64):
            k = int(rng.integers(1, 200))
            if k < 20:
                w.commit(payload(np.array([w.tail]))[0])
            else:
                w.commit_batch(payload(np.arange(w.tail, w.tail + k)))
        w.heartbeat()
    tail = w.tail
    w.close()
    print(json.dumps({"tail": tail}), flush=True)


def reader(name: str, mode: str) -> None:
    """Follow the ring from the oldest record until the writer closes; verify every record."""
    slow = mode == "slow"
    r = shm.Reader(name, start="oldest", wait="spin" if mode == "spin" else "park",
                   max_batch=64 if slow else 4096)
    first = r.stats.next_seq
    bad = order = 0
    last = first - 1
    while True:
        try:
            batch = r.poll(timeout_s=0.5)
        except shm.WriterGone:
            break
        bad += mismatches(batch)
        if len(batch):
            seqs = batch["seq"].astype(np.int64)
            order += int(seqs[0] <= last) + int(np.any(np.diff(seqs) != 1))
            last = int(seqs[-1])
        if slow:
            time.sleep(0.002)
    st = r.stats
    print(json.dumps({"first": first, "delivered": st.delivered, "lost": st.lost,
                      "lapped": st.lapped, "invalid": st.invalid, "bad": bad,
                      "order_errors": order, "tail": st.tail}), flush=True)


def idle_reader(name: str, park_timeout_ms: str) -> None:
    """Park on an idle ring, then report how long the first commit took to reach us."""
    r = shm.Reader(name, start="latest", wait="park", spin_us=50,
                   park_timeout_ms=float(park_timeout_ms))
    print("ready", flush=True)
    batch = r.poll(timeout_s=30)
    now = time.perf_counter_ns()
    print(json.dumps({"n": len(batch), "latency_us": (now - int(batch["ts_commit_ns"][0])) / 1e3
                      if len(batch) else None, "parks": r.stats.parks}), flush=True)


def hold_writer(name: str) -> None:
    """Create a ring, commit three records, and sleep until killed."""
    w = shm.Writer(name, shm.TRADE, 64)
    w.commit_batch(payload(np.arange(3)))
    print(json.dumps({"pid": os.getpid()}), flush=True)
    time.sleep(600)


def latest_writer(name: str, seconds: str) -> None:
    """Rewrite row 1 of a latest table as fast as possible with payload(k), k = 0, 1, 2, ..."""
    w = shm.LatestWriter(name, shm.TRADE, 4)
    w.register(1, "BTCUSDT")
    records = payload(np.arange(1 << 16))
    print("ready", flush=True)
    stop = time.monotonic() + float(seconds)
    k = 0
    while time.monotonic() < stop:
        w.update(1, records[k & 0xFFFF])
        k += 1
    w.close()
    print(json.dumps({"updates": k}), flush=True)


def crash_mid_commit(name: str) -> None:
    """Commit seqs 0..7 into an 8-slot ring, then die the way a writer killed inside the commit
    kernel would: tail_intent raised to 12, slots of seqs 8 and 9 half-written, tail still 8."""
    w = shm.Writer(name, shm.TRADE, 8)
    w.commit_batch(payload(np.arange(8)))
    w._seg.set(shm.layout.H.TAIL_INTENT, 12)
    slots = w._seg.view(shm.layout.HEADER_SIZE, shm.TRADE, 8)
    for seq in (8, 9):
        torn = payload(np.array([seq]))[0]
        torn["seq"] = seq - 8  # the old seq survives in a torn slot
        slots[seq & 7] = torn
    del slots
    os._exit(0)


def latest_crash_mid_update(name: str) -> None:
    """Write row 1 of a latest table, then die between the odd and the even version store."""
    w = shm.LatestWriter(name, shm.TRADE, 4)
    w.register(1, "BTCUSDT")
    w.update(1, payload(np.array([5]))[0])
    w._words[(shm.layout.HEADER_SIZE + w._stride) >> 3] += 1  # what update() stores first
    os._exit(0)


if __name__ == "__main__":
    roles = {f.__name__: f for f in (writer, reader, idle_reader, hold_writer, latest_writer,
                                     crash_mid_commit, latest_crash_mid_update)}
    roles[sys.argv[1]](*sys.argv[2:])
