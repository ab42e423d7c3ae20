"""OKX v5 public feed (spot, linear and inverse swaps and futures, options): checksummed books,
BBO, trades, liquidations, mark/funding and open interest.

One connection (``/ws/v5/public``) carries every subscription: ``{channel, instId}`` per
instrument, ``liquidation-orders`` once per instrument type (it pushes every instrument of the
type; those we do not follow are skipped). Frames are routed on the envelope's ``arg`` and their
``data`` decoded once into its type (:mod:`okx_wire`).

Books (DESIGN.md section 5) are :class:`OkxBook`\\ s: a ``snapshot`` resets, an ``update`` must
continue ``seqId`` (:class:`OkxSequence`), and after **every** message the book's CRC32 must equal
the message's ``checksum``, the proof that our book is the exchange's. A break resyncs that
instrument alone by resubscribing its book channel (OKX answers with a new snapshot); until then
its messages are dropped and nothing of it is published as LIVE.

Derivative sizes are contracts. Records carry base-asset units: ``size × contract_size`` for
linear contracts and options, ``size × contract_size / price`` for inverse ones, whose contract
value is in USD (``contract_size`` = OKX ``ctVal × ctMult``, from the config or from
``/api/v5/public/instruments`` via :meth:`OkxFeed.apply_instruments`). Books do that conversion
in their kernel (``OkxBook.qty_scale``): they keep OKX's strings for the checksum and base-unit
floats for everything else, so book, depth, full-depth and STALE records all agree.
"""

from __future__ import annotations

from typing import Any

import msgspec
import numpy as np

from shm.layout import DEPTH, FLAG_CHECKSUM_OK, FLAG_SNAPSHOT, BookState, Exchange, Side

from .book import Book, BookOverflow
from .feed import ConnectionSpec, Count, Feed, FeedError, SymbolSpec
from .json_scan import DECLINED
from .okx_book import OkxBook, OkxSequence, OkxVerdict
from .okx_frame import apply_frame
from .okx_wire import (
    BboData,
    Envelope,
    RawBookData,
    Trade,
    decode_bbo,
    decode_bbo_push,
    decode_book_push,
    decode_books_raw,
    decode_envelope,
    decode_funding_rate,
    decode_instruments,
    decode_liquidations,
    decode_mark_price,
    decode_open_interest,
    decode_trade_push,
    decode_trades,
)
from .push_scan import scan_push_trades
from .records import Collector, Emitter

__all__ = ["BOOK_CHANNELS", "OkxFeed", "OkxUrls", "inst_type", "market_of", "warm_kernels"]

BOOK_CHANNELS = ("books", "books-l2-tbt", "books50-l2-tbt")
_MS = 1_000_000
_NAN = float("nan")
_PUSH = b'{"arg":{"channel":"'
_PUSH_LEN = len(_PUSH)
_LIVE = BookState.LIVE
_ARGS_PER_FRAME = 20
_DERIVATIVE_STREAMS = {"liquidations", "funding", "open_interest"}
(_BOOK, _BBO, _TRADE, _FUNDING, _MARK, _OI, _LIQ) = range(7)
_PUSH_DECODERS = {_BOOK: decode_book_push, _TRADE: decode_trade_push, _BBO: decode_bbo_push}
# channel -> the feed streams it serves (discover)
_STREAMS_OF = {"bbo-tbt": ("bbo",), "trades": ("trades",), "funding-rate": ("funding",),
               "mark-price": ("funding",), "open-interest": ("open_interest",),
               **{ch: ("depth", "book") for ch in BOOK_CHANNELS}}
_encode = msgspec.json.Encoder().encode


def inst_type(inst_id: str) -> str:
    """OKX instrument type of an instId: ``BTC-USDT-SWAP`` SWAP, ``BTC-USD-240628`` FUTURES,
    ``BTC-USD-240628-60000-C`` OPTION, anything else (``BTC-USDT``) SPOT."""
    parts = inst_id.split("-")
    if parts[-1] == "SWAP":
        return "SWAP"
    if len(parts) == 5 and parts[-1] in ("C", "P"):
        return "OPTION"
    if len(parts) == 3 and parts[-1].isdigit():
        return "FUTURES"
    return "SPOT"


def market_of(inst_id: str) -> str:
    """Our market of an instId: swaps and futures quoted in USD are inverse (coin-margined),
    the others (USDT, USDC, ``USD_UM``) linear."""
    kind = inst_type(inst_id)
    if kind in ("SPOT", "OPTION"):
        return kind.lower()
    return "inverse" if inst_id.split("-")[1] == "USD" else "linear"


