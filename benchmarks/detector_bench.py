"""Detector throughput (records/s through every kernel) and ring commit → event commit latency.

Run: ``.venv/bin/python benchmarks/detector_bench.py [--runs N] [--rate R] [--seconds S]``.

* ``throughput``: in-process, the kernels of one exchange (``ExchangeDetectors.run``) over (a)
  the Binance USD-M BTCUSDT recording's trades and book records, in the feed's commit chunks,
  and (b) a synthetic flood of 1 M trades of 4 symbols in batches of 512 (the reader's batch
  size under load). Records/s, median of ``--runs``.
* ``latency``: two processes on two CPUs, as deployed: a writer commits trades into a trades
  ring at ``--rate`` per second (paced by the clock, open loop) and ``microstream detect``
  (parked on that ring when idle) runs the kernels with a whale threshold every trade exceeds,
  so each trade makes one event. From the events ring afterwards: ``ts_commit_ns`` (event
  commit) − ``trigger_commit_ns`` (the trade's ring commit), one clock; the first 0.5 s is
  discarded. p50/p99/p99.9 of the median run, and every run's p99.

Prints JSON lines ``{"bench": "detectors", "suite", "case", "metric", "value", "unit", ...}``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from report import Emitter, pin  # noqa: E402

import shm  # noqa: E402
from engine.config import DetectorsConfig  # noqa: E402
from workers.detectors.events import EventBuffer  # noqa: E402
from workers.detectors.process import warm_kernels  # noqa: E402
from workers.detectors.runner import ExchangeDetectors  # noqa: E402

RECORDING = REPO / "tests/data/recorded/binance/hftbacktest_usdm_btcusdt_20240808.frames.jsonl.gz"

WRITER = """
import sys, time
import numpy as np
import shm
name, rate, seconds = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
w = shm.Writer(name, shm.TRADE, 1 << 20)
rec = np.zeros(1, shm.TRADE)[0]
rec["price"], rec["qty"], rec["side"], rec["exchange"] = 100.0, 1.0, 1, 1
print("ready", flush=True)
sys.stdin.readline()
t0 = time.perf_counter_ns()
n, total = 0, int(rate * seconds)
period = 1e9 / rate
while n < total:
    due = t0 + int(n * period)
    while time.perf_counter_ns() < due:
        pass
    rec["ts_exchange_ns"] = time.time_ns()
    rec["ts_mono_ns"] = due        # the intended send time: no coordinated omission
    rec["symbol_id"] = n & 3
    w.commit(rec)
    n += 1
