"""Binance spot and USD-M futures feed: combined streams into trades, BBO, books, liquidations,
mark/funding and (REST-polled) open interest.

USD-M streams use the routed endpoints (DESIGN.md section 5): ``@depth``, ``@bookTicker`` and
``@trade`` on ``/public``, ``@aggTrade``, ``@markPrice`` and ``@forceOrder`` on ``/market``.
Frames are routed on their stream name (the bytes after ``{"stream":"``) before the one typed
decode. Books follow :mod:`binance_sync`: events are buffered until the REST snapshot the feed
requested arrives (``on_snapshot``), bridged, then chained on every event.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import msgspec

from shm.layout import BookState, Exchange, Side

from .binance_scan import scan_binance_trade
from .binance_sync import BinanceDepthSync, Verdict
from .binance_wire import (
    AggTrade,
    BookTicker,
    Combined,
    DepthUpdate,
    ForceOrder,
    MarkPrice,
    Trade,
    decode_control,
    decode_open_interest,
    decode_snapshot,
    levels,
)
from .book import BookOverflow
from .book_commit import APPLIED, OVERFLOW
from .feed import ConnectionSpec, Count, Feed, FeedError, RepeatFilter, SymbolSpec
from .json_scan import DECLINED
from .records import Emitter

__all__ = ["BinanceFeed", "BinanceUrls"]

_PREFIX = b'{"stream":"'
_MS = 1_000_000
_NAN = float("nan")
_MAX_BUFFERED = 10_000  # depth events kept per symbol while a snapshot is on its way
# the diff-depth stream names each market documents, by update interval (ms)
_DEPTH_STREAMS = {"spot": {1000: "@depth", 100: "@depth@100ms"},
                  "linear": {250: "@depth", 500: "@depth@500ms", 100: "@depth@100ms",
                             0: "@depth@0ms"}}

(_DEPTH, _BBO, _TRADE, _AGG, _MARK, _LIQ) = range(6)
# plain ints on the hot path: an IntEnum member lookup costs more than the work it labels
_BUY, _SELL, _DUPLICATES = int(Side.BUY), int(Side.SELL), int(Count.DUPLICATES)
_LIVE = int(BookState.LIVE)
_DECODERS = [msgspec.json.Decoder(Combined[t], strict=False).decode  # type: ignore[valid-type]
             for t in (DepthUpdate, BookTicker, Trade, AggTrade, MarkPrice, ForceOrder)]


class BinanceUrls(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Endpoints (the real ones by default; tests point them at the local venue)."""

    spot_ws: str = "wss://stream.binance.com:9443"
    futures_ws: str = "wss://fstream.binance.com"
    spot_rest: str = "https://api.binance.com"
    futures_rest: str = "https://fapi.binance.com"


