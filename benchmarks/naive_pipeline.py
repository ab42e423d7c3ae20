"""The naive Python pipeline that the benchmarks compare the engine against.

This is the kind of program the engine replaces: one asyncio process, the ``websockets``
client, ``json.loads`` into dicts, order books kept as dicts, and one redis-py ``PUBLISH`` per
output message. It connects to the same local venues as the engine's compare run and does the
same job:

* trades (Binance ``@trade``, Bybit ``publicTrade``, OKX ``trades``) to
  ``{exchange}:{symbol}:trade``;
* Binance ``@bookTicker`` to ``binance:{symbol}:bbo`` (the synthetic Bybit and OKX venues have
  no level-1 topic, and the engine derives no bbo channel for them in this run);
* L2 books under each exchange's sequence rules, checked on every message: Binance USD-M
  ``@depth@100ms`` (or the interval the feed options name) bridged to a REST snapshot and
  chained on ``pu``; Bybit ``orderbook.50`` (or ``.200``...) snapshot then ``u + 1``; OKX
  ``books`` with ``prevSeqId``/``seqId`` (when sent: books before mid-2022 have only the
  checksum) and the CRC32 checksum of every message. A break, a checksum mismatch or a
  crossed book resyncs that symbol (a new snapshot; Bybit/OKX by resubscribing); the top 20
  levels go to
  ``{exchange}:{symbol}:orderbook`` after every applied message, never while syncing.

Why the comparison is fair: same channels, streams and book rules as the engine, same Redis
channels with the same payload fields, and written the way a competent developer writes a
simple asyncio service: the hiredis parser, no per-message logging, the REST snapshot off the
event loop, top-N by ``sorted()`` on the exchanges' 50-level books, venue pings, reconnects.
What it leaves out is exactly what the engine exists for: no batching or pipelining of Redis
commands (one ``await redis.publish`` per message), no shared memory, no compiled decoding, no
numpy, no second process.

Run: ``python benchmarks/naive_pipeline.py --venue binance=WS,REST --venue bybit=WS,REST
--venue okx=WS,REST --symbols 2 --redis URL --seconds S [--uvloop]``; prints the counters as
one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

try:  # imported as benchmarks.naive_pipeline, or run as a script from benchmarks/
    from . import naive_books as nb
except ImportError:
    import naive_books as nb  # type: ignore[no-redef]

__all__ = ["BinanceFeed", "BybitFeed", "Feed", "OkxFeed", "main", "run"]

log = logging.getLogger("naive_pipeline")
PING_INTERVAL_S = 20.0     # Bybit and OKX close connections silent for 30 s
COUNTERS = ("frames", "published", "trades", "bbo", "book_updates", "resyncs",
            "checksum_failures", "malformed")


class Feed:
    """One exchange: a WebSocket connection, its books, Redis output and counters."""

    name = ""
    ping: str | None = None   # the application-level ping text, if the exchange wants one

    def __init__(self, ws_url: str, rest_url: str, symbols: list[str],
                 redis: aioredis.Redis, options: dict[str, Any] | None = None) -> None:
        self.ws_url, self.rest_url, self.symbols = ws_url.rstrip("/"), rest_url, symbols
        self.options = options or {}   # the engine feed's options for the same venue
        self.redis = redis
        self.stats = dict.fromkeys(COUNTERS, 0)
        self.seq: dict[str, int] = {}
        self.ws: ClientConnection | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.stopped = False
        self.reset()

    def url(self) -> str:
        """The WebSocket URL to connect to."""
        raise NotImplementedError

    def subscriptions(self) -> list[str]:
        """Text frames to send after connecting."""
        return []

    def reset(self) -> None:
        """Forget every book (a new connection starts from scratch)."""

    async def handle(self, msg: Any, ts: int) -> None:
        """Handle one decoded frame received at ``ts`` (``time.time_ns()``, the engine's
        wall-clock ``ts_recv_ns``)."""
        raise NotImplementedError

    def spawn(self, coro: Any) -> asyncio.Task[None]:
        """A background task of this feed, cancelled by :meth:`close`."""
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def close(self) -> None:
        """Cancel the feed's background tasks."""
        for task in list(self.tasks):
            task.cancel()

    async def run(self, subscribed: Callable[[], None]) -> None:
        """Connect, subscribe (then call ``subscribed``) and handle frames until :meth:`stop`;
        reconnect a second after the connection drops."""
        while not self.stopped:
            try:
                async with connect(self.url(), max_size=None, compression=None, max_queue=1024,
                                   open_timeout=10, close_timeout=1) as ws:
                    self.ws = ws
                    if self.stopped:  # stop() came while connecting
                        return
                    self.close()
                    self.reset()
                    for frame in self.subscriptions():
                        await ws.send(frame)
                    subscribed()
                    pinger = asyncio.create_task(self._ping(ws)) if self.ping else None
                    try:
                        async for raw in ws:
                            await self.on_frame(raw, time.time_ns())
                    finally:
                        if pinger is not None:
                            pinger.cancel()
            except (OSError, WebSocketException, TimeoutError) as exc:
                if not self.stopped:
                    log.warning("%s: connection failed: %s", self.name, exc)
            if not self.stopped:
                log.warning("%s: reconnecting in 1 s", self.name)
                await asyncio.sleep(1.0)

    async def stop(self) -> None:
        """End :meth:`run`: close the connection (the frame being handled is finished first)
        and cancel the background tasks. Cancelling :meth:`run` instead is not reliable on
        Python 3.11: ``asyncio.wait_for`` (redis-py's socket timeout) can swallow it."""
        self.stopped = True
        self.close()
        if self.ws is not None:
            await self.ws.close()

    async def _ping(self, ws: ClientConnection) -> None:
        with contextlib.suppress(WebSocketException):
            while True:
                await asyncio.sleep(PING_INTERVAL_S)
                await ws.send(self.ping or "")

    async def on_frame(self, raw: str | bytes, ts: int) -> None:
        """Decode and handle one frame; a malformed one is counted and skipped."""
        self.stats["frames"] += 1
        if raw == "pong":  # OKX's answer to the text ping
            return
        try:
            msg = json.loads(raw)
            await self.handle(msg, ts)
        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
            self.stats["malformed"] += 1
            log.debug("%s: malformed frame (%r): %.200r", self.name, exc, raw)

    async def emit(self, symbol: str, event_type: str, body: dict[str, Any], ts: int) -> None:
        """PUBLISH one payload to ``{exchange}:{symbol}:{event_type}``."""
        seq = self.seq[event_type] = self.seq.get(event_type, 0) + 1
        payload = {"exchange": self.name, "symbol": symbol, "event_type": event_type, **body,
                   "seq": seq, "ts_recv_ns": ts}
        await self.redis.publish(f"{self.name}:{symbol}:{event_type}", json.dumps(payload))
        self.stats["published"] += 1

    async def trade(self, symbol: str, price: float, qty: float, side: str, timestamp: int,
                    trade_id: int | str, ts: int) -> None:
        """Publish one trade."""
        self.stats["trades"] += 1
        await self.emit(symbol, "trade", {"price": price, "quantity": qty, "side": side,
                                          "timestamp": timestamp, "trade_id": trade_id}, ts)

    async def publish_book(self, symbol: str, update_id: int, bids: nb.Levels, asks: nb.Levels,
                           timestamp: int, ts: int) -> None:
        """Publish the top ``TOP_N`` levels of a live book."""
        await self.emit(symbol, "orderbook", {
            "last_update_id": update_id, "bids": bids[:nb.TOP_N], "asks": asks[:nb.TOP_N],
            "state": "LIVE", "timestamp": timestamp}, ts)

    async def resubscribe(self, verdict: str, name: str, arg: str | dict[str, str]) -> None:
        """Resync a book after a break (``verdict``): unsubscribe and subscribe its topic
        again; the book (already reset) waits for the snapshot the subscription brings."""
        self.stats["resyncs"] += 1
        log.info("%s: %s resync (%s)", self.name, name, verdict)
        assert self.ws is not None
        for op in ("unsubscribe", "subscribe"):
            await self.ws.send(json.dumps({"op": op, "args": [arg]}))


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


