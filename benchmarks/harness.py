"""What the ``e2e`` and ``compare`` suites share: the load (local venues on a shared clock), its
intended send times, a Redis subscriber that stamps what it receives, the engine's config for a
load, and CPU/RSS sampling of the processes under test.

Latency from the *intended* send time (no coordinated omission): each venue serves a seeded
synthetic market, or a real recording (``tests/data/recorded``) paced by its own receive
stamps, on a shared clock, and publishes the clock's start and period (``GET
/venue/connections``); the same market is generated (or the same recording read) here, so
trade ``(symbol, trade_id)`` of pass ``k`` was due at ``start + k * period + offset``, whatever
the pipeline under test did with it. A pipeline that falls behind therefore shows its backlog
in the tail, instead of hiding it by reading late.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import psutil

from engine.simulate import venue_urls
from workers.exchanges.bybit_wire import trade_id as bybit_trade_id
from workers.exchanges.replay import feed_class
from workers.venue import SyntheticConfig, generate, start_venue
from workers.venue.recording import load_recording
from workers.venue.synthetic import synthetic_symbols

__all__ = [
    "DATA",
    "EXCHANGES",
    "RECORDINGS",
    "EngineRun",
    "Load",
    "Sampler",
    "Subscriber",
    "begin",
    "engine_config",
    "frames_per_event",
    "load_arguments",
    "parse_overrides",
    "trade_key",
]

EXCHANGES = ("binance", "bybit", "okx")
SEED = 7
DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "recorded"
# the real recording each exchange's venue replays in the ``recorded`` market (README there)
RECORDINGS = {"binance": "binance/hftbacktest_usdm_btcusdt_20240808.frames.jsonl.gz",
              "bybit": "bybit/cryptofeed_linear_v5_20260809.frames.jsonl",
              "okx": "okx/cryptofeed_books_3inst_20220513.frames.jsonl"}
Spec = tuple[str, str, list[str] | None]   # symbol, market, its streams (None: every stream)
_ctx = mp.get_context("spawn")


def trade_key(exchange: str, trade_id: Any) -> int:
    """A trade id as the engine publishes it (an int; Bybit's UUIDs folded as the feed does),
    whichever form a pipeline published."""
    if isinstance(trade_id, int):
        return trade_id
    if exchange == "bybit":
        return bybit_trade_id(str(trade_id))[0]
    return int(trade_id)


def frames_per_event(exchange: str, symbols: int) -> float:
    """Frames a synthetic market of ``exchange`` sends per market event (a Binance book step
    is a depth and a bookTicker frame; a Bybit trade frame carries every fill; second ticks)."""
    seconds, rate = 5.0, 1_000.0
    frames, _ = generate(SyntheticConfig(exchange=exchange, symbols=symbols, rate_hz=rate,
                                         seconds=seconds, seed=SEED))
    return len(frames) / (rate * seconds)


class Load:
    """Three venues sending ``rate`` frames/s in all, looped on a shared clock, or in flood
    mode; a context manager. The market is synthetic (split evenly; each venue's market event
    rate calibrated by :func:`frames_per_event`) or, with ``recorded``, the real recordings of
    :data:`RECORDINGS` sped up by one factor, so that the exchanges keep their recorded mix.
    ``specs``/``options`` per exchange (the symbols to subscribe, and feed options), the
    venues' URLs, and each trade's intended send time (:meth:`intended`)."""

    def __init__(self, rate: float, timeline_s: float, symbols: int = 2, flood: bool = False,
                 exchanges: Iterable[str] = EXCHANGES, recorded: bool = False) -> None:
        self.exchanges = tuple(exchanges)
        self.flood, self.recorded = flood, recorded
        self.specs: dict[str, list[Spec]] = {}
        self.options: dict[str, dict[str, Any]] = {}
        if recorded:
            self.recordings = {ex: load_recording(DATA / RECORDINGS[ex], ex)
                               for ex in self.exchanges}
            native = sum(len(r.frames) * 1e9 / (r.recv_ns[-1] - r.recv_ns[0])
                         for r in self.recordings.values())
            self.speed = rate / native   # frames/s the recordings hold, together
            for ex, rec in self.recordings.items():
                found, options = feed_class(ex).discover(rec.frames)
                self.specs[ex] = [(x.symbol, x.market, list(x.streams)) for x in found]
                self.options[ex] = dict(options)
        else:
            self.speed = 1.0   # the synthetic timeline is generated at the rate already
            share = rate / len(self.exchanges)
            self.params = {ex: {"symbols": symbols,
                                "rate": share / frames_per_event(ex, symbols),
                                "seconds": timeline_s, "seed": SEED} for ex in self.exchanges}
            for ex in self.exchanges:
                self.specs[ex] = [(s, "linear", None) for s in synthetic_symbols(ex, symbols)]
                # the synthetic Bybit venue publishes orderbook.50
                self.options[ex] = {"depth_levels": 50} if ex == "bybit" else {}
        self.symbols = {ex: [s for s, _, _ in specs] for ex, specs in self.specs.items()}
        self.venues: dict[str, Any] = {}
        self._offsets: dict[str, dict[tuple[str, int], int]] = {}
        self._clocks: dict[str, tuple[int, int]] = {}

    def __enter__(self) -> Load:
        try:
            for ex in self.exchanges:
                replay = [str(DATA / RECORDINGS[ex])] if self.recorded else []
                self.venues[ex] = start_venue(
                    ex, replay, speed=self.speed, loop=True, shared_clock=not self.flood,
                    flood=self.flood, synthetic=None if self.recorded else self.params[ex])
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop every venue (idempotent)."""
        for venue in self.venues.values():
            venue.stop()
        self.venues.clear()

    def urls(self, exchange: str) -> dict[str, str]:
        """The engine's ``urls`` for ``exchange``'s venue."""
        venue = self.venues[exchange]
        return venue_urls(exchange, venue.ws_url, venue.rest_url)

    def endpoints(self) -> dict[str, tuple[str, str]]:
        """exchange → (WebSocket base URL, REST base URL) of its venue."""
        return {ex: (v.ws_url, v.rest_url) for ex, v in self.venues.items()}

    def _offsets_of(self, exchange: str) -> dict[tuple[str, int], int]:
        """(lowercase symbol, trade id) → ns from the timeline's start, as the venue has it:
        the venue sends frame ``i`` at ``start + (recv_ns[i] - recv_ns[0]) / speed``."""
        if exchange not in self._offsets:
            if self.recorded:
                rec = self.recordings[exchange]
                frames = zip(rec.recv_ns, rec.topics, rec.frames, strict=True)
            else:
                params = self.params[exchange]
                config = SyntheticConfig(exchange=exchange, symbols=int(params["symbols"]),
                                         rate_hz=params["rate"], seconds=params["seconds"],
                                         seed=SEED)
                frames = iter(generate(config)[0])
            offsets: dict[tuple[str, int], int] = {}
            base = None
            for ns, topic, raw in frames:
                base = ns if base is None else base
                if "rade" not in topic:   # trade / publicTrade / trades
                    continue
                data = json.loads(raw)["data"]
                for t in data if isinstance(data, list) else [data]:
                    symbol = (t.get("s") or t.get("instId")).lower()
                    tid = t.get("t", t.get("i", t.get("tradeId")))
                    offsets[(symbol, trade_key(exchange, tid))] = int((ns - base)
                                                                      / self.speed)
            self._offsets[exchange] = offsets
        return self._offsets[exchange]

    def _connections(self, exchange: str) -> dict[str, Any]:
        """The venue's ``GET /venue/connections`` (its clock and per-connection counts)."""
        url = f"{self.venues[exchange].rest_url}/venue/connections"
        with urllib.request.urlopen(url, timeout=10) as r:
            info: dict[str, Any] = json.loads(r.read())
        return info

    def clock(self, exchange: str) -> tuple[int, int]:
        """(start ns, period ns) of ``exchange``'s shared clock (CLOCK_MONOTONIC)."""
        if exchange not in self._clocks:
            shared = self._connections(exchange)["shared_clock"]
            if shared is None or shared["start_ns"] is None:
                raise RuntimeError(f"{exchange} venue: no shared clock running")
            self._clocks[exchange] = (shared["start_ns"], shared["period_ns"])
        return self._clocks[exchange]

    def sent(self) -> int:
        """Frames the venues have sent so far, over every connection (open or closed)."""
        total = 0
        for exchange in self.venues:
            info = self._connections(exchange)
            total += sum(c["sent"] for c in info["connections"])
            total += sum(c.get("sent", 0) for c in info["closed"])
        return total

    def due_between(self, t0_ns: int, t1_ns: int) -> int:
        """Trades of the symbols' timelines due in ``[t0_ns, t1_ns)`` (every pass of the
        shared clocks), over the venues: what a pipeline that keeps up delivers for them."""
        total = 0
        for ex in self.exchanges:
            offsets = np.sort(np.fromiter(self._offsets_of(ex).values(), np.int64))
            start, period = self.clock(ex)
            k0 = max((t0_ns - start) // period, 0)
            for k in range(k0, (t1_ns - start) // period + 1):
                base = start + k * period
                total += int(np.searchsorted(offsets, t1_ns - base)
                             - np.searchsorted(offsets, t0_ns - base))
        return total

    def intended(self, exchange: str, symbols: list[str], trade_ids: list[Any],
                 received_ns: np.ndarray) -> np.ndarray:
        """Intended send time of each trade (ns; 0 where the timeline has no such trade):
        the latest pass whose due time is not after the trade's receipt."""
        offsets = self._offsets_of(exchange)
        start, period = self.clock(exchange)
        off = np.array([offsets.get((s, trade_key(exchange, t)), -1)
                        for s, t in zip(symbols, trade_ids, strict=True)], np.int64)
        k = np.maximum((received_ns - start - off) // period, 0)
        return np.where(off >= 0, start + k * period + off, 0)


def engine_config(path: Path, instance: str, load: Load, redis_url: str, *,
                  detectors: bool = True, streams: tuple[str, ...] = (),
                  publisher: dict[str, Any] | None = None,
                  overrides: dict[str, dict[str, Any]] | None = None) -> None:
    """Write the engine's config for ``load``: every exchange pointed at its venue with the
    venue's symbols (``streams``: the feed streams, empty for all the venue serves);
    ``publisher``: ``[publisher]`` keys over the defaults; ``overrides``: section → keys
    (``detectors``, ``publisher``, ``exchanges.binance``, ...) over everything else."""
    from engine.service_config import SimulateConfig
    from workers.exchanges.records import FEED_STREAMS

    lines = [f'[engine]\ninstance = "{instance}"']
    for ex in EXCHANGES:
        lines.append(f"[exchanges.{ex}]")
        if ex not in load.exchanges:
            lines.append("enabled = false")
            continue
        wanted = [s for s in (streams or FEED_STREAMS) if not (s == "bbo" and ex != "binance")]
        syms = ", ".join(
            f'{{ symbol = "{sym}", market = "{market}", streams = '
            f'{json.dumps(wanted if own is None else [s for s in own if s in wanted])} }}'
            for sym, market, own in load.specs[ex])
        urls = ", ".join(f'{k} = "{v}"' for k, v in load.urls(ex).items())
        lines += ["enabled = true", f"symbols = [{syms}]", f"urls = {{ {urls} }}"]
        if load.options[ex]:
            lines.append("options = {" + ", ".join(f"{k} = {json.dumps(v)}" for k, v in
                                                   load.options[ex].items()) + "}")
        lines += [f"{k} = {json.dumps(v)}" for k, v in (overrides or {}).get(
            f"exchanges.{ex}", {}).items()]
    # the synthetic market's trades are small: the demo's whale thresholds (as `run
    # --simulate`), so that whale events (trigger → event latency) occur
    sim = SimulateConfig()
    sections = {"detectors": {"enabled": detectors, "whale_min_usd": sim.whale_min_usd,
                              "whale_burst_usd": sim.whale_burst_usd},
                "publisher": {"enabled": True, "redis_url": redis_url, **(publisher or {})},
                "service": {"http_port": -1}}
    for name, keys in (overrides or {}).items():
        if not name.startswith("exchanges."):
            sections.setdefault(name, {}).update(keys)
    for name, keys in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in keys.items()]
    path.write_text("\n".join(lines) + "\n")


def load_arguments(parser: Any, quick: str) -> None:
    """The options the suites driving a :class:`Load` share: ``--rates``, ``--seconds``,
    ``--runs``, ``--quick`` (described by ``quick``), ``--set``, ``--out``, ``--plot``."""
    parser.add_argument("--rates", default="1000,5000,20000",
                        help="frames/s sent by the three venues in all, comma-separated "
                             "(empty: none, e.g. compare's flood case alone)")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds (10)")
    parser.add_argument("--runs", type=int, default=3, help="runs per point (3)")
    parser.add_argument("--market", choices=("synthetic", "recorded"), default="synthetic",
                        help="what the venues send: the seeded synthetic market, or the real "
                             "recordings (tests/data/recorded) sped up to the rate")
    parser.add_argument("--quick", action="store_true", help=f"smoke test: {quick}")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="engine config over the defaults, e.g. publisher.spin_us=0")
    parser.add_argument("--out", help="also write the JSON lines to this file")
    parser.add_argument("--plot", help="draw latency and throughput into this PNG")


def begin(parser: Any, args: Any, suite: str, quick_rate: float
          ) -> tuple[list[float], float, int, dict[str, dict[str, Any]], Any]:
    """The start of a suite run from :func:`load_arguments`' options: (rates, seconds, runs,
    config overrides, the :class:`report.Emitter` with the environment and a jitter baseline
    already reported)."""
    from report import Emitter, report_runs
    from ring_bench import jitter_once

    rates = [quick_rate] if args.quick else [float(r) for r in args.rates.split(",") if r.strip()]
    if not rates and suite != "compare":   # compare alone has a case without a rate (flood)
        parser.error("--rates: at least one rate")
    seconds, runs = (2.0, 1) if args.quick else (args.seconds, args.runs)
    try:
        overrides = parse_overrides(args.set)
    except ValueError as exc:
        parser.error(str(exc))
    emit = Emitter(suite=suite)
    pinning = {name: keys["cpu"] for name, keys in overrides.items() if "cpu" in keys}
    emit.env(config_overrides=args.set, pinning=pinning or "none: every process on every CPU")
    report_runs(emit, "jitter", [jitter_once(min(seconds, 2.0), None)])
    return rates, seconds, runs, overrides, emit


def parse_overrides(items: list[str]) -> dict[str, dict[str, Any]]:
    """``--set SECTION.KEY=VALUE`` options (VALUE in TOML/JSON syntax, else a string) as
    :func:`engine_config`'s ``overrides``."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        target, sep, raw = item.partition("=")
        section, _, key = target.rpartition(".")
        if not sep or not section or not key:
            raise ValueError(f"--set {item!r}: expected SECTION.KEY=VALUE")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        out.setdefault(section, {})[key] = value
    return out


class EngineRun:
    """``microstream run -c CONFIG`` as a child process; a context manager that returns once
    the engine is ready and stops it (SIGTERM, the ordered stop) on exit. ``pids()``: the
    supervisor and each of its children by name."""

    def __init__(self, config: Path, instance: str, log: Path, ready_timeout_s: float = 240.0
                 ) -> None:
        self.config, self.instance, self.log_path = config, instance, log
        self.ready_timeout_s = ready_timeout_s
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> EngineRun:
        from engine.status import read_status

        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "engine", "run", "-c", str(self.config)],
            stdout=subprocess.DEVNULL, stderr=self._log, cwd=Path(__file__).resolve().parents[1])
        deadline = time.monotonic() + self.ready_timeout_s
        while not read_status(self.instance).ready:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError(f"engine not ready: {self.log_path.read_text()[-2000:]}")
            time.sleep(0.2)
        return self

    def pids(self) -> dict[str, int]:
        """name → pid of the supervisor (``supervisor``) and every child."""
        from engine.status import read_status

        assert self.proc is not None
        return {"supervisor": self.proc.pid} | {
            c.name: c.pid for c in read_status(self.instance).components}

    def frames_received(self) -> int:
        """Frames every feed worker has received so far, by their status rows (refreshed
        every 100 ms)."""
        from engine.status import read_status

        return sum(c.detail.get("frames", 0) for c in read_status(self.instance).components)

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def _subscribe(path: str, seconds: float, decode_trades: bool, conn: Any) -> None:
    """Child: ``PSUBSCRIBE *`` on a raw socket, every read stamped with ``perf_counter_ns``
    (for intended send times) and ``time_ns`` (for the payloads' wall-clock ``ts_recv_ns``);
    sends back message counts per event type and, with ``decode_trades``, per trade (receipt
    ns, exchange, symbol, trade id, seq, frame receipt → this receipt ns)."""
    import hiredis

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    sock.sendall(b"*2\r\n$10\r\nPSUBSCRIBE\r\n$1\r\n*\r\n")
    reader = hiredis.Reader()
    decode = msgspec.json.Decoder().decode
    counts: dict[str, int] = {}
    trades: list[tuple[int, str, str, Any, int, int]] = []
    conn.send("ready")
    clock, wall = time.perf_counter_ns, time.time_ns
    end = clock() + int(seconds * 1e9)
    sock.settimeout(0.2)
    while clock() < end:
        try:
            data = sock.recv(1 << 18)
        except TimeoutError:
            continue
        if not data:   # Redis dropped us (e.g. past its pub/sub output buffer limit)
            counts["subscriber_disconnected"] = 1
            break
        now, now_wall = clock(), wall()
        reader.feed(data)
        while (msg := reader.gets()) is not False:
            if not (isinstance(msg, list) and msg[0] == b"pmessage"):
                continue
            kind = msg[2].rpartition(b":")[2].decode()
            counts[kind] = counts.get(kind, 0) + 1
            if decode_trades and kind == "trade":
                p = decode(msg[3])
                trades.append((now, p["exchange"], p["symbol"], p["trade_id"], p["seq"],
                               now_wall - p["ts_recv_ns"]))
    sock.close()
    conn.send((counts, trades))


class Subscriber:
    """A Redis subscriber in its own process for ``seconds`` (see :func:`_subscribe`)."""

    def __init__(self, unix_path: Path, seconds: float, decode_trades: bool = True) -> None:
        self._conn, child = _ctx.Pipe()
        self._proc = _ctx.Process(target=_subscribe, daemon=True,
                                  args=(str(unix_path), seconds, decode_trades, child))
        self._proc.start()
        if not self._conn.poll(30) or self._conn.recv() != "ready":
            raise RuntimeError("subscriber did not start")

    def result(self) -> tuple[dict[str, int], list[tuple[int, str, str, Any, int, int]]]:
        """Counts per event type and the trades, once its time is up."""
        if not self._conn.poll(120):
            raise RuntimeError("subscriber did not report")
        counts, trades = self._conn.recv()
        self._proc.join(10)
        return counts, trades


class Sampler:
    """CPU seconds (user + system) and memory (PSS: shared pages such as the bus's rings
    split between the processes mapping them, so a sum over processes is right) of named
    processes between :meth:`start` and :meth:`stop`; a process gone by then counts 0 and is
    listed in ``gone``."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.cpu0: dict[str, float] = {}
        self.cpu_s: dict[str, float] = {}
        self.pss_mb: dict[str, float] = {}
        self.gone: list[str] = []

    @staticmethod
    def _cpu(p: psutil.Process) -> float:
        t = p.cpu_times()
        return t.user + t.system

    def start(self) -> None:
        """Take the starting CPU times."""
        self.cpu0 = {n: self._cpu(p) for n, p in self.procs.items()}

    def stop(self) -> None:
        """Take the final CPU times and the RSS."""
        for name, p in self.procs.items():
            try:
                self.cpu_s[name] = self._cpu(p) - self.cpu0[name]
                self.pss_mb[name] = p.memory_full_info().pss / 2**20
            except psutil.NoSuchProcess:
                self.cpu_s[name], self.pss_mb[name] = 0.0, 0.0
                self.gone.append(name)