class BinanceFeed(Feed):
    """Binance spot (market ``spot``) and USD-M futures (market ``linear``)."""

    name = "binance"
    exchange = Exchange.BINANCE
    urls_type = BinanceUrls
    CHANNELS = ("book", "bbo", "trades", "trades", "mark", "liquidations")
    resync_kind = "snapshot"

    def __init__(self, symbols: list[SymbolSpec], emitter: Emitter,
                 urls: BinanceUrls | None = None, depth_interval_ms: int = 100,
                 trade_stream: str = "trade", snapshot_limit: int = 1000,
                 max_connection_age_s: float = 23 * 3600.0, book_capacity: int = 8192) -> None:
        super().__init__(symbols, emitter, book_capacity)
        for s in symbols:
            if s.market not in ("spot", "linear"):
                raise FeedError(f"binance: {s.symbol} market {s.market!r}: only spot and "
                                "linear (USD-M) are supported")
            if s.market == "spot" and set(s.streams) & {"liquidations", "funding",
                                                        "open_interest"}:
                raise FeedError(f"binance: {s.symbol} spot has no liquidations, funding or "
                                "open interest streams")
        if trade_stream not in ("trade", "aggTrade"):
            raise FeedError(f"binance: trade_stream must be trade or aggTrade, not "
                            f"{trade_stream!r}")
        markets = {s.market for s in symbols if s.wants_book}
        for market in markets:
            if depth_interval_ms not in _DEPTH_STREAMS[market]:
                raise FeedError(f"binance: depth_interval_ms {depth_interval_ms} is not offered "
                                f"for {market}: one of {sorted(_DEPTH_STREAMS[market])}")
        self.urls = urls or BinanceUrls()
        self.snapshot_limit = snapshot_limit
        self.max_connection_age_s = max_connection_age_s
        self.sync = {sid: BinanceDepthSync(futures=self.symbols[sid].market == "linear")
                     for sid in self.books}
        # depth events waiting for a snapshot; the oldest go first when full (if they were
        # needed, the bridge fails and the symbol resyncs again)
        self.buffered: dict[int, deque[tuple[DepthUpdate, int, int]]] = {
            sid: deque(maxlen=_MAX_BUFFERED) for sid in self.books}
        # repeats while a rotation overlaps two connections (outside one the exchange never
        # repeats): trades by id, bookTicker by u, markPrice and forceOrder by event time;
        # depth events ahead of the chain wait in `_ahead` for the other connection's
        sids = list(self.symbols)
        self._trades, self._tickers = RepeatFilter(sids), RepeatFilter(sids)
        self._marks, self._liqs = RepeatFilter(sids), RepeatFilter(sids)
        self._filters = (self._trades, self._tickers, self._marks, self._liqs)
        self._ahead: dict[int, list[tuple[DepthUpdate, int, int]]] = {sid: [] for sid in
                                                                      self.books}
        self._held_trades: dict[int, dict[int, tuple[Any, ...]]] = {sid: {} for sid in sids}
        self._next_trade = dict.fromkeys(sids, -1)   # next trade id to emit during an overlap
        # connection key -> stream name -> (kind, symbol id, market)
        self._routes: dict[str, dict[bytes, tuple[int, int, int]]] = {}
        for s in symbols:
            low, sid, mk = s.symbol.lower(), s.symbol_id, self.markets[s.symbol_id]
            want = set(s.streams)
            spot = s.market == "spot"
            trade_kind = _AGG if trade_stream == "aggTrade" else _TRADE
            depth = _DEPTH_STREAMS[s.market].get(depth_interval_ms, "")
            for stream, kind, route, needed in (
                    (depth, _DEPTH, "public", s.wants_book),
                    ("@bookTicker", _BBO, "public", "bbo" in want),
                    (f"@{trade_stream}", trade_kind,
                     "market" if trade_stream == "aggTrade" else "public", "trades" in want),
                    ("@markPrice@1s", _MARK, "market", "funding" in want),
                    ("@forceOrder", _LIQ, "market", "liquidations" in want)):
                if needed:
                    conn = "spot" if spot else route
                    self._routes.setdefault(conn, {})[(low + stream).encode()] = (kind, sid, mk)
        self._fast_trades = self._trade_routes(trade_stream)   # binance_scan
        # offline replay has no connections: route on the stream name alone
        self._any_route = {k: v for routes in self._routes.values() for k, v in routes.items()}

    @classmethod
    def discover(cls, frames: list[bytes], market: str | None = None
                 ) -> tuple[list[SymbolSpec], dict[str, Any]]:
        """Symbols and streams of a combined-stream capture. USD-M when depth events carry
        ``pu`` or futures-only streams appear, spot otherwise."""
        kinds: dict[str, set[str]] = {}
        futures, agg, interval = False, False, 100
        for frame in frames:
            if not frame.startswith(_PREFIX):
                continue
            name = frame[11:frame.find(b'"', 11)].decode()
            sym, _, kind = name.partition("@")
            stream = {"depth": "depth", "bookTicker": "bbo", "trade": "trades",
                      "aggTrade": "trades", "markPrice@1s": "funding",
                      "forceOrder": "liquidations"}.get(kind)
            if kind.startswith("depth"):
                stream = "depth"
                interval = int(kind[6:-2]) if kind.startswith("depth@") else -1  # plain
                futures = futures or b'"pu":' in frame
            if stream is None:
                continue
            futures = futures or stream in ("funding", "liquidations") or (
                stream == "bbo" and b'"e":"bookTicker"' in frame)
            agg = agg or kind == "aggTrade"
            kinds.setdefault(sym.upper(), set()).add(stream)
        mk = market or ("linear" if futures else "spot")
        if interval == -1:
            interval = 1000 if mk == "spot" else 250
        symbols = [SymbolSpec(sym, mk, tuple(sorted(s | {"book"} if "depth" in s else s)), i)
                   for i, (sym, s) in enumerate(sorted(kinds.items()))]
        return symbols, {"trade_stream": "aggTrade" if agg else "trade",
                         "depth_interval_ms": interval}

    # -- control plane ------------------------------------------------------------------
    def connections(self) -> list[ConnectionSpec]:
        """One combined-stream connection per route in use (spot, /public, /market)."""
        out = []
        for conn, routes in self._routes.items():
            streams = "/".join(sorted(k.decode() for k in routes))
            base = self.urls.spot_ws if conn == "spot" else f"{self.urls.futures_ws}/{conn}"
            books = tuple(sorted({sid for kind, sid, _ in routes.values() if kind == _DEPTH}))
            out.append(ConnectionSpec(conn, f"{base}/stream?streams={streams}",
                                      symbol_ids=books,
                                      max_lifetime_s=self.max_connection_age_s))
        return out

    def snapshot_url(self, sid: int) -> tuple[str, int]:
        """REST depth snapshot URL for ``sid`` and its request weight."""
        spec = self.symbols[sid]
        limit = self.snapshot_limit
        if spec.market == "spot":
            weight = 5 if limit <= 100 else 25 if limit <= 500 else 50 if limit <= 1000 else 250
            return (f"{self.urls.spot_rest}/api/v3/depth?symbol={spec.symbol}&limit={limit}",
                    weight)
        weight = 2 if limit <= 50 else 5 if limit <= 100 else 10 if limit <= 500 else 20
        return (f"{self.urls.futures_rest}/fapi/v1/depth?symbol={spec.symbol}&limit={limit}",
                weight)

    def open_interest_urls(self) -> list[tuple[int, str]]:
        """REST URLs to poll for USD-M open interest (Binance has no stream for it)."""
        return [(s.symbol_id, f"{self.urls.futures_rest}/fapi/v1/openInterest?symbol="
                 f"{s.symbol}") for s in self.symbols.values()
                if s.market == "linear" and "open_interest" in s.streams]

    def on_snapshot(self, sid: int, body: bytes, recv: int, mono: int) -> bool:
        """Apply a REST depth snapshot body, then the buffered events; False if unusable."""
        try:
            snap = decode_snapshot(body)
        except (msgspec.DecodeError, ValueError) as exc:
            self.bad(Count.REST_REJECTED, body, exc)
            return False
        book = self.books[sid]
        book.clear()
        try:
            book.apply(*levels(snap.bids), *levels(snap.asks))
        except BookOverflow:
            self.resync(sid, Count.OVERFLOWS, recv, mono)
            return False
        self.counts[Count.SNAPSHOTS] += 1
        if book.state != BookState.RESYNCING:
            book.state = BookState.SYNCING
        self.sync[sid].on_snapshot(snap.lastUpdateId)
        pending, self.buffered[sid] = self.buffered[sid], deque(maxlen=_MAX_BUFFERED)
        for event, r, m in pending:
            self._depth(sid, event, r, m)
        return True

    def on_open_interest(self, sid: int, body: bytes, recv: int, mono: int) -> None:
        """Commit a REST ``/fapi/v1/openInterest`` answer."""
        try:
            oi = decode_open_interest(body)
        except (msgspec.DecodeError, ValueError) as exc:
            self.bad(Count.REST_REJECTED, body, exc)
            return
        self.emitter.open_interest(sid, self.markets[sid], oi.time * _MS, recv, mono,
                                   oi.openInterest, _NAN)

    def _reset_sequence(self, sid: int) -> None:
        self.sync[sid].reset()
        self.buffered[sid].clear()
        self._ahead[sid].clear()

    # -- hot path -----------------------------------------------------------------------
    def _on_frame(self, conn: str, data: bytes, recv: int, mono: int) -> None:
        if not data.startswith(_PREFIX):
            self._control(data)
            return
        end = data.find(b'"', 11)
        route = self._routes.get(conn, self._any_route).get(data[11:end])
        if route is None:
            self.bad(Count.UNKNOWN_FRAMES, data)
            return
        self.last_seen[route] = mono
        kind, sid, mk = route
        if kind == _TRADE or kind == _AGG:
            fast = self._fast_trades.get(sid, 0)
            if fast and not self.overlap:   # compiled: scan, fill and commit in one call
                tid = scan_binance_trade(data, end, fast, recv, mono)
                if tid != DECLINED:
                    if tid > self._trades.last[sid]:   # the rotation floor
                        self._trades.last[sid] = tid
                    return
        ev: Any = _DECODERS[kind](data).data
        em = self.emitter
        if kind == _TRADE:
            if self.overlap:
                self._overlap_trade(sid, (sid, mk, ev.T * _MS, recv, mono, ev.p, ev.q, ev.t,
                                          _SELL if ev.m else _BUY, 0))
                return
            if ev.t > self._trades.last[sid]:  # the rotation floor (ids rise per symbol)
                self._trades.last[sid] = ev.t
            em.trade(sid, mk, ev.T * _MS, recv, mono, ev.p, ev.q, ev.t, _SELL if ev.m else _BUY,
                     0)
        elif kind == _BBO:
            if self.overlap and self._tickers.repeat(sid, ev.u):
                self.counts[_DUPLICATES] += 1
                return
            self._tickers.last[sid] = max(ev.u, self._tickers.last[sid])
            em.bbo(sid, mk, ev.E * _MS, recv, mono, ev.b, ev.B, ev.a, ev.A, ev.u)
        elif kind == _DEPTH:
            self._depth(sid, ev, recv, mono)
        elif kind == _AGG:
            if self.overlap:
                self._overlap_trade(sid, (sid, mk, ev.T * _MS, recv, mono, ev.p, ev.q, ev.a,
                                          _SELL if ev.m else _BUY, 0))
                return
            if ev.a > self._trades.last[sid]:
                self._trades.last[sid] = ev.a
            em.trade(sid, mk, ev.T * _MS, recv, mono, ev.p, ev.q, ev.a, _SELL if ev.m else _BUY,
                     0)
        elif kind == _MARK:
            if self.overlap and self._marks.repeat(sid, ev.E):
                self.counts[_DUPLICATES] += 1
                return
            self._marks.last[sid] = max(ev.E, self._marks.last[sid])
            em.funding(sid, mk, ev.E * _MS, recv, mono, ev.p, ev.i, ev.r, _NAN, ev.T * _MS)
        else:
            if self.overlap and self._liqs.repeat(sid, ev.E):
                self.counts[_DUPLICATES] += 1
                return
            self._liqs.last[sid] = max(ev.E, self._liqs.last[sid])
            o = ev.o
            filled = o.z > 0
            em.liquidation(sid, mk, (o.T or ev.E) * _MS, recv, mono,
                           o.ap if filled and o.ap > 0 else o.p, o.z if filled else o.q,
                           _BUY if o.S == "BUY" else _SELL)

    def _depth(self, sid: int, ev: DepthUpdate, recv: int, mono: int) -> None:
        self.book_seen[sid] = mono
        verdict = self.sync[sid].check(ev.U, ev.u, ev.pu, self.overlap > 0)
        if verdict == Verdict.APPLY:
            self._apply(sid, ev, recv, mono)
            if self._ahead[sid]:
                self._drain_ahead(sid)
        elif verdict == Verdict.BUFFER:
            self.counts[Count.BUFFERED] += 1
            self.buffered[sid].append((ev, recv, mono))
            self.request("snapshot", sid)
        elif verdict == Verdict.STALE:
            self.counts[Count.STALE_EVENTS] += 1
        elif self.overlap and len(self._ahead[sid]) < _MAX_BUFFERED:
            self._ahead[sid].append((ev, recv, mono))  # the other connection fills the hole
        else:
            self.resync(sid, Count.GAPS, recv, mono)

    def _overlap_trade(self, sid: int, args: tuple[Any, ...]) -> None:
        """A trade while two connections overlap: drop repeats, and keep ids in order (trade
        ids are consecutive per symbol): one that overtook its predecessor waits for it."""
        tid = args[7]
        if self._trades.repeat(sid, tid):
            self.counts[_DUPLICATES] += 1
            return
        held = self._held_trades[sid]
        expected = self._next_trade[sid]
        if expected >= 0 and tid != expected:
            held[tid] = args
            return
        self.emitter.trade(*args)
        tid += 1
        while tid in held:
            self.emitter.trade(*held.pop(tid))
            tid += 1
        self._next_trade[sid] = tid

    def _drain_ahead(self, sid: int) -> None:
        """Apply the events that waited for the chain to reach them (in update-id order)."""
        pending = self._ahead[sid]
        pending.sort(key=lambda item: item[0].u)
        sync = self.sync[sid]
        while pending:
            ev, recv, mono = pending[0]
            verdict = sync.check(ev.U, ev.u, ev.pu, True)
            if verdict != Verdict.APPLY and verdict != Verdict.STALE:
                return  # still a hole before it
            del pending[0]
            if verdict == Verdict.APPLY:
                self._apply(sid, ev, recv, mono)  # a resync in here empties `pending`

    def end_overlap(self, recv: int, mono: int) -> None:
        """The overlap is over: repeat filters forget; a depth event still waiting for its
        predecessor means a real gap."""
        super().end_overlap(recv, mono)
        if self.overlap:
            return
        for f in self._filters:
            f.end()
        for held in self._held_trades.values():  # their predecessors never came: a hole
            for tid in sorted(held):
                self.emitter.trade(*held[tid])
            held.clear()
        for sid, pending in self._ahead.items():
            if pending:
                self._drain_ahead(sid)
            if pending:
                pending.clear()
                self.resync(sid, Count.GAPS, recv, mono)

    def begin_overlap(self) -> None:
        """A rotation starts: what was delivered so far becomes each filter's floor."""
        if not self.overlap:
            for f in self._filters:
                f.begin()
            for sid, last in self._trades.last.items():
                self._next_trade[sid] = last + 1 if last >= 0 else -1
        super().begin_overlap()

    def _apply(self, sid: int, ev: DepthUpdate, recv: int, mono: int) -> None:
        """Apply an event the sync accepted, check the book, publish depth and top-N."""
        book = self.books[sid]
        mk = self.markets[sid]
        # the snapshot plus this event: depth consumers get the whole book instead
        bridged = book.state != BookState.LIVE and book.state != BookState.STALE
        prev = ev.pu if self.sync[sid].futures else ev.U - 1
        result = self.emitter.books.apply(book, ev.b, ev.a, sid, mk, ev.E * _MS, recv, mono,
                                          ev.u, prev, 0, not bridged)
        if result != APPLIED:
            self.resync(sid, Count.OVERFLOWS if result == OVERFLOW else Count.CROSSED, recv,
                        mono)
        elif bridged:
            self.emitter.full_depth(sid, mk, recv, mono, book)

    def _control(self, data: bytes) -> None:
        msg = decode_control(data)
        if msg.error is not None:
            self.bad(Count.EXCHANGE_ERRORS, data, f"code {msg.error.code}: {msg.error.msg}")
        else:
            self.counts[Count.CONTROL_FRAMES] += 1