time.sleep(0.5)
w.close()
"""


EMIT = Emitter(suite="detectors")

def _emit(case: str, metric: str, value: float, unit: str, **extra: object) -> None:
    EMIT(case, metric, round(value, 3), unit, **extra)


def _throughput_recording(settings: DetectorsConfig) -> float:
    from workers.exchanges.replay import replay

    _, sink = replay("binance", RECORDING)
    chunks = [(s, c) for s, c in sink.chunks if s in ("trades", "book")]
    total = sum(len(c) for _, c in chunks)
    events = EventBuffer(1 << 16)
    det = ExchangeDetectors("binance", ["BTCUSDT"], settings, events)
    t0 = time.perf_counter()
    for stream, chunk in chunks:
        det.run(stream, chunk, 0)
        events.take()
    return total / (time.perf_counter() - t0)


def _throughput_flood(settings: DetectorsConfig, n: int = 1_000_000) -> float:
    rng = np.random.default_rng(1)
    recs = np.zeros(n, shm.TRADE)
    recs["ts_exchange_ns"] = 1_700_000_000 * 10**9 + np.cumsum(rng.integers(0, 200_000, n))
    recs["price"] = 100 * np.exp(np.cumsum(rng.normal(0, 1e-5, n)))
    recs["qty"] = rng.exponential(1.0, n)
    recs["side"] = rng.choice([-1, 1], n)
    recs["symbol_id"] = rng.integers(0, 4, n)
    events = EventBuffer(1 << 16)
    det = ExchangeDetectors("binance", ["A", "B", "C", "D"], settings, events)
    t0 = time.perf_counter()
    for i in range(0, n, 512):
        det.run("trades", recs[i:i + 512], 0)
        events.take()
    return n / (time.perf_counter() - t0)


def _latency_run(rate: float, seconds: float) -> np.ndarray:
    instance = "bench" + uuid.uuid4().hex[:6]
    trades = shm.segment_name(instance, "binance", "trades")
    events_name = shm.segment_name(instance, "detectors", "events")
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "config.toml"
        cfg.write_text(f'[engine]\ninstance = "{instance}"\n[exchanges.binance]\nenabled = true\n'
                       'symbols = [{symbol = "A"}, {symbol = "B"}, {symbol = "C"}, '
                       '{symbol = "D"}]\n[detectors]\nenabled = true\nwhale_min_usd = 1.0\n'
                       'whale_burst_usd = 0.0\nevents_ring_capacity = 1048576\n')
        writer = subprocess.Popen([sys.executable, "-c", WRITER, trades, str(rate), str(seconds)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=REPO)
        detect = None
        try:
            assert writer.stdout is not None and writer.stdin is not None
            writer.stdout.readline()  # the ring exists
            pin(writer.pid, 0)
            detect = subprocess.Popen([sys.executable, "-m", "engine", "detect", "-c", str(cfg)],
                                      stderr=subprocess.PIPE, cwd=REPO)
            pin(detect.pid, 1)
            deadline = time.monotonic() + 60
            while not Path(shm.SHM_DIR, events_name).exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(1.0)  # the detector is in its loop
            writer.stdin.write(b"go\n")
            writer.stdin.flush()
            writer.wait(timeout=seconds + 60)
            time.sleep(0.5)
            reader = shm.Reader(events_name, start="oldest", max_batch=1 << 16)
            got = []
            while len(batch := reader.poll()):
                got.append(batch)
            reader.close()
        finally:
            for proc in (writer, detect):
                if proc is not None and proc.poll() is None:
                    proc.terminate()
                    proc.wait(timeout=20)
            for info in shm.list_segments(instance):
                try:
                    os.unlink(os.path.join(shm.SHM_DIR, info.name))
                except FileNotFoundError:
                    pass
    recs = np.concatenate(got) if got else np.zeros(0, shm.EVENT)
    recs = recs[recs["ts_mono_ns"] >= recs["ts_mono_ns"].min() + 500_000_000] if len(recs) \
        else recs  # warm-up discarded
    return (recs["ts_commit_ns"] - recs["trigger_commit_ns"]) / 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rate", type=float, default=20_000.0, help="trades/s (latency)")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--quick", action="store_true", help="one short run (CI smoke test)")
    parser.add_argument("--out", help="also write the JSON lines to this file")
    parser.add_argument("--plot", help="draw latency and throughput into this PNG")
    args = parser.parse_args(argv)
    flood = 1_000_000
    if args.quick:
        args.runs, args.seconds, args.rate, flood = 1, 1.5, 2_000.0, 50_000
    settings = DetectorsConfig(whale_min_usd=1_000_000.0)
    warm_kernels(settings)
    cases = (("recording", _throughput_recording),
             ("flood", lambda cfg: _throughput_flood(cfg, flood)))
    for case, fn in cases:
        runs = [fn(settings) for _ in range(args.runs)]
        _emit(case, "throughput", statistics.median(runs), "records/s",
              runs=[round(r) for r in runs])
    lat_runs = [_latency_run(args.rate, args.seconds) for _ in range(args.runs)]
    p99s = [float(np.percentile(r, 99)) for r in lat_runs]
    median = lat_runs[int(np.argsort(p99s)[len(p99s) // 2])]
    case = f"latency@{int(args.rate)}"
    for p in (50, 99, 99.9):
        _emit(case, f"commit_to_event_p{p:g}", float(np.percentile(median, p)), "us",
              runs=[round(float(np.percentile(r, p)), 1) for r in lat_runs])
    _emit(case, "events", len(median), "count")
    EMIT.finish(args.out, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