class BinanceFeed(Feed):
    """USD-M futures on the ``/public`` route: ``@trade``, ``@bookTicker``, ``@depth@100ms``
    with the documented REST-snapshot procedure."""

    name = "binance"

    def url(self) -> str:
        depth = _BINANCE_DEPTH[self.options.get("depth_interval_ms", 100)]
        streams = "/".join(f"{s.lower()}@{kind}" for s in self.symbols
                           for kind in ("trade", "bookTicker", depth))
        return f"{self.ws_url}/public/stream?streams={streams}"

    def reset(self) -> None:
        self.depth = {s.lower(): nb.BinanceDepth() for s in self.symbols}
        self.fetching: set[str] = set()   # symbols with a snapshot request on its way

    async def handle(self, msg: Any, ts: int) -> None:
        stream = msg.get("stream")
        if stream is None:  # a reply to a request (none is sent) or an error
            return
        symbol, _, kind = stream.partition("@")
        d = msg["data"]
        if kind == "trade":
            await self.trade(symbol, float(d["p"]), float(d["q"]), "SELL" if d["m"] else "BUY",
                             d["T"], d["t"], ts)
        elif kind == "bookTicker":
            self.stats["bbo"] += 1
            await self.emit(symbol, "bbo", {
                "bid_price": float(d["b"]), "bid_quantity": float(d["B"]),
                "ask_price": float(d["a"]), "ask_quantity": float(d["A"]), "update_id": d["u"],
                "timestamp": d["T"]}, ts)
        elif kind.startswith("depth"):
            s = self.depth[symbol]
            verdict = s.on_event(d, ts)
            if verdict == nb.APPLIED:
                self.stats["book_updates"] += 1
                await self.publish_book(symbol, s.last_u, *s.top, d["E"], ts)
            elif verdict != nb.STALE:
                self._resync(symbol, verdict)

    def _resync(self, symbol: str, verdict: str) -> None:
        """Count a break; make sure a snapshot is on its way (WAIT: the first sync)."""
        if verdict != nb.WAIT:
            self.stats["resyncs"] += 1
            log.info("binance: %s resync (%s)", symbol, verdict)
        if symbol not in self.fetching:
            self.fetching.add(symbol)
            self.spawn(self._snapshot(symbol, self.depth[symbol]))

    async def _snapshot(self, symbol: str, s: nb.BinanceDepth) -> None:
        """Get REST snapshots (off the event loop) until one bridges or waits for the bridge."""
        url = f"{self.rest_url}/fapi/v1/depth?symbol={symbol.upper()}&limit=1000"
        verdict, last = nb.GAP, None
        while verdict in (nb.GAP, nb.CROSSED) and not self.stopped:
            try:
                body = await asyncio.to_thread(_get_json, url)
                verdict, last = s.on_snapshot(body)
            except (OSError, ValueError, KeyError, TypeError) as exc:  # HTTPError is an OSError
                log.warning("binance: %s snapshot failed: %s", symbol, exc)
                await asyncio.sleep(1.0)
                continue
            if verdict in (nb.GAP, nb.CROSSED):
                self.stats["resyncs"] += 1
        self.fetching.discard(symbol)
        if last is not None:
            d, ts = last
            self.stats["book_updates"] += 1
            await self.publish_book(symbol, s.last_u, *s.top, d["E"], ts)


