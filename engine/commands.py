"""The service commands of ``microstream``: ``run``, ``check-config``, ``status``, ``tail``,
``record`` and ``bench`` (the parser is in :mod:`engine.cli`).

Data goes to stdout, logs to stderr. Exit codes: 0 ok, 1 runtime error, 2 usage or
configuration error, 3 not running.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

import shm

from . import __version__
from .config import EMBEDDED_REDIS, Config, ConfigError, load_config

if TYPE_CHECKING:
    from .simulate import Surroundings
    from .supervisor import Supervisor

__all__ = ["NOT_RUNNING", "bench", "check_config", "load_for_run", "record", "run", "status",
           "tail"]

NOT_RUNNING = 3
BENCH_SUITES = ("ring", "ingest", "e2e", "compare", "detector", "publisher", "venue")
log = logging.getLogger("microstream")


def load_for_run(args: argparse.Namespace) -> Config:
    """The config of ``-c`` (built-in defaults when the default ./config.toml is absent) with
    ``--instance`` applied."""
    explicit = args.config != "config.toml"
    config = load_config(args.config) if explicit or Path(args.config).exists() else Config()
    if getattr(args, "instance", None):
        engine = msgspec.structs.replace(config.engine, instance=args.instance)
        config = msgspec.structs.replace(config, engine=engine)
    return config


def _logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("picows").setLevel(logging.WARNING)


def run(args: argparse.Namespace) -> int:
    """``microstream run [--simulate]``: the supervisor (see :mod:`engine.supervisor`)."""
    from .sdnotify import Notifier
    from .simulate import Surroundings
    from .supervisor import Supervisor

    _logging()
    # until the supervisor's own handlers are in place, SIGTERM unwinds like Ctrl-C: the
    # venues and the embedded Redis started so far are stopped, nothing is left behind
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    # only this process speaks to systemd: nothing started from here inherits the socket
    notifier = Notifier()
    for key in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        os.environ.pop(key, None)
    config = load_for_run(args)
    if args.http_port is not None:
        service = msgspec.structs.replace(config.service, http_port=args.http_port)
        config = msgspec.structs.replace(config, service=service)
    if not args.simulate and config.publisher.enabled and \
            config.publisher.redis_url == EMBEDDED_REDIS:
        log.info("[publisher] redis_url = \"embedded\": starting a private redis-server")
    try:
        with Surroundings(config, simulate=args.simulate) as around:
            supervisor = Supervisor(around.config, notifier)
            try:
                supervisor.open()
            except shm.WriterBusy:
                print(f"microstream: instance {config.engine.instance!r} is already running "
                      "(see `microstream status`)", file=sys.stderr)
                return 1
            try:
                _where_to_look(supervisor, around)
            except KeyboardInterrupt:
                supervisor.close()
                raise
            return supervisor.run(args.duration)
    except KeyboardInterrupt:
        log.info("stopped before the engine started")
        return 0


def _where_to_look(supervisor: Supervisor, around: Surroundings) -> None:
    from workers.publisher.resp import parse_redis_url

    cfg, inst = supervisor.config, supervisor.instance
    names = [c.spec.name for c in supervisor.children]
    lines = [f"microstream {__version__}: instance {inst}, running {', '.join(names) or 'nothing'}"]
    for name, venue in around.venues.items():
        lines.append(f"  venue     {name}: {venue.ws_url} (synthetic market)")
    feeds = [c.spec.exchange for c in supervisor.children if c.spec.kind == "feed"]
    if feeds:
        lines.append(f"  tail      microstream tail {feeds[0]}.trades -f --instance {inst}"
                     + ("   (or detectors.events)" if cfg.detectors.enabled else ""))
    if cfg.publisher.enabled:
        addr = parse_redis_url(cfg.publisher.redis_url)
        where = f"-s {addr.unix_path}" if addr.unix_path else f"-h {addr.host} -p {addr.port}"
        pattern = f"{feeds[0]}:*" if feeds else "*"
        lines.append(f"  redis     redis-cli {where} psubscribe '{pattern}'"
                     + ("   (embedded server)" if around.redis is not None else ""))
    if supervisor.http is not None:
        lines.append(f"  metrics   {supervisor.http.url}/metrics  (/healthz, /readyz)")
    lines.append(f"  status    microstream status --instance {inst}")
    lines.append("Ctrl-C stops it (in order: feeds, detectors, publisher drain).")
    print("\n".join(lines), flush=True)


def check_config(args: argparse.Namespace) -> int:
    """``microstream check-config``: load and validate; print what would run."""
    from .children import child_specs

    config = load_config(args.config)
    specs = child_specs(config)
    summary: dict[str, object] = {"file": str(args.config), "instance": config.engine.instance,
               "children": [s.name for s in specs],
               "symbols": {s.exchange: [x.symbol for x in getattr(config.exchanges,
                                                                 s.exchange).symbols]
                           for s in specs if s.kind == "feed"},
               "redis_url": config.publisher.redis_url if config.publisher.enabled else None,
               "http": f"{config.service.http_host}:{config.service.http_port}"
               if config.service.http_port >= 0 else None}
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"{args.config}: ok; instance {config.engine.instance}; runs "
              f"{', '.join(s.name for s in specs) or 'nothing'}")
    return 0


def status(args: argparse.Namespace) -> int:
    """``microstream status``: from the supervisor's table and the children's stats in shared
    memory (works without HTTP); exit 3 when no supervisor runs the instance."""
    from .status import read_status

    instance = args.instance or load_for_run(args).engine.instance
    st = read_status(instance)
    if args.json:
        print(msgspec.json.encode(st).decode())
    elif not st.running:
        print(f"instance {instance}: not running")
    else:
        http = f", http port {st.http_port}" if st.http_port >= 0 else ""
        print(f"instance {instance}: supervisor pid {st.pid}, "
              f"{'ready' if st.ready else 'not ready'}{http}")
        print(f"{'CHILD':14} {'STATE':9} {'PID':>8} {'RESTARTS':>8} {'READY':5} "
              f"{'HEARTBEAT':>9}  DETAIL")
        for c in st.components:
            keys = ("connections_up", "connections", "books_live", "books", "channels_silent",
                    "frames", "connected", "breaker_state", "records")
            detail = " ".join(f"{k}={c.detail[k]}" for k in keys if k in c.detail)
            print(f"{c.name:14} {c.state:9} {c.pid:>8} {c.restarts:>8} "
                  f"{'yes' if c.ready else 'no':5} {c.heartbeat_age_s:>8.2f}s  {detail}")
    return 0 if st.running else NOT_RUNNING


def tail(args: argparse.Namespace) -> int:
    """``microstream tail OWNER.STREAM``: see :mod:`engine.tail`."""
    from .tail import TailError
    from .tail import tail as run_tail

    instance = args.instance or load_for_run(args).engine.instance
    try:
        run_tail(instance, args.stream, symbol=args.symbol, follow=args.follow, last=args.last)
    except TailError as exc:
        print(f"microstream tail: {exc}", file=sys.stderr)
        return NOT_RUNNING if "is the engine running" in str(exc) else 2
    except KeyboardInterrupt:
        pass
    return 0


def record(args: argparse.Namespace) -> int:
    """``microstream record EXCHANGE --out DIR``: raw frames with receive times (gz, rotating)."""
    from workers.exchanges.capture import run_record

    _logging()
    config = load_for_run(args)
    section = getattr(config.exchanges, args.exchange)
    if not section.symbols:
        raise ConfigError(f"{args.config}: no symbols - at `$.exchanges.{args.exchange}.symbols`")
    from workers.exchanges.feed import FeedError

    try:
        return run_record(args.exchange, config, args.out, duration_s=args.duration,
                          rotate_bytes=int(args.rotate_mb * 1024 * 1024),
                          rotate_s=args.rotate_s)
    except FeedError as exc:
        raise ConfigError(f"{args.config}: {exc}") from None


def bench(args: argparse.Namespace) -> int:
    """``microstream bench SUITE [ARGS...]``: run ``benchmarks/<suite>_bench.py`` from the
    source checkout (JSON lines on stdout; a table instead when stdout is a terminal)."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / f"{args.suite}_bench.py"
    if not script.exists():
        print(f"microstream bench: {script} not found (benchmarks run from a source checkout)",
              file=sys.stderr)
        return 2
    env = {**os.environ, "PYTHONPATH": str(script.parents[1])}
    if sys.stderr.isatty():
        print(f"bench: running {script.name} {' '.join(args.args)} (a table at the end on a "
              "terminal, else JSON lines; a suite takes from seconds to minutes)",
              file=sys.stderr, flush=True)
    return subprocess.call([sys.executable, str(script), *args.args], env=env)
