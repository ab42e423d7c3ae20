"""Bybit v5 public feed, linear (USDT perpetuals) and spot: books, BBO, trades, liquidations,
mark/funding and open interest.

One connection per market (``/v5/public/linear``, ``/v5/public/spot``), topics per symbol:
``orderbook.{depth}`` for the book, ``orderbook.1`` for the BBO (level 1 comes as repeated
snapshots), ``publicTrade``, ``tickers`` (linear: mark/index/funding and open interest, merged
from a snapshot and deltas by :class:`TickerState`) and ``allLiquidation`` (linear). Data frames
start with ``{"topic":"``: they are routed on the topic bytes, then decoded once into their type.
Books follow :mod:`bybit_sync` (DESIGN.md section 5): a snapshot (or ``u == 1``) resets, a delta
must continue ``u``; a break resyncs that symbol alone by resubscribing its book topic.
"""

from __future__ import annotations

from typing import Any

import msgspec

from shm.layout import FLAG_ID_HASHED, FLAG_SNAPSHOT, BookState, Exchange

from .book_commit import APPLIED, OVERFLOW
from .bybit_sync import FUNDING, OPEN_INTEREST, BybitBookSync, TickerState, Verdict
from .bybit_wire import (
    BookData,
    Envelope,
    Liquidation,
    Push,
    Trade,
    aggressor_side,
    decode_envelope,
    decode_ticker,
    liquidation_order_side,
    trade_id,
)
from .feed import ConnectionSpec, Count, Feed, FeedError, SymbolSpec
from .json_scan import DECLINED
from .push_scan import scan_push_trades
from .records import Emitter

__all__ = ["BybitFeed", "BybitUrls"]

_PREFIX = b'{"topic":"'
_MS = 1_000_000
_NAN = float("nan")
_LIVE = BookState.LIVE
_ARGS_PER_FRAME = 10      # Bybit spot rejects a subscribe request with more than 10 args
_DEPTHS = {"linear": (50, 200, 500, 1000), "spot": (50, 200, 1000)}
_DERIVATIVE_STREAMS = {"liquidations", "funding", "open_interest"}

(_BOOK, _BBO, _TRADE, _TICKER, _LIQ) = range(5)
_decode_book = msgspec.json.Decoder(Push[BookData], strict=False).decode
_decode_trades = msgspec.json.Decoder(Push[list[Trade]], strict=False).decode
_decode_liquidations = msgspec.json.Decoder(Push[list[Liquidation]], strict=False).decode
_json = msgspec.json.Encoder()


