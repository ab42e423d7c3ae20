"""Compare: the same venue load, in the same run, through this engine and through the naive
asyncio pipeline it replaces (``naive_pipeline.py``), with the ratios.

Run: ``.venv/bin/python benchmarks/compare_bench.py [--rates 1000,5000,20000] [--seconds S]
[--market recorded] [--runs N] [--no-flood] [--quick] [--out FILE] [--plot FILE.png]`` (or
``microstream bench compare ...``).

The job is the same for both pipelines: three exchanges' venues (the synthetic market, two
symbols each; or with ``--market recorded`` the real recordings sped up to the rate, every
symbol and stream in them, case names prefixed ``recorded:``),
trades, Binance's BBO and every L2 book message under each exchange's sequence rules (Binance
REST bridge and ``pu`` chain, Bybit ``u`` chain, OKX ``prevSeqId`` chain and CRC32 checksum),
published to Redis as ``{exchange}:{symbol}:trade|bbo|orderbook`` (top 20 levels). The engine
runs as ``microstream run`` with its detectors off and only ``PUBLISH`` surfaces (no latest
keys, no streams); the naive pipeline is one asyncio process (``websockets``, ``json.loads``,
dict books, one redis-py ``PUBLISH`` per message). Each gets a fresh Redis and fresh venues
with the same seed, one after the other (never both at once: they would share two vCPUs).

Cases, per pipeline (``engine@R``, ``naive@R``) and their ratios (``ratio@R``):

* fixed rates ``R`` (frames/s sent by the three venues in all, shared clocks): every trade's
  latency from its *intended* send time to a Redis subscriber's receipt (a pipeline that falls
  behind shows its backlog) and from frame receipt (the payload's ``ts_recv_ns``), and
  ``trades_delivered``, the fraction of the trades due in the window that arrived;
* ``throughput``: the highest fixed rate each pipeline *kept up* with (≥ 99 % of the trades
  delivered, intended → subscriber p99 ≤ 100 ms) and the ratio ``throughput_x``; when the
  engine kept up at the highest rate tried, that is a floor (``engine_at_highest_rate``);
* ``flood``: the venues send as fast as each pipeline reads: frames/s the pipeline read, by
  its own count (``ingest_x``), and messages/s delivered to the subscriber (``delivered_x``).
  The engine's feeds never slow down for the publisher, which sheds what Redis cannot take
  in time (the breaker, by class), so under flood its ingest and delivery part ways; the
  naive pipeline reads only as fast as it publishes.

Cost: CPU µs per frame read and per message delivered to the subscriber, over the
pipeline's processes and Redis (not the venues, which are the load), and memory (PSS summed
over the processes). ``frame_to_subscriber`` starts at each
pipeline's own receipt stamp: the engine's at ``on_ws_frame`` entry, the naive pipeline's when
a frame leaves the ``websockets`` queue (its wait in that queue is left out): compare the two
pipelines on intended → subscriber. ``p99_div`` = naive ÷ engine intended → subscriber p99,
``cpu_div`` = naive ÷ engine CPU per message delivered.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import harness  # noqa: E402
from e2e_bench import GRACE_S, cost, subscriber_latency  # noqa: E402
from report import nan_median, report_runs  # noqa: E402

from engine.embedded_redis import EmbeddedRedis  # noqa: E402

WARMUP_S = 2.0
FLOOD_RATE = 30_000.0   # the flood timeline's density (events per timeline second)
PIPELINES = ("engine", "naive")
KEPT_UP_P99_US = 100_000.0   # a pipeline whose p99 exceeds this at a fixed rate fell behind
_ctx = mp.get_context("spawn")
Metrics = dict[str, tuple[float, str]]


class Running(NamedTuple):
    """A pipeline under test: its processes, and the frames it has read so far, by its own
    count. Not the venues' count of frames sent: with a reader slower than the venue that
    runs ahead by whatever the socket buffers hold (up to 32 MiB on this machine, seconds of
    the naive pipeline's work), and a short window could see none sent at all. The engine's
    count is its feed workers' status rows, refreshed every 100 ms: ±0.1 s on a window's
    ends, against the naive pipeline's live count."""
    pids: dict[str, int]
    frames: Callable[[], int]


def _naive_child(venues: dict[str, tuple[str, str]], symbols: dict[str, list[str]],
                 options: dict[str, dict[str, Any]], redis_url: str, conn: Any) -> None:
    """Child: the naive pipeline until the parent says "stop" (once its measurement is
    over: a fixed duration could end before the parent's window does); answers "frames"
    with the frames read so far."""
    import asyncio
    import threading

    from naive_pipeline import run

    async def main() -> dict[str, Any]:
        loop, stop = asyncio.get_running_loop(), asyncio.Event()

        feeds: list[Any] = []

        def serve_parent() -> None:
            # The counters are plain ints: reading them from here is safe under the GIL.
            while conn.recv() == "frames":
                send(sum(f.stats["frames"] for f in feeds))
            loop.call_soon_threadsafe(stop.set)

        threading.Thread(target=serve_parent, daemon=True).start()
        return await run(venues, symbols, redis_url, 3600.0, ready=lambda: send("ready"),
                         stop=stop, options=options, feeds_out=feeds)

    sending = threading.Lock()   # this thread's and the parent-serving thread's sends

    def send(obj: Any) -> None:
        with sending:
            conn.send(obj)

    send(asyncio.run(main()))


@contextmanager
def _naive(load: harness.Load, redis: EmbeddedRedis) -> Iterator[Running]:
    """The naive pipeline in its own process, yielded once it is subscribed everywhere;
    stopped when the block ends."""
    parent, child = _ctx.Pipe()
    proc = _ctx.Process(target=_naive_child, daemon=True, args=(
        load.endpoints(), load.symbols, load.options, redis.url, child))
    proc.start()
    try:
        if not parent.poll(60) or parent.recv() != "ready":
            raise RuntimeError("naive pipeline did not subscribe")

        def frames() -> int:
            parent.send("frames")
            if not parent.poll(10):
                raise RuntimeError("naive pipeline did not report its frames")
            answer = parent.recv()
            if not isinstance(answer, int):   # it ended early: its counters came instead
                raise RuntimeError(f"naive pipeline ended during the run: {answer!r:.300}")
            return answer

        yield Running({"naive": proc.pid}, frames)
        parent.send("stop")
        if not parent.poll(60):
            raise RuntimeError("naive pipeline did not stop")
        counters = parent.recv()
        if counters.get("malformed") or counters.get("checksum_failures"):
            print(f"compare_bench: naive pipeline counters {counters}", file=sys.stderr)
    finally:
        proc.join(10)
        if proc.is_alive():
            proc.kill()


@contextmanager
def _engine(load: harness.Load, redis: EmbeddedRedis, tmp: Path,
            overrides: dict[str, dict[str, Any]] | None) -> Iterator[Running]:
    instance = "bench" + uuid.uuid4().hex[:6]
    cfg = tmp / "config.toml"
    harness.engine_config(cfg, instance, load, redis.url, detectors=False,
                  streams=("trades", "bbo", "book"),
                  publisher={"streams": ["trades", "bbo", "book"], "latest": [], "xadd": []},
                  overrides=overrides)
    with harness.EngineRun(cfg, instance, tmp / "run.log") as engine:
        yield Running(engine.pids(), engine.frames_received)


def one_run(pipeline: str, rate: float | None, seconds: float,
            overrides: dict[str, dict[str, Any]] | None = None, recorded: bool = False
            ) -> Metrics:
    """``pipeline`` on fresh venues (``rate`` frames/s, or flood when None; the synthetic
    market, or the real recordings with ``recorded``) and a fresh Redis."""
    flood = rate is None
    timeline = 10.0 if flood else WARMUP_S + seconds + 30.0
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp) / "r") as redis, \
            harness.Load(rate or FLOOD_RATE, timeline, flood=flood, recorded=recorded) as load:
        start = (_engine(load, redis, Path(tmp), overrides) if pipeline == "engine"
                 else _naive(load, redis))
        with start as running:
            time.sleep(WARMUP_S)
            sub = harness.Subscriber(redis.socket_path, seconds, decode_trades=not flood)
            now = time.perf_counter_ns()
            window = (now, now + int((seconds - GRACE_S) * 1e9))
            sampler = harness.Sampler(running.pids | {"redis": redis.process.pid})
            read0 = running.frames()
            sampler.start()
            time.sleep(seconds)
            sampler.stop()
            frames = running.frames() - read0
            counts, trades = sub.result()
        out: Metrics = {
            "frames_per_s": (frames / seconds, "1/s"),
            "redis_messages_per_s": (sum(counts.values()) / seconds, "1/s"),
            "trades_to_redis_per_s": (counts.get("trade", 0) / seconds, "1/s")}
        if not flood:
            out.update(subscriber_latency(load, trades, window))
        used = cost(sampler, frames)
        out["cpu_us_per_frame"] = used.pop("cpu_us_per_message_all")
        # per message delivered to the subscriber: a pipeline that falls behind is offered
        # frames it never handles, so per frame offered would flatter it
        delivered = sum(counts.values())
        out["cpu_us_per_message"] = (out["cpu_us_per_frame"][0] * frames / max(delivered, 1),
                                     "us")
        out["pss_mb_total"] = (sum(v for k, (v, _) in used.items() if k.startswith("pss")),
                               "MiB")
        return out