class BybitFeed(Feed):
    """v5 linear: ``publicTrade`` and ``orderbook.50`` (snapshot, then deltas with ``u + 1``)."""

    name = "bybit"
    ping = '{"op":"ping"}'

    def url(self) -> str:
        return self.ws_url + "/v5/public/linear"

    def subscriptions(self) -> list[str]:
        levels = self.options.get("depth_levels", 50)
        topics = [t for s in self.symbols
                  for t in (f"orderbook.{levels}.{s}", f"publicTrade.{s}")]
        return [json.dumps({"op": "subscribe", "args": topics[i:i + 10]})
                for i in range(0, len(topics), 10)]  # at most 10 args per request

    def reset(self) -> None:
        self.books = {s: nb.BybitBook() for s in self.symbols}

    async def handle(self, msg: Any, ts: int) -> None:
        topic = msg.get("topic")
        if topic is None:  # subscribe acks, pongs
            if msg.get("success") is False:
                log.warning("bybit: %s", msg.get("ret_msg"))
            return
        if topic.startswith("publicTrade."):
            symbol = topic[len("publicTrade."):].lower()
            for t in msg["data"]:
                await self.trade(symbol, float(t["p"]), float(t["v"]), t["S"].upper(), t["T"],
                                 t["i"], ts)
        elif topic.startswith("orderbook."):
            d = msg["data"]
            name = d["s"]
            book = self.books[name]
            verdict = book.on_message(msg["type"], d)
            if verdict == nb.APPLIED:
                self.stats["book_updates"] += 1
                await self.publish_book(name.lower(), book.last_u, *book.top, msg["ts"], ts)
            elif verdict != nb.WAIT:
                await self.resubscribe(verdict, name, topic)


