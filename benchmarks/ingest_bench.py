"""Feed-worker ingest: frames/s per worker in venue flood mode, and on_ws_frame → ring commit.

Run: ``.venv/bin/python benchmarks/ingest_bench.py [--exchange binance,bybit,okx]
[--case trades,bbo,depth,recorded] [--seconds S] [--runs N] [--quick]``.

Per exchange and case, a local venue floods a looping synthetic market (2 symbols) and a real
feed worker (``microstream feed``, its own process) subscribes to the case's streams only:
``trades`` (one trade per frame), ``bbo`` (Binance ``bookTicker``; the synthetic Bybit and OKX
venues have no level-1 topic) or ``depth`` (diff-depth/book messages maintained into a book;
each applied message commits its depth records and a top-20 book record); ``recorded`` floods
a real recording instead (``tests/data/recorded``, looped), every symbol and stream in it (real
frame sizes and mix; each loop restarts the sequences: a gap and a resync, counted in
``sequence_or_decode_errors``; latency from the trades ring). The venue and the worker are
pinned to different CPUs. Throughput is the worker's frame counter (shared-memory
stats) over ``S`` seconds; the worker's CPU time per frame comes from psutil. Latency is read
from the records themselves: ``ts_commit_ns`` (stamped inside the ring commit) minus
``ts_mono_ns`` (``perf_counter_ns`` at ``on_ws_frame`` entry), one clock, read from the ring
after the run (the last ``ring_capacity`` records; the trades, bbo or book ring):
``frame_to_commit_*`` has one sample per frame (the records of one message share its stamps),
``record_to_commit_p99`` one per record (a multi-trade frame counts once per trade). Prints
JSON lines ``{"bench": "ingest", "suite": "ingest", "case", "metric", "value", "unit", ...}``;
with several runs, the median run and the spread.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO / "tests" / "workers"))

from feed_live import start_worker, stats, stop_worker, wait_for, write_config  # noqa: E402
from harness import DATA, RECORDINGS  # noqa: E402
from report import Emitter, pin  # noqa: E402

import shm  # noqa: E402
from workers.exchanges.replay import feed_class, load_frames  # noqa: E402
from workers.venue import start_venue  # noqa: E402

SYMBOLS = {"binance": (("BTCUSDT", "linear"), ("ETHUSDT", "linear")),
           "bybit": (("BTCUSDT", "linear"), ("ETHUSDT", "linear")),
           "okx": (("BTC-USDT-SWAP", "linear"), ("ETH-USDT-SWAP", "linear"))}
CASES = {"trades": (["trades"], "trades"), "bbo": (["bbo"], "bbo"),
         "depth": (["depth", "book"], "book"), "recorded": ([], "trades")}
# ``recorded``: the venue floods a real recording (looped) and the worker subscribes to every
# symbol and stream in it, as replay discovers them; latency from the trades ring
LEVEL1 = {"binance"}   # the synthetic Bybit/OKX venues have no level-1 topic (BBO from books)


EMIT = Emitter(suite="ingest")

def _emit(case: str, metric: str, value: float, unit: str, **extra: object) -> None:
    EMIT(case, metric, round(value, 3), unit, **extra)


def one_run(exchange: str, case: str, seconds: float, rate: int) -> dict[str, float]:
    """One venue + worker run; frames/s, CPU µs per frame, latency percentiles (µs)."""
    instance = "bench" + uuid.uuid4().hex[:6]
    try:
        return _one_run(exchange, case, seconds, rate, instance)
    finally:  # the worker's segments go, whatever happened
        for info in shm.list_segments(instance):
            try:
                os.unlink(os.path.join(shm.SHM_DIR, info.name))
            except FileNotFoundError:
                pass


def _one_run(exchange: str, case: str, seconds: float, rate: int, instance: str
             ) -> dict[str, float]:
    streams, ring = CASES[case]
    symbols = [{"symbol": s, "market": m, "streams": streams} for s, m in SYMBOLS[exchange]]
    extra = "ring_capacity = 262144\n"
    options: dict[str, object] = {"depth_levels": 50} if exchange == "bybit" else {}
    if case == "recorded":
        recording = DATA / RECORDINGS[exchange]
        specs, options = feed_class(exchange).discover([f for _, f in load_frames(recording)])
        symbols = [{"symbol": x.symbol, "market": x.market, "streams": list(x.streams)}
                   for x in specs]
    if options:   # the synthetic Bybit venue publishes orderbook.50; a recording says its own
        extra += "options = {" + ", ".join(f"{k} = {json.dumps(v)}"
                                           for k, v in options.items()) + "}\n"
    # depth: a timeline long enough not to loop while measuring (a Binance loop restarts the
    # update ids, which is a gap and a resync); trades may loop
    timeline = {"symbols": 2, "rate": 20_000, "seconds": 40, "seed": 1} if case == "depth" \
        else {"symbols": 2, "rate": rate, "seconds": 10, "seed": 1}
    recorded = case == "recorded"
    with tempfile.TemporaryDirectory() as tmp, start_venue(
            exchange, [str(DATA / RECORDINGS[exchange])] if recorded else [], flood=True,
            loop=True, synthetic=None if recorded else timeline) as venue:
        pin(venue.proc.pid, 0)
        cfg = write_config(Path(tmp) / "config.toml", instance, exchange, venue.ws_url,
                           venue.rest_url, symbols, extra=extra)
        proc = start_worker(exchange, cfg, Path(tmp) / "worker.log")
        try:
            pin(proc.pid, 1)
            wait_for(lambda: (stats(instance, exchange) or {}).get("frames", 0) > 10_000, 120,
                     "the worker to receive frames")
            time.sleep(1.0)  # warm-up discarded
            ps = psutil.Process(proc.pid)
            s0, c0, t0 = stats(instance, exchange), ps.cpu_times(), time.perf_counter()
            time.sleep(seconds)
            s1, c1, t1 = stats(instance, exchange), ps.cpu_times(), time.perf_counter()
            assert s0 is not None and s1 is not None
            frames = s1["frames"] - s0["frames"]
            cpu = (c1.user + c1.system) - (c0.user + c0.system)
        finally:
            stop_worker(proc)
            log = (Path(tmp) / "worker.log").read_text()
        # the stopped worker's ring is still there (closed, not unlinked): read what it holds
        reader = shm.Reader.attach(exchange, ring, instance, start="oldest")
        records = []
        try:
            while len(batch := reader.poll(timeout_s=0.2)):
                records.append(batch)
        except shm.WriterGone:
            pass
        reader.close()

    recs = np.concatenate(records) if records else np.zeros(0)
    if case == "depth":
        recs = recs[recs["state"] == shm.BookState.LIVE]
    if not len(recs):
        raise RuntimeError(f"{exchange}/{case}: no records; worker log:\n{log[-2000:]}")
    lat = (recs["ts_commit_ns"] - recs["ts_mono_ns"]) / 1e3
    # one sample per frame: a message's records share its receipt stamp and its commit (a
    # Bybit sweep of 30 fills is one frame, not 30 samples of it)
    _, first = np.unique(recs["ts_mono_ns"], return_index=True)
    per_frame = lat[first]
    return {"frames_per_s": frames / (t1 - t0), "cpu_us_per_frame": cpu / max(frames, 1) * 1e6,
            "p50": float(np.percentile(per_frame, 50)),
            "p99": float(np.percentile(per_frame, 99)),
            "p999": float(np.percentile(per_frame, 99.9)),
            "record_p99": float(np.percentile(lat, 99)), "records": float(len(lat)),
            "errors": float(s1["decode_errors"] + s1["gaps"] + s1["checksum_failures"])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exchange", default="binance,bybit,okx")
    parser.add_argument("--case", default="trades,bbo,depth,recorded")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rate", type=int, default=5000, help="synthetic events/s (timeline)")
    parser.add_argument("--quick", action="store_true", help="one short run (CI smoke test)")
    parser.add_argument("--out", help="also write the JSON lines to this file")
    parser.add_argument("--plot", help="draw latency and throughput into this PNG")
    args = parser.parse_args(argv)
    runs, seconds = (1, 1.5) if args.quick else (args.runs, args.seconds)
    for exchange in args.exchange.split(","):
        for case in args.case.split(","):
            if case == "bbo" and exchange not in LEVEL1:
                continue
            results = [one_run(exchange, case, seconds, args.rate) for _ in range(runs)]
            median = sorted(results, key=lambda r: r["frames_per_s"])[len(results) // 2]
            name = f"{exchange}/{case}"
            spread = [round(r["frames_per_s"]) for r in results]
            _emit(name, "throughput", median["frames_per_s"], "frames/s", runs=spread)
            _emit(name, "worker_cpu", median["cpu_us_per_frame"], "us/frame")
            for p in ("p50", "p99", "p999"):
                _emit(name, f"frame_to_commit_{p}", median[p], "us",
                      runs=[round(r[p], 2) for r in results],
                      median_of_runs=round(statistics.median(r[p] for r in results), 2))
            _emit(name, "record_to_commit_p99", median["record_p99"], "us",
                  runs=[round(r["record_p99"], 2) for r in results])
            _emit(name, "records", median["records"], "count")
            _emit(name, "sequence_or_decode_errors", median["errors"], "count")
    EMIT.finish(args.out, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