def _median(runs: list[Metrics], metric: str) -> float:
    return nan_median([run[metric][0] for run in runs if metric in run])


def ratios(engine: list[Metrics], naive: list[Metrics], flood: bool) -> Metrics:
    """engine vs naive from the median runs: throughput ×, p99 ÷, CPU per frame ÷."""
    def div(a: float, b: float) -> float:
        return a / b if b else float("nan")

    out: Metrics = {"cpu_div": (div(_median(naive, "cpu_us_per_message"),
                                    _median(engine, "cpu_us_per_message")), "x")}
    if flood:
        out["ingest_x"] = (div(_median(engine, "frames_per_s"),
                               _median(naive, "frames_per_s")), "x")
        out["delivered_x"] = (div(_median(engine, "redis_messages_per_s"),
                                  _median(naive, "redis_messages_per_s")), "x")
    else:
        for q in ("p50", "p99", "p99_9"):
            out[f"{q}_div"] = (div(_median(naive, f"intended_to_subscriber_{q}"),
                                   _median(engine, f"intended_to_subscriber_{q}")), "x")
    return out


def kept_up(runs: list[Metrics]) -> bool:
    """The median run delivered ≥ 99 % of the trades due, with intended → subscriber p99
    under :data:`KEPT_UP_P99_US` (a pipeline falling behind fails one or the other)."""
    return (_median(runs, "trades_delivered") >= 0.99
            and _median(runs, "intended_to_subscriber_p99") <= KEPT_UP_P99_US)


