"""Publisher throughput into Redis and ring commit → Redis reply latency, with a redis-py
transport measured side by side.

Run: ``.venv/bin/python benchmarks/publisher_bench.py [--runs N] [--rates 1000,5000,20000]``.

A private ``redis-server`` (Unix socket) is started for the run and pinned to the first
CPU; the publisher runs in this process, pinned to the second.

* ``throughput``: a trades ring holding ``--messages`` trades is drained into Redis:
  ``resp`` is :class:`workers.publisher.publisher.Publisher` (pre-encoded RESP, hiredis,
  every reply matched) with PUBLISH only and with PUBLISH + SET latest (2 commands a message);
  ``redis-py`` reads the same ring, encodes the same payloads and sends them with a redis-py
  pipeline (``transaction=False``, ``batch_max`` commands per ``execute``). Messages/s
  (confirmed), median of ``--runs``.
* ``latency@R``: a writer process (first CPU, beside Redis) commits R trades/s, open loop,
  paced by sleeping (so bursts happen, as on an exchange feed); the publisher drains them
  with PUBLISH + SET. Ring commit → the message's last Redis reply, from the publisher's own
  samples (one clock); the first 0.5 s is discarded. Counts are messages (records that
  arrive together are one message; its latency is the oldest record's). p50/p99/p99.9 of
  the median run (by p99), and every run's p99.

Prints JSON lines ``{"bench": "publisher", "suite", "case", "metric", "value", "unit", ...}``.
"""

from __future__ import annotations

import argparse
import gc
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

import redis  # noqa: E402
from report import Emitter, pin  # noqa: E402

import shm  # noqa: E402
from engine.config import PublisherConfig  # noqa: E402
from engine.embedded_redis import EmbeddedRedis  # noqa: E402
from workers.publisher.payloads import PayloadEncoder  # noqa: E402
from workers.publisher.publisher import Publisher  # noqa: E402

NAMES = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"]

WRITER = """
import sys, time
import numpy as np
import shm
name, rate, seconds = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
w = shm.Writer(name, shm.TRADE, 1 << 20)
rec = np.zeros(1, shm.TRADE)[0]
rec["price"], rec["qty"], rec["side"], rec["exchange"], rec["market"] = 100.0, 1.0, 1, 1, 2
print("ready", flush=True)
sys.stdin.readline()
t0 = time.perf_counter_ns()
n, total = 0, int(rate * seconds)
period = 1e9 / rate
burst_ns = int(sys.argv[4]) * 1000
while n < total:
    now = time.perf_counter_ns()
    while n < total and t0 + int(n * period) <= now:   # everything due, open loop
        rec["ts_exchange_ns"] = time.time_ns()
        rec["ts_mono_ns"] = t0 + int(n * period)
        rec["symbol_id"] = n & 3
        rec["trade_id"] = n
        w.commit(rec)
        n += 1
    # beside Redis on one CPU: sleep, never spin; 0: until the next record is due
    ahead = t0 + int(n * period) - time.perf_counter_ns()
    time.sleep(max(ahead, burst_ns) / 1e9)
time.sleep(1.0)
w.close()
"""


EMIT = Emitter(suite="publisher")

def _emit(case: str, metric: str, value: float, unit: str, **extra: object) -> None:
    EMIT(case, metric, round(value, 3), unit, **extra)


def _cleanup(instance: str) -> None:
    for info in shm.list_segments(instance):
        try:
            os.unlink(os.path.join(shm.SHM_DIR, info.name))
        except FileNotFoundError:
            pass


def _filled_ring(instance: str, n: int) -> shm.Writer:
    w = shm.Writer(shm.segment_name(instance, "binance", "trades"), shm.TRADE,
                   1 << max(16, (n - 1).bit_length()))
    recs = np.zeros(n, shm.TRADE)
    recs["price"], recs["qty"], recs["side"], recs["exchange"], recs["market"] = 100, 1, 1, 1, 2
    recs["symbol_id"] = np.arange(n) & 3
    recs["trade_id"] = np.arange(n)
    recs["ts_exchange_ns"] = time.time_ns()
    for i in range(0, n, 4096):
        w.commit_batch(recs[i:i + 4096])
    return w


def _throughput_resp(server: EmbeddedRedis, n: int, latest: bool) -> float:
    instance = "pb" + uuid.uuid4().hex[:6]
    w = _filled_ring(instance, n)
    cfg = PublisherConfig(redis_url=server.url, streams=("trades",),
                          latest=("trade",) if latest else (), high_queue=1 << 20,
                          breaker_rtt_p99_ms=1e6, breaker_queue_age_ms=1e6)
    pub = Publisher(instance, {"binance": NAMES}, cfg, start="oldest")
    try:
        while not pub.link.connected:
            pub.control(pub.clock())
        t0 = time.perf_counter()
        while pub.confirmed.sum() < n:
            pub.step(0.0)
        elapsed = time.perf_counter() - t0
        assert not pub.queues.drops.any(), pub.queues.drops
    finally:
        pub.close()
        w.close()
        _cleanup(instance)
    return n / elapsed


