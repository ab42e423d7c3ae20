"""One feed worker process: an exchange's connections, its feed, and the bus segments it owns.

:class:`FeedWorker` is the async control plane around a synchronous :class:`Feed` (the picows
model). It creates the exchange's rings (``trades``, ``bbo``, ``depth``, ``book``,
``liquidations``, ``funding``, ``open_interest``), the latest tables (``bbo``, ``book``,
``funding``, ``open_interest``) and a ``stats`` table (one row of counters, refreshed every
100 ms, read by ``microstream status`` and ``/metrics``), then runs:

* one :class:`FeedConnection` task per connection the feed asks for;
* a request task serving the feed's queue: REST snapshots inside the weight budget (Binance),
  resubscriptions (Bybit, OKX), with retries;
* a housekeeping task: segment heartbeats, counters to shared memory, the channel liveness
  watchdog (a LIVE book silent for ``silent_after_s`` turns STALE), full-depth snapshots,
  USD-M open-interest polling, and rate-limited logging of bad-frame samples.

``run_worker(exchange, config)`` is the process entry (spawn-safe); it pins the CPU, warms
the njit kernels, ``gc.freeze()``\\ s the start-up heap and runs on uvloop.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
from typing import Any

import numpy as np

from engine.config import Config, ExchangeConfig, symbol_names
from shm import LatestWriter, Writer, segment_name
from shm.layout import STREAMS, BookState, Exchange, book_dtype

from .connection import ConnectionSettings, FeedConnection
from .feed import Count, Feed, FeedError, Request, SymbolSpec
from .records import FEED_STREAMS, Emitter
from .rest import RestBudget, RestError, http_get

__all__ = ["STATS", "FeedWorker", "run_worker", "symbol_specs"]

log = logging.getLogger("microstream.worker")

STATS = np.dtype([("seq", np.uint64), ("ts_ns", np.int64), ("pid", np.int64),
                  ("connections", np.int64), ("connections_up", np.int64),
                  ("books", np.int64), ("books_live", np.int64),
                  ("channels_silent", np.int64)]
                 + [(c.name.lower(), np.int64) for c in Count], align=True)
_LATEST = ("bbo", "book", "funding", "open_interest")
# seconds without a frame before a channel is flagged silent (0: never; liquidations are rare)
CHANNEL_SILENCE_S = {"book": 10.0, "bbo": 10.0, "trades": 120.0, "mark": 10.0, "funding": 120.0,
                     "ticker": 30.0, "open_interest": 120.0, "liquidations": 0.0}
_SPOT_STREAMS = ("trades", "bbo", "depth", "book")


def symbol_specs(cfg: ExchangeConfig) -> list[SymbolSpec]:
    """Feed symbol specs from the config; ids follow the config order (stable for a file)."""
    return [SymbolSpec(s.symbol, s.market, s.streams or (
        _SPOT_STREAMS if s.market == "spot" else FEED_STREAMS), i, s.contract_size)
        for i, s in enumerate(cfg.symbols)]


def latest_names(specs: list[SymbolSpec]) -> dict[int, str]:
    """Row names of the latest tables by symbol id (see ``engine.config.symbol_names``)."""
    ordered = sorted(specs, key=lambda s: s.symbol_id)
    names = symbol_names([(s.symbol, s.market) for s in ordered])
    return {s.symbol_id: name for s, name in zip(ordered, names, strict=True)}


def _feed_class(exchange: str) -> type[Feed]:
    from .replay import feed_class
    return feed_class(exchange)


class FeedWorker:
    """The control plane of one exchange (see the module docstring)."""

    def __init__(self, exchange: str, cfg: ExchangeConfig, instance: str) -> None:
        self.name = exchange
        self.cfg = cfg
        self.instance = instance
        specs = symbol_specs(cfg)
        unknown = set(cfg.channel_silence_s) - set(CHANNEL_SILENCE_S)
        if unknown:  # validated before any segment exists
            raise FeedError(f"{exchange}: channel_silence_s: unknown channels {sorted(unknown)}; "
                            f"known: {', '.join(CHANNEL_SILENCE_S)}")
        self.writers: dict[str, Writer] = {}
        self.tables: dict[str, LatestWriter] = {}
        names = latest_names(specs)
        try:
            for stream in FEED_STREAMS:
                dtype = book_dtype(cfg.book_depth) if stream == "book" else STREAMS[stream]
                seg = segment_name(instance, exchange, stream)
                self.writers[stream] = Writer(seg, dtype, cfg.ring_capacity, replace=True)
                if stream in _LATEST:
                    table = LatestWriter(seg + ".latest", dtype, max(1, len(specs)),
                                         replace=True)
                    for s in specs:
                        table.register(s.symbol_id, names[s.symbol_id])
                    self.tables[stream] = table
        except BaseException:
            self.close(unlink=True)  # a failed start leaves nothing behind
            raise
        self.emitter = Emitter(int(Exchange[exchange.upper()]), self.writers, self.tables,
                               book_depth=cfg.book_depth,
                               max_depth_levels=2 * cfg.book_capacity)
        cls: Any = _feed_class(exchange)
        try:
            self.feed: Feed = cls(specs, self.emitter, urls=_urls(cls, cfg.urls),
                                  book_capacity=cfg.book_capacity, **cfg.options)
        except TypeError as exc:
            self.close(unlink=True)  # a failed start leaves nothing behind
            raise FeedError(f"{exchange}: bad options {dict(cfg.options)}: {exc}") from None
        except BaseException:
            self.close(unlink=True)  # a failed start leaves nothing behind
            raise
        # the stats row is the supervisor's heartbeat: created only now, once every kernel the
        # feed needs is compiled (a cold numba cache takes seconds; a heartbeat started before
        # that went stale, the worker was killed before the cache was written, and a fresh
        # checkout crash-looped)
        try:
            self.stats = LatestWriter(segment_name(instance, exchange, "stats", suffix="latest"),
                                      STATS, 1, replace=True)
        except BaseException:
            self.close(unlink=True)
            raise
        c = cfg.connection
        settings = ConnectionSettings(c.backoff_initial_s, c.backoff_max_s, c.stale_after_s,
                                      c.handshake_timeout_s, c.overlap_s, c.healthy_after_s)
        self.connections = {spec.key: FeedConnection(self.feed, spec, settings)
                            for spec in self.feed.connections()}
        self.budget = RestBudget(cfg.rest_weight_per_min)
        self._wake = asyncio.Event()
        self.feed.notify = self._wake.set
        self._stop = asyncio.Event()
        self._serving: set[asyncio.Task[None]] = set()
        self._silence = {**CHANNEL_SILENCE_S, **cfg.channel_silence_s}
        self._silent: set[tuple[int, int, int]] = set()
        self._resyncing_since: dict[int, float] = {}
        self._last_sample_log = 0.0
        self._connecting = False

    # -- lifecycle ----------------------------------------------------------------------
    async def run(self, duration_s: float | None = None) -> None:
        """Run until :meth:`stop` (or ``duration_s``)."""
        # heartbeats first: the contract-size retries can take longer than the supervisor's
        # heartbeat timeout, and a REST outage at start must not look like a hung worker
        tasks = [asyncio.create_task(self._housekeeping(), name="housekeeping")]
        try:
            await self._load_instruments()
        except BaseException:
            tasks[0].cancel()
            raise
        tasks += [asyncio.create_task(c.run(), name=f"conn-{k}")
                  for k, c in self.connections.items()]
        self._connecting = True   # from now on, silence and stuck resyncs mean something
        tasks.append(asyncio.create_task(self._serve_requests(), name="requests"))
        if hasattr(self.feed, "open_interest_urls") and self.feed.open_interest_urls():
            tasks.append(asyncio.create_task(self._poll_open_interest(), name="oi"))
        try:
            if duration_s is None:
                await self._stop.wait()
            else:
                try:
                    await asyncio.wait_for(self._stop.wait(), duration_s)
                except TimeoutError:
                    pass
        finally:
            for c in self.connections.values():
                c.stop()
            for t in (*tasks, *self._serving):
                t.cancel()
            await asyncio.gather(*tasks, *self._serving, return_exceptions=True)
            recv, mono = time.time_ns(), time.perf_counter_ns()
            for key in self.connections:  # no book stays LIVE in the tables after a stop
                self.feed.on_disconnect(key, recv, mono)
            self._write_stats()

    def stop(self) -> None:
        """Ask :meth:`run` to end."""
        self._stop.set()

    def close(self, unlink: bool = False) -> None:
        """Close every segment (marked CLOSED; ``unlink`` removes the files)."""
        if hasattr(self, "emitter"):
            self.emitter.close()  # nothing commits through the writers' addresses after this
        for w in getattr(self, "writers", {}).values():
            w.close(unlink)
        for t in getattr(self, "tables", {}).values():
            t.close(unlink)
        if hasattr(self, "stats"):
            self.stats.close(unlink)

    async def _load_instruments(self, attempts: int = 5) -> None:
        """OKX: contract sizes (ctVal) from REST before the first frame, retried with backoff
        (sizes in a book cannot be rescaled later). If they stay unavailable the config's
        ``contract_size`` is used, with an error in the log: set it for derivatives."""
        urls = getattr(self.feed, "instruments_urls", None)
        for url in urls() if urls is not None else []:
            delay = 0.5
            for attempt in range(attempts):
                body = await self._rest(url, 1)
                applied = self.feed.apply_instruments(body) if body else 0  # type: ignore[attr-defined]
                if applied:
                    log.info("%s: %d contract sizes from %s", self.name, applied, url)
                    break
                if attempt + 1 < attempts:
                    try:   # a stop (SIGTERM) ends the wait and the start
                        await asyncio.wait_for(self._stop.wait(), delay)
                        return
                    except TimeoutError:
                        delay *= 2
            else:
                log.error("%s: no contract sizes from %s after %d attempts: using config "
                          "contract_size (set it for every derivative)", self.name, url,
                          attempts)

    # -- requests -----------------------------------------------------------------------
    async def _serve_requests(self) -> None:
        feed = self.feed
        while True:
            await self._wake.wait()
            self._wake.clear()
            while feed.requests:
                req = feed.requests.popleft()
                task = asyncio.create_task(self._serve(req))
                self._serving.add(task)  # keep a reference until it is done
                task.add_done_callback(self._serving.discard)

    async def _serve(self, req: Request) -> None:
        feed, delay = self.feed, 0.5
        try:
            while not self._stop.is_set():
                try:
                    if await self._serve_once(req):
                        return
                except Exception as exc:
                    self._survive(f"{req.kind} of symbol {req.symbol_id}", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
        finally:
            feed.done(req)

    async def _serve_once(self, req: Request) -> bool:
        """One attempt at a request; True when done."""
        if req.kind == "snapshot":
            return await self._snapshot(req.symbol_id)
        key, frames = self.feed.resubscribe_frames(req.symbol_id)
        conn = self.connections[key]
        if not conn.connected:
            return False  # the reconnect subscribes anew
        for frame in frames:
            conn.send(frame)
        return True

    async def _snapshot(self, sid: int) -> bool:
        url, weight = self.feed.snapshot_url(sid)  # type: ignore[attr-defined]
        body = await self._rest(url, weight)
        if body is None:
            return False
        return bool(self.feed.on_snapshot(sid, body, time.time_ns(),  # type: ignore[attr-defined]
                                          time.perf_counter_ns()))

    async def _rest(self, url: str, weight: int) -> bytes | None:
        await self.budget.acquire(weight)
        self.feed.counts[Count.REST_REQUESTS] += 1
        try:
            response = await http_get(url)
        except RestError as exc:
            self.feed.counts[Count.REST_REJECTED] += 1
            log.warning("%s: %s", self.name, exc)
            return None
        if not self.budget.observe(response) or response.status != 200:
            self.feed.counts[Count.REST_REJECTED] += 1
            log.warning("%s: GET %s -> %d %s", self.name, url, response.status,
                        response.body[:120])
            return None
        return response.body

    async def _poll_open_interest(self) -> None:
        feed: Any = self.feed
        while True:
            for sid, url in feed.open_interest_urls():
                try:
                    body = await self._rest(url, 1)
                    if body is not None:
                        feed.on_open_interest(sid, body, time.time_ns(), time.perf_counter_ns())
                except Exception as exc:
                    self._survive("open interest poll", exc)
            await asyncio.sleep(self.cfg.open_interest_poll_s)

    # -- housekeeping -------------------------------------------------------------------
    def _survive(self, what: str, exc: BaseException) -> None:
        """A control-plane step failed: count it, log it, and let the loop go on (a dead
        housekeeping task would silently stop heartbeats, stats and watchdogs)."""
        self.feed.counts[Count.HANDLER_ERRORS] += 1
        log.error("%s: %s failed: %r", self.name, what, exc, exc_info=exc)

    async def _housekeeping(self) -> None:
        next_full = time.monotonic() + self.cfg.full_snapshot_interval_s
        while True:
            await asyncio.sleep(0.1)
            try:
                next_full = self._housekeeping_step(next_full)
            except Exception as exc:
                self._survive("housekeeping", exc)

    def _housekeeping_step(self, next_full: float) -> float:
        for w in self.writers.values():
            w.heartbeat()
        for t in self.tables.values():
            t.heartbeat()
        self.stats.heartbeat()  # the supervisor's liveness signal for this worker
        if self._connecting:
            self._liveness()
        now = time.monotonic()
        if now >= next_full:
            next_full = now + self.cfg.full_snapshot_interval_s
            self._full_snapshots()
        self._write_stats()
        self._log_samples()
        return next_full

    def _liveness(self) -> None:
        """Books silent for ``silent_after_s`` turn STALE; any subscribed channel silent past
        its limit is flagged (a stream on a wrong route is accepted, then never speaks); a
        book stuck resyncing asks again after ``resync_retry_s``."""
        feed = self.feed
        mono = time.perf_counter_ns()
        limit = int(self.cfg.silent_after_s * 1e9)
        for sid, book in feed.books.items():
            if book.state == BookState.LIVE and mono - feed.book_seen.get(sid, mono) > limit:
                feed.mark_stale(sid, time.time_ns(), mono)
                log.warning("%s: %s book silent for %.0f s: STALE", self.name,
                            feed.symbols[sid].symbol, self.cfg.silent_after_s)
            self._retry_resync(sid, book.state)
        up = [c.connected_at_ns for c in self.connections.values() if c.connected]
        if len(up) < len(self.connections):
            return  # silence is expected while a connection is down
        since = max(up) - time.monotonic_ns() + mono  # on the perf_counter clock
        for route, name in feed.expected_channels():
            seconds = self._silence.get(name, 0.0)
            if seconds <= 0:
                continue
            quiet = (mono - max(feed.last_seen.get(route, since), since)) / 1e9
            if quiet > seconds and route not in self._silent:
                self._silent.add(route)
                feed.counts[Count.SILENT_CHANNELS] += 1
                log.warning("%s: channel %s of %s silent for %.0f s", self.name, name,
                            feed.symbols[route[1]].symbol, quiet)
            elif quiet <= seconds and route in self._silent:
                self._silent.discard(route)
                log.info("%s: channel %s of %s speaks again", self.name, name,
                         feed.symbols[route[1]].symbol)

    def _retry_resync(self, sid: int, state: BookState) -> None:
        # SYNCING too: a rejected subscription or a lost snapshot request must not leave a
        # book waiting forever
        if state != BookState.RESYNCING and state != BookState.SYNCING:
            self._resyncing_since.pop(sid, None)
            return
        now = time.monotonic()
        since = self._resyncing_since.setdefault(sid, now)
        pending = any(r.symbol_id == sid for r in self.feed.pending)
        if not pending and now - since > self.cfg.resync_retry_s:
            self._resyncing_since[sid] = now
            log.warning("%s: %s still %s after %.0f s: asking again", self.name,
                        self.feed.symbols[sid].symbol, state.name.lower(),
                        self.cfg.resync_retry_s)
            self.feed.request(self.feed.resync_kind, sid)

    def _full_snapshots(self) -> None:
        feed, recv, mono = self.feed, time.time_ns(), time.perf_counter_ns()
        for sid, book in feed.books.items():
            if book.state == BookState.LIVE:
                self.emitter.full_depth(sid, feed.markets[sid], recv, mono, book)

    def _write_stats(self) -> None:
        feed = self.feed
        live = sum(1 for b in feed.books.values() if b.state == BookState.LIVE)
        up = sum(1 for c in self.connections.values() if c.connected)
        self.stats.update(0, (0, time.time_ns(), os.getpid(), len(self.connections), up,
                              len(feed.books), live, len(self._silent), *feed.counts))

    def _log_samples(self) -> None:
        now = time.monotonic()
        if not self.feed.samples or now - self._last_sample_log < 5.0:
            return
        self._last_sample_log = now
        dropped = max(0, len(self.feed.samples) - 3)
        for _ in range(min(3, len(self.feed.samples))):
            reason, head = self.feed.samples.popleft()
            log.warning("%s: %s: %r", self.name, reason, head)
        self.feed.samples.clear()
        if dropped:
            log.warning("%s: %d more bad-frame samples not shown", self.name, dropped)


def _urls(cls: type[Feed], overrides: dict[str, str]) -> Any:
    try:
        return cls.urls_type(**overrides)
    except TypeError as exc:
        raise FeedError(f"{cls.name}: bad urls {overrides}: {exc}") from None


def warm_kernels() -> None:
    """Compile (or load from cache) every njit kernel before the first frame."""
    from .book import Book

    book = Book(16)
    px = np.array([2.0, 1.0])
    book.apply(px, np.ones(2), px + 10, np.ones(2))
    rows: dict[str, Any] = {}
    from .records import Collector
    for s in FEED_STREAMS:
        rows[s] = Collector(STREAMS[s])
    em = Emitter(1, rows)
    em.depth(0, 1, 0, 0, 0, px, px, px, px, 1, 0, 0, int(BookState.LIVE))
    em.books.apply(book, [(3.0, 1.0)], [(14.0, 1.0)], 0, 1, 0, 0, 0, 1, 0)
    em.book(0, 1, 0, 0, 0, book, 1)


def run_worker(exchange: str, config: Config, duration_s: float | None = None) -> int:
    """Process entry: pin, warm, freeze, serve until SIGTERM/SIGINT (or ``duration_s``)."""
    import signal

    import uvloop

    cfg: ExchangeConfig = getattr(config.exchanges, exchange)
    if cfg.cpu >= 0:
        os.sched_setaffinity(0, {cfg.cpu})
    _feed_class(exchange)   # imports its scanners: their kernels compile (or load) here
    warm_kernels()
    worker = FeedWorker(exchange, cfg, config.engine.instance)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, worker.stop)
        gc.collect()
        gc.freeze()  # start-up objects never need scanning again: shorter GC pauses
        await worker.run(duration_s)

    try:
        uvloop.run(main())
    finally:
        worker.close()
    return 0