def sustained(points: dict[float, dict[str, list[Metrics]]]) -> Metrics:
    """Throughput as the highest fixed rate each pipeline kept up with, and the ratio. When
    the engine kept up at the highest rate tried, its figure (and the ratio) is a floor."""
    out: Metrics = {}
    best = {p: max((r for r, res in points.items() if kept_up(res[p])), default=0.0)
            for p in PIPELINES}
    for pipeline in PIPELINES:
        out[f"sustained_frames_per_s[{pipeline}]"] = (best[pipeline], "1/s")
    out["throughput_x"] = (best["engine"] / best["naive"] if best["naive"] else float("nan"),
                           "x")
    out["engine_at_highest_rate"] = (float(best["engine"] == max(points, default=0.0)), "bool")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    harness.load_arguments(parser, "300/s and flood, 2 s, 1 run")
    parser.add_argument("--no-flood", action="store_true", help="skip the flood case")
    args = parser.parse_args(argv)
    rate_list, seconds, runs, overrides, emit = harness.begin(parser, args, "compare", 300.0)
    rates: list[float | None] = [*rate_list, *([] if args.no_flood else [None])]
    recorded = args.market == "recorded"
    prefix = "recorded:" if recorded else ""   # case names say which market ran
    points: dict[float, dict[str, list[Metrics]]] = {}
    try:
        for rate in rates:
            point = prefix + ("flood" if rate is None else str(int(rate)))
            results: dict[str, list[Metrics]] = {p: [] for p in PIPELINES}
            for i in range(runs):
                for pipeline in PIPELINES:   # alternate, so drift hits both alike
                    print(f"compare_bench: {pipeline}@{point} run {i + 1}/{runs}",
                          file=sys.stderr, flush=True)
                    results[pipeline].append(one_run(pipeline, rate, seconds, overrides,
                                                     recorded))
            for pipeline in PIPELINES:
                report_runs(emit, f"{pipeline}@{point}", results[pipeline], rate=rate,
                            seconds=seconds, market=args.market)
            report_runs(emit, f"ratio@{point}",
                        [ratios(results["engine"], results["naive"], rate is None)], rate=rate)
            if rate is not None:
                points[rate] = results
        if points:
            report_runs(emit, prefix + "throughput", [sustained(points)],
                        kept_up_p99_us=KEPT_UP_P99_US, market=args.market)
    finally:
        emit.finish(args.out, args.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
