"""``microstream shm demo``: the bus, live, between two processes.

The parent writes synthetic trades (a seeded random walk) into a ring and its latest table at a
paced rate; a spawned child follows the ring with a parked :class:`shm.Reader` and reports, once a
second, what it received and the commit → deliver latency taken from the in-record stamps.
"""

from __future__ import annotations

import multiprocessing as mp
import sys
import time
from multiprocessing.connection import Connection

import numpy as np

import shm

__all__ = ["run_demo"]

def _follow(name: str, conn: Connection) -> None:
    """Child: read the ring until the writer closes it, sending per-second stats."""
    reader = shm.Reader(name, start="latest", wait="park")
    conn.send({"ready": True})
    latencies = np.empty(1 << 20, np.int64)
    n = 0
    next_report = time.monotonic() + 1.0
    try:
        while True:
            try:
                batch = reader.poll(timeout_s=0.1)
            except shm.WriterGone:
                break
            if len(batch):
                now = time.perf_counter_ns()
                take = min(len(batch), len(latencies) - n)
                latencies[n:n + take] = now - batch["ts_commit_ns"][:take]
                n += take
            if time.monotonic() >= next_report:
                next_report += 1.0
                conn.send((reader.stats, latencies[:n].copy()))  # the parent does the maths
                n = 0
        conn.send((reader.stats, latencies[:n].copy()))
    finally:
        reader.close()
        conn.close()


def run_demo(instance: str, duration_s: float, rate_per_s: int, capacity: int) -> int:
    """Run the demo for ``duration_s`` seconds at ``rate_per_s`` trades/s; returns an exit code."""
    name = shm.segment_name(instance, "demo", "trades")
    writer = shm.Writer(name, shm.TRADE, capacity, replace=True)
    latest = shm.LatestWriter(name + ".latest", shm.TRADE, 4, replace=True)
    latest.register(0, "DEMOUSDT")
    parent, child = mp.get_context("spawn").Pipe()
    proc = mp.get_context("spawn").Process(target=_follow, args=(name, child), daemon=True)
    proc.start()
    if not parent.poll(60) or "ready" not in parent.recv():
        writer.close(unlink=True)
        latest.close(unlink=True)
        print("the reader process did not start", file=sys.stderr)
        return 1
    print(f"writing synthetic trades to {name} at {rate_per_s}/s for {duration_s:g} s; "
          f"read them from another shell with shm.Reader({name!r})", flush=True)
    rng = np.random.default_rng(7)
    record = np.zeros(1, shm.TRADE)[0]
    record["exchange"], record["market"] = shm.Exchange.NONE, shm.Market.SPOT
    price, trade_id = 100.0, 0
    interval_ns = 1_000_000_000 // max(1, rate_per_s)
    start = time.perf_counter_ns()
    stop = start + int(duration_s * 1e9)
    next_beat = start
    try:
        while (now := time.perf_counter_ns()) < stop:
            due = start + trade_id * interval_ns
            if now < due:
                if due - now > 200_000:
                    time.sleep((due - now - 100_000) / 1e9)
                if parent.poll():
                    _print_line(parent.recv(), writer.tail)
                continue
            price *= 1.0 + rng.normal(0.0, 1e-4)
            record["price"], record["qty"] = round(price, 2), round(rng.exponential(0.5), 4)
            record["side"] = 1 if rng.random() < 0.5 else -1
            record["trade_id"] = trade_id
            record["ts_recv_ns"], record["ts_mono_ns"] = time.time_ns(), now
            record["ts_exchange_ns"] = record["ts_recv_ns"]
            writer.commit(record)
            latest.update(0, record)
            trade_id += 1
            if now >= next_beat:
                writer.heartbeat()
                latest.heartbeat()
                next_beat = now + 100_000_000
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
    finally:
        writer.close(unlink=True)
        latest.close(unlink=True)
    proc.join(timeout=5)
    while parent.poll(0.5):
        _print_line(parent.recv(), trade_id)
    print(f"done: {trade_id} trades committed; segments removed", flush=True)
    return 0 if proc.exitcode == 0 else 1


def _print_line(report: tuple[shm.ReaderStats, np.ndarray], committed: int) -> None:
    stats, lat_ns = report
    p50, p99 = np.percentile(lat_ns, [50, 99]) / 1e3 if len(lat_ns) else (float("nan"),) * 2
    print(f"committed={committed} delivered={stats.delivered} lost={stats.lost} "
          f"parks={stats.parks} commit→deliver p50={p50:.1f}µs p99={p99:.1f}µs", flush=True)
