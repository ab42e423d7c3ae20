"""The ``microstream`` command (argparse). Data goes to stdout, diagnostics to stderr.

Exit codes: 0 ok, 1 runtime error, 2 usage or configuration error, 3 not running. The service
commands (``run``, ``status``, ``tail``, ...) live in :mod:`engine.commands`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

import msgspec

import shm

from . import __version__, commands
from .commands import BENCH_SUITES, load_for_run
from .config import Config, ConfigError, load_config

__all__ = ["main"]


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="microstream", description="Low-latency crypto market-data engine.")
    parser.add_argument("--version", action="version", version=f"microstream {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the engine: feeds, detectors and publisher, "
                                     "supervised (--simulate: against local venues)")
    run.add_argument("-c", "--config", default="config.toml", metavar="FILE",
                     help="configuration file (default: ./config.toml; built-in defaults if "
                          "that is absent)")
    run.add_argument("--instance", help="bus instance name (overrides [engine] instance)")
    run.add_argument("--duration", type=float, metavar="S",
                     help="stop cleanly after S seconds (default: until SIGTERM/Ctrl-C)")
    run.add_argument("--simulate", action="store_true",
                     help="local synthetic venues for the exchanges of [simulate], and an "
                          "embedded Redis unless the configured one answers")
    run.add_argument("--http-port", type=int, metavar="P",
                     help="health/metrics port (overrides [service] http_port; 0: any free)")

    check = sub.add_parser("check-config", help="validate a configuration file")
    check.add_argument("-c", "--config", default="config.toml", metavar="FILE")
    check.add_argument("--json", action="store_true", help="JSON output")

    status = sub.add_parser("status", help="the running engine, from shared memory "
                                           "(exit 3 when not running)")
    tail = sub.add_parser("tail", help="print a ring's records as JSON lines (a live local "
                                       "consumer)")
    tail.add_argument("stream", metavar="STREAM",
                      help="OWNER.STREAM, e.g. binance.trades, okx.book, detectors.events")
    tail.add_argument("--symbol", metavar="S", help="only this exchange-native symbol")
    tail.add_argument("-f", "--follow", action="store_true", help="keep printing new records")
    tail.add_argument("--last", type=int, default=10, metavar="N",
                      help="start with the last N records in the ring (default: 10)")
    for p in (status, tail):
        p.add_argument("-c", "--config", default="config.toml", metavar="FILE",
                       help="where the instance name comes from when --instance is absent")
        p.add_argument("--instance", help="bus instance name")
    status.add_argument("--json", action="store_true", help="JSON output")

    record = sub.add_parser("record", help="capture an exchange's raw frames with receive "
                                           "times (gz, rotating), replayable offline")
    record.add_argument("exchange", choices=("binance", "bybit", "okx"))
    record.add_argument("--out", required=True, metavar="DIR")
    record.add_argument("-c", "--config", default="config.toml", metavar="FILE")
    record.add_argument("--instance", help="bus instance name (overrides [engine] instance)")
    record.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    record.add_argument("--rotate-mb", type=float, default=256.0, metavar="MB",
                        help="start a new file after this many uncompressed MiB")
    record.add_argument("--rotate-s", type=float, default=3600.0, metavar="S",
                        help="start a new file after this many seconds")

    bench = sub.add_parser("bench", help="run a benchmark suite (JSON lines on stdout)")
    bench.add_argument("suite", choices=BENCH_SUITES)
    bench.add_argument("args", nargs=argparse.REMAINDER,
                       help="passed to benchmarks/<suite>_bench.py (e.g. --quick)")

    venue = sub.add_parser("venue", help="run a local exchange venue replaying recordings")
    venue.add_argument("--exchange", required=True, choices=("binance", "bybit", "okx"))
    source = venue.add_mutually_exclusive_group(required=True)
    source.add_argument("--replay", nargs="+", metavar="FILE",
                        help="recordings (*.frames.jsonl[.gz] with sidecars, or capture .gz)")
    source.add_argument("--synthetic", action="store_true",
                        help="a seeded synthetic market (see --symbols, --rate, --seconds)")
    venue.add_argument("--symbols", type=int, default=1, help="synthetic: symbols (1..10)")
    venue.add_argument("--rate", type=float, default=1000.0, metavar="HZ",
                       help="synthetic: market events per second over all symbols")
    venue.add_argument("--seconds", type=float, default=60.0,
                       help="synthetic: length of the generated timeline")
    venue.add_argument("--seed", type=int, default=7, help="synthetic: random seed")
    venue.add_argument("--scenarios", default="", metavar="LIST",
                       help="synthetic: scripted manipulations, e.g. 'spoof,iceberg'")
    pace = venue.add_mutually_exclusive_group()
    pace.add_argument("--speed", type=float, default=1.0, metavar="X",
                      help="replay X times faster than recorded (default: 1)")
    pace.add_argument("--flood", action="store_true", help="as fast as the socket takes frames")
    venue.add_argument("--loop", action="store_true",
                       help="restart the timeline when it ends (books re-snapshot), for soak runs")
    venue.add_argument("--shared-clock", action="store_true",
                       help="one timeline for all connections, running from the first "
                            "subscription: a later connection joins at 'now', as on a live "
                            "exchange (paced only, not with --flood)")
    venue.add_argument("--host", default="127.0.0.1")
    venue.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    venue.add_argument("--rest-weight-limit", type=int, default=2400, metavar="W",
                       help="REST request weight allowed per minute before 429 (default: 2400)")
    venue.add_argument("--faults", default="", metavar="SPEC",
                       help="inject faults, e.g. 'drop=0.01,corrupt@120,stall=0.001:2s,seed=7' "
                            "(see workers/venue/faults.py); each is logged on stderr")

    feed = sub.add_parser("feed", help="run one exchange's feed worker in the foreground")
    feed.add_argument("exchange", choices=("binance", "bybit", "okx"))
    feed.add_argument("-c", "--config", default="config.toml", metavar="FILE")
    feed.add_argument("--instance", help="bus instance name (overrides [engine] instance)")
    feed.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")

    publish = sub.add_parser("publish", help="run the Redis publisher in the foreground")
    publish.add_argument("-c", "--config", default="config.toml", metavar="FILE")
    publish.add_argument("--instance", help="bus instance name (overrides [engine] instance)")
    publish.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    detect = sub.add_parser("detect", help="run the detector process in the foreground")
    detect.add_argument("-c", "--config", default="config.toml", metavar="FILE")
    detect.add_argument("--instance", help="bus instance name (overrides [engine] instance)")
    detect.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")

    replay = sub.add_parser("replay", help="feed a capture through the worker's decode → "
                                           "book → record path offline; JSON lines out")
    replay.add_argument("--exchange", required=True, choices=("binance", "bybit", "okx"))
    replay.add_argument("frames", metavar="FRAMES_FILE",
                        help="*.frames.jsonl[.gz] (with sidecars) or an engine capture .gz")
    replay.add_argument("--rest-snapshot", action="append", default=[], metavar="FILE",
                        help="Binance REST depth body (*.rest_depth_<SYMBOL>.json); repeatable")
    replay.add_argument("--market", choices=("spot", "linear", "inverse", "option"),
                        help="market of the capture's symbols when the frames do not tell")
    replay.add_argument("--book-depth", type=int, default=20, metavar="N",
                        help="levels per side in book lines (default: 20)")
    replay.add_argument("--out", required=True, metavar="OUT.jsonl")
    replay.add_argument("--detect", action="store_true",
                        help="also run the detector kernels: event and analytics lines")
    replay.add_argument("-c", "--config", metavar="FILE",
                        help="with --detect: thresholds from this file's [detectors]")

    bus = sub.add_parser("shm", help="inspect or clean the shared-memory bus")
    bus_sub = bus.add_subparsers(dest="shm_command", required=True)
    ls = bus_sub.add_parser("ls", help="list segments with writer liveness")
    demo = bus_sub.add_parser("demo", help="the bus between two processes: synthetic trades, "
                                           "commit → deliver latency once a second")
    demo.add_argument("-c", "--config", default="config.toml", metavar="FILE",
                      help="[demo] settings (default: ./config.toml, built-in if absent)")
    demo.add_argument("--instance", help="bus instance name (overrides [engine] instance)")
    demo.add_argument("--duration", type=float, metavar="S",
                      help="stop after S seconds (overrides [demo] duration_s)")
    demo.add_argument("--rate", type=int, metavar="N",
                      help="synthetic trades per second (overrides [demo] rate_per_s)")
    gc = bus_sub.add_parser("gc", help="remove segments whose writer closed them or died")
    gc.add_argument("--dry-run", action="store_true", help="only print what would be removed")
    for p in (ls, gc):
        p.add_argument("--instance", default=None, help="only this instance")
        p.add_argument("--json", action="store_true", help="JSON output")
    return parser


def _shm_ls(args: argparse.Namespace) -> int:
    infos = shm.list_segments(args.instance)
    if args.json:
        print(msgspec.json.encode(infos).decode())
        return 0
    if not infos:
        print(f"no microstream segments in {shm.SHM_DIR}")
        return 0
    print(f"{'NAME':56} {'KIND':6} {'STATE':8} {'TAIL':>12} {'GEN':>4} {'WRITER':>8} ALIVE")
    for i in infos:
        pid = str(i.writer_pid) if i.writer_pid else "-"
        print(f"{i.name:56} {i.kind:6} {i.state or '-':8} {i.tail:>12} {i.generation:>4} "
              f"{pid:>8} {'yes' if i.writer_alive else 'no'}")
    return 0


def _shm_gc(args: argparse.Namespace) -> int:
    removed = shm.gc_segments(args.instance, dry_run=args.dry_run)
    if args.json:
        print(json.dumps({"removed": removed, "dry_run": args.dry_run}))
    else:
        verb = "would remove" if args.dry_run else "removed"
        print("\n".join(f"{verb} {name}" for name in removed) or "nothing to remove")
    return 0


def _venue(args: argparse.Namespace) -> int:
    from workers.venue import RecordingError, SyntheticConfig, VenueConfig, run_venue

    try:
        synthetic = SyntheticConfig(exchange=args.exchange, symbols=args.symbols,
                                    rate_hz=args.rate, seconds=args.seconds,
                                    seed=args.seed,
                                    scenarios=tuple(s for s in args.scenarios.split(",") if s)
                                    ) if args.synthetic else None
        config = VenueConfig(exchange=args.exchange, replay=args.replay or [],
                             synthetic=synthetic, speed=args.speed,
                             flood=args.flood, host=args.host, port=args.port,
                             rest_weight_limit_per_min=args.rest_weight_limit,
                             faults=args.faults, loop=args.loop,
                             shared_clock=args.shared_clock)
        return run_venue(config)
    except (RecordingError, ValueError) as exc:
        print(f"microstream venue: {exc}", file=sys.stderr)
        return 2


def _process_config(args: argparse.Namespace) -> Config:
    """Logging to stderr, and the config with ``--instance`` applied (a process command)."""
    import logging

    import msgspec.structs

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("picows").setLevel(logging.WARNING)  # one INFO line per connect
    config = load_config(args.config)
    if args.instance:
        engine = msgspec.structs.replace(config.engine, instance=args.instance)
        config = msgspec.structs.replace(config, engine=engine)
    return config


def _feed(args: argparse.Namespace) -> int:


    from workers.exchanges.feed import FeedError
    from workers.exchanges.worker import run_worker

    config = _process_config(args)
    section = getattr(config.exchanges, args.exchange)
    if not section.symbols:
        raise ConfigError(f"{args.config}: no symbols - at `$.exchanges.{args.exchange}.symbols`")
    try:
        return run_worker(args.exchange, config, args.duration)
    except FeedError as exc:
        raise ConfigError(f"{args.config}: {exc}") from None


def _publish(args: argparse.Namespace) -> int:
    from workers.publisher.process import run_publisher

    from .config import EMBEDDED_REDIS

    config = _process_config(args)
    if config.publisher.redis_url == EMBEDDED_REDIS:
        raise ConfigError(f"{args.config}: redis_url \"embedded\" needs `microstream run` "
                          "(which starts the server) - at `$.publisher.redis_url`")
    return run_publisher(config, args.duration)


def _detect(args: argparse.Namespace) -> int:


    from workers.detectors.process import run_detectors

    return run_detectors(_process_config(args), args.duration)


def _progress(label: str) -> Callable[[int], None] | None:
    """A frame counter on stderr when it is a terminal (long replays), else nothing."""
    if not sys.stderr.isatty():
        return None

    def tick(i: int) -> None:
        if i % 20_000 == 0:
            print(f"\r{label}: {i:,} frames", end="", file=sys.stderr, flush=True)

    return tick


def _replay(args: argparse.Namespace) -> int:
    from workers.exchanges.feed import Count
    from workers.exchanges.replay import ReplayError, replay, write_jsonl

    settings = load_config(args.config).detectors if args.config else None
    try:
        feed, sink = replay(args.exchange, args.frames, args.rest_snapshot,
                            book_depth=args.book_depth, market=args.market,
                            on_frame=_progress("replay"))
        n = write_jsonl(feed, sink, args.out)
    except (ReplayError, ValueError) as exc:
        print(f"microstream replay: {exc}", file=sys.stderr)
        return 2
    if args.detect:
        from workers.detectors.offline import detect_lines

        enc = msgspec.json.Encoder()
        with open(args.out, "ab") as f:
            for line in detect_lines(feed, sink, settings):
                f.write(enc.encode(line) + b"\n")
                n += 1
    if sys.stderr.isatty():
        print(f"\r{args.exchange} replay: done", file=sys.stderr)
    counts = {c.name.lower(): feed.counts[c] for c in Count if feed.counts[c]}
    print(json.dumps({"lines": n, "out": args.out, "books": feed.book_states(),
                      "counts": counts}))
    return 0


def _shm_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    config = load_for_run(args)
    demo = config.demo
    return run_demo(config.engine.instance,
                    args.duration if args.duration is not None else demo.duration_s,
                    args.rate if args.rate is not None else demo.rate_per_s,
                    demo.ring_capacity)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``microstream`` console script; returns the exit code."""
    args = _build_parser().parse_args(argv)
    handlers = {"run": commands.run, "check-config": commands.check_config,
                "status": commands.status, "tail": commands.tail, "record": commands.record,
                "bench": commands.bench, "venue": _venue, "feed": _feed, "detect": _detect,
                "publish": _publish, "replay": _replay}
    try:
        if args.command == "shm":
            return {"ls": _shm_ls, "gc": _shm_gc, "demo": _shm_demo}[args.shm_command](args)
        return handlers[args.command](args)
    except ConfigError as exc:
        print(f"microstream: {exc}", file=sys.stderr)
        return 2
    except (shm.ShmError, OSError, RuntimeError) as exc:
        print(f"microstream: {exc}", file=sys.stderr)
        return 1