class OkxFeed(Feed):
    """v5 public: ``trades`` and ``books`` (``prevSeqId``/``seqId`` chain, checksum verified on
    every message); sizes in contracts, as given."""

    name = "okx"
    ping = "ping"

    def url(self) -> str:
        return self.ws_url + "/ws/v5/public"

    def subscriptions(self) -> list[str]:
        if self.options.get("book_channel", "books") != "books":
            raise ValueError(f"okx: the naive pipeline keeps 'books' only, not "
                             f"{self.options['book_channel']!r}")
        args = [{"channel": c, "instId": s} for s in self.symbols for c in ("books", "trades")]
        return [json.dumps({"op": "subscribe", "args": args})]

    def reset(self) -> None:
        self.books = {s: nb.OkxBook() for s in self.symbols}

    async def handle(self, msg: Any, ts: int) -> None:
        if "event" in msg:  # subscribe/unsubscribe acks, errors
            if msg["event"] == "error":
                log.warning("okx: %s %s", msg.get("code"), msg.get("msg"))
            return
        arg = msg["arg"]
        channel, inst = arg["channel"], arg["instId"]
        if channel == "trades":
            for t in msg["data"]:
                await self.trade(inst.lower(), float(t["px"]), float(t["sz"]), t["side"].upper(),
                                 int(t["ts"]), int(t["tradeId"]), ts)
        elif channel == "books":
            book = self.books[inst]
            for d in msg["data"]:
                verdict = book.on_message(msg["action"], d)
                if verdict == nb.APPLIED:
                    self.stats["book_updates"] += 1
                    uid = d.get("seqId", int(d["ts"]))   # as the engine: ts without seqId
                    await self.publish_book(inst.lower(), uid, *book.top, int(d["ts"]), ts)
                elif verdict != nb.WAIT:
                    self.stats["checksum_failures"] += verdict == nb.CHECKSUM
                    await self.resubscribe(verdict, inst, {"channel": "books", "instId": inst})
                    break


FEEDS: dict[str, type[Feed]] = {"binance": BinanceFeed, "bybit": BybitFeed, "okx": OkxFeed}
_BINANCE_DEPTH = {250: "depth", 500: "depth@500ms", 100: "depth@100ms", 0: "depth@0ms"}


