"""How fast the venue pushes recorded frames in flood mode, on one core.

Run: ``.venv/bin/python benchmarks/venue_bench.py [--runs N] [--quick]``. The venue runs in its
own process pinned to CPU 0 (``microstream venue --flood``); a picows client pinned to CPU 1
subscribes to every topic of the Binance USD-M recording (93,953 frames) and counts frames until
the last one. Prints JSON lines ``{"bench": "venue", "case", "metric", "value", "unit", ...}``:
frames/s and MB/s per run's median, and the venue's CPU seconds per million frames.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

import psutil
from picows import WSFrame, WSListener, WSTransport, ws_connect

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import Emitter

from workers.venue import load_recording, start_venue

RECORDING = Path(__file__).resolve().parents[1] / (
    "tests/data/recorded/binance/hftbacktest_usdm_btcusdt_20240808.frames.jsonl.gz")


class _Counter(WSListener):
    def __init__(self) -> None:
        self.frames = 0
        self.bytes = 0
        self.first = self.last = 0

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        self.last = time.perf_counter_ns()
        if not self.frames:
            self.first = self.last
        self.frames += 1
        self.bytes += len(frame.get_payload_as_memoryview())


async def _one_run(url: str, total: int) -> tuple[int, int, int]:
    transport, client = await ws_connect(_Counter, url)
    deadline = time.monotonic() + 120
    while client.frames < total and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    transport.disconnect()
    return client.frames, client.bytes, client.last - client.first


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="one run (CI smoke test)")
    parser.add_argument("--out", help="also write the JSON lines to this file")
    parser.add_argument("--plot", help="draw the throughput into this PNG")
    args = parser.parse_args(argv)
    emit = Emitter(suite="venue")
    runs = 1 if args.quick else args.runs
    rec = load_recording(RECORDING, "binance")
    topics = sorted(set(rec.topics))
    cpus = sorted(os.sched_getaffinity(0))
    rates, mbs, cpu_per_m = [], [], []
    with start_venue("binance", [str(RECORDING)], flood=True) as venue:
        ps = psutil.Process(venue.proc.pid)
        if len(cpus) >= 2:
            ps.cpu_affinity([cpus[0]])
            os.sched_setaffinity(0, {cpus[1]})
        url = f"{venue.ws_url}/public/stream?streams={'/'.join(topics)}"
        for i in range(runs):
            cpu0 = sum(ps.cpu_times()[:2])
            frames, nbytes, span_ns = asyncio.run(_one_run(url, len(rec.frames)))
            cpu = sum(ps.cpu_times()[:2]) - cpu0
            if frames != len(rec.frames):
                print(f"run {i}: got {frames} of {len(rec.frames)} frames", file=sys.stderr)
                return 1
            rates.append(frames / (span_ns / 1e9))
            mbs.append(nbytes / (span_ns / 1e9) / 1e6)
            cpu_per_m.append(cpu / frames * 1e6)
    os.sched_setaffinity(0, set(cpus))
    for metric, values, unit in (("throughput", rates, "frames/s"), ("bandwidth", mbs, "MB/s"),
                                 ("venue_cpu", cpu_per_m, "cpu_s/M_frames")):
        emit("flood_binance_usdm", metric, round(statistics.median(values), 1), unit,
             min=round(min(values), 1), max=round(max(values), 1), runs=runs,
             frames=len(rec.frames))
    emit.finish(args.out, args.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