class BybitUrls(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Endpoints (the real ones by default; tests point them at the local venue)."""

    linear_ws: str = "wss://stream.bybit.com/v5/public/linear"
    spot_ws: str = "wss://stream.bybit.com/v5/public/spot"


class BybitFeed(Feed):
    """Bybit v5 linear (market ``linear``) and spot (market ``spot``)."""

    name = "bybit"
    exchange = Exchange.BYBIT
    urls_type = BybitUrls
    CHANNELS = ("book", "bbo", "trades", "ticker", "liquidations")
    resync_kind = "resubscribe"

    def __init__(self, symbols: list[SymbolSpec], emitter: Emitter,
                 urls: BybitUrls | None = None, depth_levels: int = 200,
                 book_capacity: int = 8192) -> None:
        super().__init__(symbols, emitter, book_capacity)
        for s in symbols:
            if s.market not in _DEPTHS:
                raise FeedError(f"bybit: {s.symbol} market {s.market!r}: only linear and spot "
                                "are supported")
            if s.market == "spot" and _DERIVATIVE_STREAMS & set(s.streams):
                raise FeedError(f"bybit: {s.symbol} spot has no liquidations, funding or open "
                                "interest streams")
            if depth_levels not in _DEPTHS[s.market]:
                raise FeedError(f"bybit: depth_levels {depth_levels} is not one of "
                                f"{', '.join(map(str, _DEPTHS[s.market]))} ({s.market})")
        self.urls = urls or BybitUrls()
        self.depth_levels = depth_levels
        self.sync = {sid: BybitBookSync() for sid in self.books}
        self.tickers: dict[int, TickerState] = {}
        self._last_bbo = dict.fromkeys(self.symbols, -1)  # u of the last level-1 message
        self._ticker_wants: dict[int, int] = {}   # sid -> FUNDING | OPEN_INTEREST to emit
        # connection key (= market) -> topic -> (kind, symbol id, market id)
        self._routes: dict[str, dict[bytes, tuple[int, int, int]]] = {}
        for s in symbols:
            sid, mk, want = s.symbol_id, self.markets[s.symbol_id], set(s.streams)
            wants = (FUNDING if "funding" in want else 0) | (
                OPEN_INTEREST if "open_interest" in want else 0)
            for topic, kind, needed in ((f"orderbook.{depth_levels}", _BOOK, s.wants_book),
                                        ("orderbook.1", _BBO, "bbo" in want),
                                        ("publicTrade", _TRADE, "trades" in want),
                                        ("tickers", _TICKER, wants != 0),
                                        ("allLiquidation", _LIQ, "liquidations" in want)):
                if needed:
                    routes = self._routes.setdefault(s.market, {})
                    routes[f"{topic}.{s.symbol}".encode()] = (kind, sid, mk)
            if wants:
                self.tickers[sid], self._ticker_wants[sid] = TickerState(), wants
        self._fast_trades = self._trade_routes("bybit")   # push_scan
        # offline replay has no connections: route on the topic alone (a capture holds one
        # market, so topics cannot collide across connections there)
        self._any_route = {k: v for routes in self._routes.values() for k, v in routes.items()}

    @classmethod
    def discover(cls, frames: list[bytes], market: str | None = None
                 ) -> tuple[list[SymbolSpec], dict[str, Any]]:
        """Symbols and streams from the topics of a capture (linear unless ``market`` says
        otherwise). ``orderbook.N`` with N > 1 is the book (the deepest one seen sets
        ``depth_levels``), ``orderbook.1`` the BBO; klines and the like are not ours."""
        mk = market or "linear"
        kinds: dict[str, set[str]] = {}
        depth = 0
        for frame in frames:
            if not frame.startswith(_PREFIX):
                continue
            topic = frame[10:frame.find(b'"', 10)].decode(errors="replace")
            channel, _, sym = topic.rpartition(".")
            streams: tuple[str, ...] = ()
            if channel.startswith("orderbook."):
                n = int(channel[10:]) if channel[10:].isdigit() else 0
                streams = ("bbo",) if n == 1 else ("depth", "book") if n > 1 else ()
                depth = max(depth, n)
            elif channel == "publicTrade":
                streams = ("trades",)
            elif mk == "linear":
                streams = {"tickers": ("funding", "open_interest"),
                           "allLiquidation": ("liquidations",)}.get(channel, ())
            if streams and sym:
                kinds.setdefault(sym, set()).update(streams)
        symbols = [SymbolSpec(sym, mk, tuple(sorted(s)), i)
                   for i, (sym, s) in enumerate(sorted(kinds.items()))]
        return symbols, {"depth_levels": depth} if depth > 1 else {}

    # -- control plane ------------------------------------------------------------------
    def connections(self) -> list[ConnectionSpec]:
        """One connection per market in use; its topics in subscribe frames of ≤ 10 args."""
        out = []
        for key, routes in self._routes.items():
            topics = [t.decode() for t in routes]
            chunks = [topics[i:i + _ARGS_PER_FRAME]
                      for i in range(0, len(topics), _ARGS_PER_FRAME)]
            frames = tuple(_json.encode({"op": "subscribe", "req_id": f"{key}-{n}", "args": args})
                           for n, args in enumerate(chunks))
            books = tuple(sorted({sid for kind, sid, _ in routes.values() if kind == _BOOK}))
            url = self.urls.spot_ws if key == "spot" else self.urls.linear_ws
            out.append(ConnectionSpec(key, url, frames, books, ping=b'{"op":"ping"}',
                                      ping_interval_s=20.0))
        return out

    def resubscribe_frames(self, sid: int) -> tuple[str, list[bytes]]:
        """Unsubscribe then subscribe the book topic of ``sid``: Bybit answers the subscribe
        with a fresh snapshot, which resets the book."""
        if sid not in self.books:
            raise FeedError(f"bybit: symbol id {sid} has no book")
        spec = self.symbols[sid]
        topic = [f"orderbook.{self.depth_levels}.{spec.symbol}"]
        return spec.market, [_json.encode({"op": op, "req_id": f"resync-{sid}", "args": topic})
                             for op in ("unsubscribe", "subscribe")]

    def _reset_sequence(self, sid: int) -> None:
        self.sync[sid].reset()

    # -- hot path -----------------------------------------------------------------------
    def _on_frame(self, conn: str, data: bytes, recv: int, mono: int) -> None:
        end = -1
        if data.startswith(_PREFIX):
            end = data.find(b'"', 10)
            topic = data[10:end]
        else:  # a control frame, or (never seen) a data frame whose topic is not first
            env = decode_envelope(data)
            if not env.topic:
                self._control(env, data)
                return
            topic = env.topic.encode()
        route = self._routes.get(conn, self._any_route).get(topic)
        if route is None:
            self.bad(Count.UNKNOWN_FRAMES, data)
            return
        self.last_seen[route] = mono
        kind, sid, mk = route
        em = self.emitter
        if kind == _BOOK:
            self._book(sid, mk, _decode_book(data), recv, mono)
        elif kind == _TRADE:
            fast = self._fast_trades.get(sid, 0)   # compiled: scan and commit in one call
            if fast and scan_push_trades(data, end, fast, recv, mono) != DECLINED:
                return
            for t in _decode_trades(data).data:
                tid, hashed = trade_id(t.i)
                em.trade_add(sid, mk, t.T * _MS, recv, mono, t.p, t.v, tid,
                             aggressor_side(t.S), FLAG_ID_HASHED if hashed else 0)
            em.trades_done()
        elif kind == _BBO:
            msg = _decode_book(data)
            u = msg.data.u
            # level 1 is re-sent unchanged (same u) after 3 s without a change: not a new BBO.
            # Only an equal u is a repeat: u restarts at 1 with the service.
            if u == self._last_bbo[sid]:
                self.counts[Count.DUPLICATES] += 1
            else:
                self._last_bbo[sid] = u
                b, a = msg.data.b, msg.data.a  # level 1: each message is the whole top
                em.bbo(sid, mk, msg.ts * _MS, recv, mono, b[0][0] if b else _NAN,
                       b[0][1] if b else 0.0, a[0][0] if a else _NAN, a[0][1] if a else 0.0, u)
        elif kind == _TICKER:
            self._ticker(sid, mk, decode_envelope(data), recv, mono)
        else:
            for liq in _decode_liquidations(data).data:
                em.liquidation(sid, mk, liq.T * _MS, recv, mono, liq.p, liq.v,
                               liquidation_order_side(liq.S))

    def _book(self, sid: int, mk: int, msg: Push[BookData], recv: int, mono: int) -> None:
        self.book_seen[sid] = mono  # the liveness watchdog: any book message, even dropped
        data = msg.data
        u = data.u
        verdict = self.sync[sid].check(msg.type, u)
        if verdict == Verdict.APPLY or verdict == Verdict.RESET:
            book = self.books[sid]
            reset = verdict == Verdict.RESET
            if reset:
                book.clear()
            # a snapshot replaces the book: flagged, so depth consumers reset theirs
            result = self.emitter.books.apply(book, data.b, data.a, sid, mk, msg.ts * _MS, recv,
                                              mono, u, -1 if reset else u - 1,
                                              FLAG_SNAPSHOT if reset else 0)
            if result != APPLIED:
                self.resync(sid, Count.OVERFLOWS if result == OVERFLOW else Count.CROSSED,
                            recv, mono)
            elif reset:
                self.counts[Count.SNAPSHOTS] += 1
        elif verdict == Verdict.WAIT:
            self.counts[Count.DROPPED_NOT_LIVE] += 1
        else:
            self.resync(sid, Count.GAPS, recv, mono)

    def _ticker(self, sid: int, mk: int, env: Envelope, recv: int, mono: int) -> None:
        state = self.tickers[sid]
        changed = state.apply(env.type, decode_ticker(env.data)) & self._ticker_wants[sid]
        if not state.snapshot:  # a delta before its snapshot: the other fields are unknown
            self.counts[Count.DROPPED_NOT_LIVE] += 1
            return
        ts = env.ts * _MS
        if changed & FUNDING:
            self.emitter.funding(sid, mk, ts, recv, mono, state.mark, state.index,
                                 state.funding_rate, _NAN, state.next_funding_ns)
        if changed & OPEN_INTEREST:  # linear USDT contracts: openInterest is in base units
            self.emitter.open_interest(sid, mk, ts, recv, mono, state.open_interest,
                                       state.open_interest_value)

    def _control(self, env: Envelope, data: bytes) -> None:
        if not env.op:
            self.bad(Count.UNKNOWN_FRAMES, data)
        elif not env.success:
            self.bad(Count.EXCHANGE_ERRORS, data, env.ret_msg or "success: false")
        else:
            self.counts[Count.CONTROL_FRAMES] += 1