async def run(venues: dict[str, tuple[str, str]], symbols: dict[str, list[str]],
              redis_url: str, seconds: float, ready: Callable[[], None] | None = None,
              stop: asyncio.Event | None = None,
              options: dict[str, dict[str, Any]] | None = None,
              feeds_out: list[Feed] | None = None) -> dict[str, Any]:
    """Run the pipeline for ``seconds`` (or until ``stop`` is set) and return its counters.

    ``venues``: exchange → (WebSocket base URL, REST base URL); ``symbols``: exchange → its
    exchange-native symbols; ``redis_url``: ``redis://host:port/db`` or ``unix:///path``;
    ``options``: exchange → the engine feed's options for the same venue (the Binance
    ``depth_interval_ms``, the Bybit ``depth_levels``; OKX takes ``books`` only). ``ready``
    is called once, when every connection has subscribed. Counters: ``frames``,
    ``published``, ``trades``, ``bbo``, ``book_updates``, ``resyncs``, ``checksum_failures``,
    ``malformed`` (sums), ``per_exchange`` (the same per exchange), ``elapsed_s`` and
    ``cpu_s`` (wall and CPU time of this process from the start to the stop, not counting
    the shutdown). ``feeds_out``, if given, receives the feeds as soon as they exist, so that
    another thread can read their live ``stats``.
    """
    client = aioredis.from_url(redis_url)
    feeds = [FEEDS[name](ws, rest, symbols[name], client, (options or {}).get(name))
             for name, (ws, rest) in venues.items()]
    if feeds_out is not None:
        feeds_out.extend(feeds)
    waiting = {f.name for f in feeds}

    def subscribed(name: str) -> None:
        if name in waiting:
            waiting.discard(name)
            if not waiting and ready is not None:
                ready()

    start, cpu = time.perf_counter(), time.process_time()
    tasks = [asyncio.create_task(f.run(lambda n=f.name: subscribed(n))) for f in feeds]
    try:
        await client.ping()
        stopper = asyncio.create_task(stop.wait()) if stop is not None else None
        done, _ = await asyncio.wait(tasks + ([stopper] if stopper else []), timeout=seconds,
                                     return_when=asyncio.FIRST_COMPLETED)
        if stopper is not None:
            stopper.cancel()
        for task in done:
            if task is not stopper:
                task.result()  # a feed only ends by raising (e.g. Redis gone): raise it here
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    finally:
        await asyncio.gather(*(f.stop() for f in feeds), return_exceptions=True)
        _, late = await asyncio.wait(tasks, timeout=5.0)
        for task in late:  # not ended by stop(): a connection attempt, say
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await client.aclose()
    per = {f.name: dict(f.stats) for f in feeds}
    out: dict[str, Any] = {k: sum(p[k] for p in per.values()) for k in COUNTERS}
    out.update(per_exchange=per, elapsed_s=round(elapsed, 3), cpu_s=round(cpu, 3))
    return out


def main(argv: list[str] | None = None) -> int:
    """CLI: run against the given venues for ``--seconds`` and print the counters (JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--venue", action="append", required=True, metavar="EXCHANGE=WS,REST",
                        help="a venue's WebSocket and REST base URLs (repeat per exchange)")
    parser.add_argument("--symbols", type=int, default=2,
                        help="how many of the synthetic market's symbols to take (default 2)")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0",
                        help="redis://host:port/db or unix:///path/to/socket")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--uvloop", action="store_true",
                        help="run on uvloop (default: the plain asyncio loop)")
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="naive: %(message)s")
    from workers.venue.synthetic import synthetic_symbols

    venues: dict[str, tuple[str, str]] = {}
    for spec in args.venue:
        name, _, urls = spec.partition("=")
        ws, _, rest = urls.partition(",")
        if name not in FEEDS or not ws:
            parser.error(f"--venue {spec!r}: want EXCHANGE=WS,REST with EXCHANGE one of "
                         f"{', '.join(FEEDS)}")
        venues[name] = (ws, rest)
    symbols = {name: synthetic_symbols(name, args.symbols) for name in venues}
    coro = run(venues, symbols, args.redis, args.seconds)
    if args.uvloop:
        import uvloop

        counters = uvloop.run(coro)
    else:
        counters = asyncio.run(coro)
    print(json.dumps(counters), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