def _throughput_redis_py(server: EmbeddedRedis, n: int, batch: int = 512) -> float:
    instance = "pb" + uuid.uuid4().hex[:6]
    w = _filled_ring(instance, n)
    reader = shm.Reader.attach("binance", "trades", instance, start="oldest")
    encoder = PayloadEncoder("binance", NAMES)
    client = redis.Redis(unix_socket_path=str(server.socket_path))
    channels = {sid: f"binance:{NAMES[sid].lower()}:trade" for sid in range(4)}
    try:
        t0 = time.perf_counter()
        done = 0
        while done < n:
            records = reader.poll()
            pipe = client.pipeline(transaction=False)
            queued = 0
            for _, sid, payload, _ in encoder.records("trades", records):
                pipe.publish(channels[sid], payload)
                queued += 1
                if queued == batch:
                    pipe.execute()
                    pipe, queued = client.pipeline(transaction=False), 0
            if queued:
                pipe.execute()
            done += len(records)
        elapsed = time.perf_counter() - t0
    finally:
        reader.close()
        client.close()
        w.close()
        _cleanup(instance)
    return n / elapsed


def _latency_run(server: EmbeddedRedis, rate: float, seconds: float,
                 burst_us: int) -> np.ndarray:
    instance = "pb" + uuid.uuid4().hex[:6]
    name = shm.segment_name(instance, "binance", "trades")
    writer = subprocess.Popen([sys.executable, "-c", WRITER, name, str(rate), str(seconds),
                               str(burst_us)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=REPO)
    pub = None
    try:
        assert writer.stdout is not None and writer.stdin is not None
        writer.stdout.readline()
        pin(writer.pid, 0)
        cfg = PublisherConfig(redis_url=server.url, streams=("trades",), latest=("trade",))
        pub = Publisher(instance, {"binance": NAMES}, cfg)
        gc.collect()
        gc.freeze()   # as run_publisher does
        for _ in range(200):
            pub.step(0.001)
        writer.stdin.write(b"go\n")
        writer.stdin.flush()
        warm = time.monotonic() + 0.5
        end = time.monotonic() + seconds + 1.5
        skip = -1
        while time.monotonic() < end:
            pub.step(cfg.idle_wait_us / 1e6)
            if skip < 0 and time.monotonic() >= warm:
                skip = pub.latency_count   # warm-up discarded
        writer.wait(timeout=30)
        after_warmup = pub.latency_count - max(skip, 0)
        recorded = pub.latencies()   # oldest first
        lat = recorded[max(0, len(recorded) - after_warmup):]
        assert not pub.queues.drops.any(), pub.queues.drops
    finally:
        if pub is not None:
            pub.close()
        if writer.poll() is None:
            writer.terminate()
            writer.wait(timeout=20)
        _cleanup(instance)
    return lat / 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--rates", default="1000,5000,20000", help="trades/s, comma-separated")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--burst-us", type=int, default=0,
                        help="writer: sleep at least this long between commits (bursts)")
    parser.add_argument("--quick", action="store_true", help="one short run (CI smoke test)")
    parser.add_argument("--out", help="also write the JSON lines to this file")
    parser.add_argument("--plot", help="draw latency and throughput into this PNG")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.messages, args.rates, args.seconds = 1, 20_000, "2000", 1.0
    pin(0, 1)   # this process (the publisher) on the second CPU
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp) / "redis") as server:
        assert server.process is not None
        pin(server.process.pid, 0)
        cases = (("resp_publish", lambda: _throughput_resp(server, args.messages, False)),
                 ("resp_publish_set", lambda: _throughput_resp(server, args.messages, True)),
                 ("redis_py_publish", lambda: _throughput_redis_py(server, args.messages)))
        results = {}
        for case, fn in cases:
            runs = [fn() for _ in range(args.runs)]
            results[case] = statistics.median(runs)
            _emit(case, "throughput", results[case], "msg/s", runs=[round(r) for r in runs])
        _emit("resp_vs_redis_py", "throughput_ratio",
              results["resp_publish"] / results["redis_py_publish"], "x")
        for rate in (float(r) for r in args.rates.split(",")):
            lat_runs = [_latency_run(server, rate, args.seconds, args.burst_us)
                        for _ in range(args.runs)]
            p99s = [float(np.percentile(r, 99)) for r in lat_runs]
            median = lat_runs[int(np.argsort(p99s)[len(p99s) // 2])]
            case = f"latency@{int(rate)}" + (f"_burst{args.burst_us}us" if args.burst_us else "")
            for p in (50, 99, 99.9):
                _emit(case, f"commit_to_reply_p{p:g}", float(np.percentile(median, p)), "us",
                      runs=[round(float(np.percentile(r, p)), 1) for r in lat_runs])
            _emit(case, "messages", len(median), "count")
    EMIT.finish(args.out, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