def warm_kernels(book_dtype: np.dtype) -> None:
    """Compile (or load from numba's cache) every kernel of a book message with the hot path's
    argument types (``msgspec.Raw`` levels, strided level views, ``book_dtype`` rows): compiled
    in the first message instead, a cold cache stalled a live connection for seconds. Cheap
    once done (the feed calls it when built)."""
    em = Emitter(int(Exchange.OKX), {"depth": Collector(DEPTH), "book": Collector(book_dtype)},
                 book_depth=book_dtype["bid_px"].shape[0])
    book = OkxBook(8, qty_scale=0.5, inverse=True)
    two, none = b'[["1","3","0","1"],["2","1","0","1"]]', b"[]"
    for bids, asks in ((two, two), (none, two), (two, none), (none, none)):
        (raw,) = decode_books_raw(b'[{"asks":%s,"bids":%s,"ts":"1","checksum":0}]'
                                  % (asks, bids))
        book.clear()
        book.apply_json(raw.bids, raw.asks)
        mid, end = book.message_counts()
        em.books.publish(book, book.message_address, end, mid, 0, 0, 0, 0, 0, 0, -1,
                         FLAG_CHECKSUM_OK)


class OkxUrls(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Endpoints (the real ones by default; tests point them at the local venue)."""

    public_ws: str = "wss://ws.okx.com:8443/ws/v5/public"
    rest: str = "https://www.okx.com"


class OkxFeed(Feed):
    """OKX v5 public channels for spot, linear, inverse and option instruments (instIds)."""

    name = "okx"
    exchange = Exchange.OKX
    urls_type = OkxUrls
    CHANNELS = ("book", "bbo", "trades", "funding", "mark", "open_interest", "liquidations")
    resync_kind = "resubscribe"

    def __init__(self, symbols: list[SymbolSpec], emitter: Emitter, urls: OkxUrls | None = None,
                 book_channel: str = "books", book_capacity: int = 8192) -> None:
        if book_channel not in BOOK_CHANNELS:
            raise FeedError(f"okx: book_channel {book_channel!r} is not one of "
                            f"{', '.join(BOOK_CHANNELS)}")
        for s in symbols:
            if s.market != market_of(s.symbol):
                raise FeedError(f"okx: {s.symbol} is {market_of(s.symbol)}, not {s.market}")
            if s.market == "spot" and (_DERIVATIVE_STREAMS & set(s.streams)
                                       or s.contract_size != 1.0):
                raise FeedError(f"okx: {s.symbol} spot has no liquidations, funding, open "
                                "interest or contract size")
        super().__init__(symbols, emitter, book_capacity)
        if self.books:
            warm_kernels(emitter.book_dtype)
        self.urls = urls or OkxUrls()
        self.book_channel = book_channel
        self.seq = {sid: OkxSequence() for sid in self.books}
        # the same books, typed: the hot path needs OkxBook's methods
        self._books = {sid: b for sid, b in self.books.items() if isinstance(b, OkxBook)}
        self._sid_of: dict[str, int] = {}
        self._size: dict[int, tuple[float, bool]] = {}   # sid -> (contract size, inverse)
        # sid -> [mark, funding rate, predicted rate, next funding ns]: the two channels merged
        self._funding: dict[int, list[Any]] = {}
        self._liq_of: dict[str, tuple[int, int]] = {}     # instId -> (sid, market id)
        # (channel, instId or instType) -> (kind, symbol id, market id); -1: liquidation-orders
        self._routes: dict[tuple[str, str], tuple[int, int, int]] = {}
        # the bytes between '{"arg":{"channel":"' and the arg's '}' -> route (books, trades, bbo)
        self._push_routes: dict[bytes, tuple[int, int, int]] = {}
        # push_scan's routes; _set_size keeps their contract sizes current
        self._fast_trades = self._trade_routes("okx")
        for s in symbols:
            sid, mk, want, inst = s.symbol_id, self.markets[s.symbol_id], set(s.streams), s.symbol
            if inst in self._sid_of:
                raise FeedError(f"okx: {inst} is subscribed twice")
            self._sid_of[inst] = sid
            self._set_size(sid)
            swap = inst_type(inst) == "SWAP"
            for channel, kind, needed in ((book_channel, _BOOK, s.wants_book),
                                          ("bbo-tbt", _BBO, "bbo" in want),
                                          ("trades", _TRADE, "trades" in want),
                                          ("funding-rate", _FUNDING, "funding" in want and swap),
                                          ("mark-price", _MARK, "funding" in want),
                                          ("open-interest", _OI, "open_interest" in want)):
                if needed:
                    self._routes[channel, inst] = (kind, sid, mk)
                    if kind in (_BOOK, _TRADE, _BBO):  # OKX's own key order: the fast path
                        key = f'{channel}","instId":"{inst}"'.encode()
                        self._push_routes[key] = (kind, sid, mk)
            if "funding" in want:
                self._funding[sid] = [_NAN, _NAN, _NAN, 0]
            if "liquidations" in want:
                self._liq_of[inst] = (sid, mk)
                self._routes["liquidation-orders", inst_type(inst)] = (_LIQ, -1, 0)

    @classmethod
    def discover(cls, frames: list[bytes], market: str | None = None
                 ) -> tuple[list[SymbolSpec], dict[str, Any]]:
        """Instruments and streams from the ``arg``\\ s of a capture (subscribe acks and
        pushes; liquidations from the instIds they name), each instrument's market from its
        instId unless ``market`` says otherwise; the book channel seen sets ``book_channel``."""
        kinds: dict[str, set[str]] = {}
        book_channel = ""
        for frame in frames:
            try:
                env = decode_envelope(frame)
                if env.arg is None or env.event not in ("", "subscribe"):
                    continue
                channel = env.arg.channel
                if channel == "liquidation-orders":
                    for liq in decode_liquidations(env.data) if not env.event else ():
                        kinds.setdefault(liq.instId, set()).add("liquidations")
                elif channel in _STREAMS_OF and env.arg.instId:
                    kinds.setdefault(env.arg.instId, set()).update(_STREAMS_OF[channel])
                    book_channel = book_channel or (channel if channel in BOOK_CHANNELS else "")
            except (msgspec.DecodeError, ValueError):
                continue  # "pong", or a frame that is not ours
        symbols: list[SymbolSpec] = []
        for inst, streams in sorted(kinds.items()):
            mk = market or market_of(inst)
            keep = streams - _DERIVATIVE_STREAMS if mk == "spot" else streams
            if keep:
                symbols.append(SymbolSpec(inst, mk, tuple(sorted(keep)), len(symbols)))
        return symbols, {"book_channel": book_channel} if book_channel else {}

    def _new_book(self, capacity: int) -> Book:
        return OkxBook(capacity)

    def _set_size(self, sid: int) -> None:
        spec = self.symbols[sid]
        size = (spec.contract_size, spec.market == "inverse")
        self._size[sid] = size
        fast = self._fast_trades.get(sid, 0)
        if fast:
            self.emitter.set_trade_contract(fast, *size)
        book = self._books.get(sid)
        if book is not None:
            book.qty_scale, book.inverse = size

    # -- control plane ------------------------------------------------------------------
    def connections(self) -> list[ConnectionSpec]:
        """The one public connection; its subscriptions in frames of ≤ 20 args."""
        args = [{"channel": ch, "instType": key} if ch == "liquidation-orders" else
                {"channel": ch, "instId": key} for ch, key in self._routes]
        frames = tuple(_encode({"op": "subscribe", "args": args[i:i + _ARGS_PER_FRAME]})
                       for i in range(0, len(args), _ARGS_PER_FRAME))
        return [ConnectionSpec("public", self.urls.public_ws, frames, tuple(sorted(self.books)),
                               ping=b"ping", ping_interval_s=20.0)]

    def resubscribe_frames(self, sid: int) -> tuple[str, list[bytes]]:
        """Unsubscribe then subscribe the book channel of ``sid``: OKX answers the subscribe
        with a fresh snapshot, which resets the book."""
        if sid not in self.books:
            raise FeedError(f"okx: symbol id {sid} has no book")
        args = [{"channel": self.book_channel, "instId": self.symbols[sid].symbol}]
        return "public", [_encode({"op": op, "args": args}) for op in ("unsubscribe", "subscribe")]

    def instruments_urls(self) -> list[str]:
        """REST URLs whose answers (:meth:`apply_instruments`) give the contract sizes of the
        derivatives (options need their family)."""
        queries = set()
        for s in self.symbols.values():
            kind = inst_type(s.symbol)
            if kind == "OPTION":
                queries.add("OPTION&instFamily=" + "-".join(s.symbol.split("-")[:2]))
            elif kind != "SPOT":
                queries.add(kind)
        return [f"{self.urls.rest}/api/v5/public/instruments?instType={q}"
                for q in sorted(queries)]

    def apply_instruments(self, body: bytes) -> int:
        """Take each followed derivative's contract size (``ctVal × ctMult``) from an
        ``/api/v5/public/instruments`` answer; returns how many were set. Call it before the
        first frame: levels already in a book are not rescaled."""
        try:
            answer = decode_instruments(body)
        except (msgspec.DecodeError, ValueError) as exc:
            self.bad(Count.REST_REJECTED, body, exc)
            return 0
        if answer.code != "0":
            self.bad(Count.REST_REJECTED, body, f"{answer.code} {answer.msg}")
            return 0
        n = 0
        for inst in answer.data:
            sid = self._sid_of.get(inst.instId)
            mult = inst.ctMult if inst.ctMult == inst.ctMult else 1.0  # NaN: not given
            size = inst.ctVal * mult
            if sid is not None and size > 0 and self.symbols[sid].market != "spot":
                self.symbols[sid] = msgspec.structs.replace(self.symbols[sid],
                                                            contract_size=size)
                self._set_size(sid)
                n += 1
        return n

    def _reset_sequence(self, sid: int) -> None:
        self.seq[sid].reset()

    # -- hot path -----------------------------------------------------------------------
    def _on_frame(self, conn: str, data: bytes, recv: int, mono: int) -> None:
        if data.startswith(_PUSH):  # route on the arg's bytes, then one typed decode
            end = data.find(b"}", _PUSH_LEN)
            route = self._push_routes.get(data[_PUSH_LEN:end])
            if route is not None:
                kind, sid, mk = route
                if kind == _TRADE:   # compiled: scan and commit in one call
                    fast = self._fast_trades.get(sid, 0)
                    if fast and scan_push_trades(data, end, fast, recv, mono) != DECLINED:
                        self.last_seen[route] = mono
                        return
                push: Any = _PUSH_DECODERS[kind](data)
                if push.event:  # an event with arg first: the general path handles it
                    self._control(decode_envelope(data), data)
                    return
                self.last_seen[route] = mono
                if kind == _BOOK:
                    snapshot = push.action == "snapshot"
                    if len(push.data) == 1:  # OKX's shape: the kernel reads levels in place
                        self._book(sid, mk, snapshot, push.data[0], recv, mono, data)
                    else:
                        for book in push.data:
                            self._book(sid, mk, snapshot, book, recv, mono)
                elif kind == _TRADE:
                    self._trades(sid, mk, push.data, recv, mono)
                else:
                    self._bbos(sid, mk, push.data, recv, mono)
                return
        if data == b"pong":
            self.counts[Count.CONTROL_FRAMES] += 1
            return
        env = decode_envelope(data)
        arg = env.arg
        if env.event:
            self._control(env, data)
            return
        if arg is None:
            self.bad(Count.DECODE_ERRORS, data, "no arg")
            return
        route = self._routes.get((arg.channel, arg.instId or arg.instType))
        if route is None:
            self.bad(Count.UNKNOWN_FRAMES, data)
            return
        self.last_seen[route] = mono
        kind, sid, mk = route
        em = self.emitter
        if kind == _BOOK:
            snapshot = env.action == "snapshot"
            for book in decode_books_raw(env.data):
                self._book(sid, mk, snapshot, book, recv, mono)
            return
        if kind == _TRADE:
            self._trades(sid, mk, decode_trades(env.data), recv, mono)
        elif kind == _BBO:
            self._bbos(sid, mk, decode_bbo(env.data), recv, mono)
        elif kind == _FUNDING or kind == _MARK:
            state = self._funding[sid]
            if kind == _MARK:
                items: Any = decode_mark_price(env.data)
                for m in items:
                    state[0] = m.markPx
            else:
                items = decode_funding_rate(env.data)
                for f in items:
                    state[1], state[2], state[3] = (f.fundingRate, f.nextFundingRate,
                                                    f.fundingTime * _MS)
            if items:  # no index price: it would take an index-tickers subscription
                em.funding(sid, mk, items[-1].ts * _MS, recv, mono, state[0], _NAN, state[1],
                           state[2], state[3])
        elif kind == _OI:
            for oi in decode_open_interest(env.data):
                base: float = oi.oiCcy  # coins: the base asset, whatever the contract
                if base != base and not self._size[sid][1]:
                    base = oi.oi * self._size[sid][0]
                em.open_interest(sid, mk, oi.ts * _MS, recv, mono, base, oi.oiUsd)
        else:
            self._liquidations(env, recv, mono)
            return

    def _trades(self, sid: int, mk: int, items: list[Trade], recv: int, mono: int) -> None:
        em = self.emitter
        for t in items:
            em.trade_add(sid, mk, t.ts * _MS, recv, mono, t.px, self._base(sid, t.px, t.sz),
                         int(t.tradeId), Side.BUY if t.side == "buy" else Side.SELL)
        em.trades_done()

    def _bbos(self, sid: int, mk: int, items: list[BboData], recv: int, mono: int) -> None:
        for b in items:
            bid, ask = b.bids, b.asks  # a whole top of book each time; a side may be empty
            bp = float(bid[0][0]) if bid else _NAN
            ap = float(ask[0][0]) if ask else _NAN
            self.emitter.bbo(sid, mk, b.ts * _MS, recv, mono,
                             bp, self._base(sid, bp, float(bid[0][1])) if bid else 0.0,
                             ap, self._base(sid, ap, float(ask[0][1])) if ask else 0.0,
                             b.ts if b.seqId is None else b.seqId)

    def _base(self, sid: int, price: float, size: float) -> float:
        """``size`` (contracts for derivatives) in base units at ``price``."""
        contract, inverse = self._size[sid]
        if not inverse:
            return size * contract
        return size * contract / price if price > 0 else _NAN

    def _book(self, sid: int, mk: int, snapshot: bool, d: RawBookData, recv: int,
              mono: int, frame: bytes | None = None) -> None:
        """One book item; ``frame`` is given when it is the frame's only item (see
        :func:`~workers.exchanges.okx_frame.apply_frame`)."""
        self.book_seen[sid] = mono
        book = self._books[sid]
        if not snapshot and book.state == BookState.RESYNCING:
            self.counts[Count.DROPPED_NOT_LIVE] += 1  # the resubscription's snapshot will do
            return
        verdict = self.seq[sid].check(snapshot, d.seqId, d.prevSeqId)
        if verdict != OkxVerdict.APPLY:
            if verdict == OkxVerdict.DUPLICATE:
                self.counts[Count.DUPLICATES] += 1
            else:
                self.resync(sid, Count.GAPS, recv, mono)
            return
        if snapshot:
            book.clear()
        try:
            checksum = book.apply_json(d.bids, d.asks) if frame is None else apply_frame(
                book, frame, d.bids, d.asks)
        except BookOverflow:
            self.resync(sid, Count.OVERFLOWS, recv, mono)
            return
        except ValueError:  # malformed levels: nothing applied, but the chain moved past it
            self.resync(sid, Count.DECODE_ERRORS, recv, mono)
            return
        if checksum != d.checksum:
            self.resync(sid, Count.CHECKSUM_FAILURES, recv, mono)
            return
        if book.crossed():
            self.resync(sid, Count.CROSSED, recv, mono)
            return
        flags = FLAG_CHECKSUM_OK
        if snapshot:
            self.counts[Count.SNAPSHOTS] += 1
            flags |= FLAG_SNAPSHOT  # the depth batch is the whole book: replace, not apply
        book.state = _LIVE  # also STALE -> LIVE: the channel spoke again
        uid = d.ts if d.seqId is None else d.seqId
        prev = -1 if d.prevSeqId is None else d.prevSeqId
        ts = d.ts * _MS
        mid, end = book.message_counts()
        self.emitter.books.publish(book, book.message_address, end, mid, sid, mk, ts, recv,
                                   mono, uid, prev, flags)

    def _liquidations(self, env: Envelope, recv: int, mono: int) -> None:
        em = self.emitter
        for liq in decode_liquidations(env.data):
            target = self._liq_of.get(liq.instId)
            if target is None:
                continue  # the channel pushes every instrument of its type: not an error
            sid, mk = target
            for x in liq.details:  # side: of the liquidation order (sell: a long closed)
                em.liquidation(sid, mk, x.ts * _MS, recv, mono, x.bkPx,
                               self._base(sid, x.bkPx, x.sz),
                               Side.BUY if x.side == "buy" else Side.SELL)

    def _control(self, env: Envelope, data: bytes) -> None:
        if env.event == "error":
            self.bad(Count.EXCHANGE_ERRORS, data, f"{env.code} {env.msg}")
        elif env.event == "notice":  # e.g. 64008, a service upgrade will close the connection
            self.bad(Count.CONTROL_FRAMES, data, f"{env.code} {env.msg}")
        else:
            self.counts[Count.CONTROL_FRAMES] += 1
