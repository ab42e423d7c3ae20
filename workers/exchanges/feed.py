"""What every exchange feed shares: symbols, books and their trust state, counters, requests.

A feed is the synchronous half of a worker (the picows model): ``on_frame`` takes one text
frame with its receive stamps, decodes it once, updates books and commits records through its
:class:`~workers.exchanges.records.Emitter`. It never awaits, logs or raises. What needs I/O
— a REST snapshot, a resubscription — is queued in ``requests`` for the control plane (the
worker's connection loop, or the offline replay driver), which calls back with the result.

Book trust state (DESIGN.md section 5): a book starts SYNCING, becomes LIVE once its first
snapshot is applied and (Binance) bridged, and on any break — sequence gap, failed checksum,
crossed book, overflow, lost connection — goes RESYNCING with ``epoch + 1``, is emptied, and
announces that with an empty, not-LIVE book record. Only that symbol resyncs.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable
from enum import IntEnum
from typing import Any

import msgspec

from shm.layout import BookState, Exchange, Market

from .book import Book
from .records import FEED_STREAMS, Emitter

__all__ = ["ConnectionSpec", "Count", "Feed", "FeedError", "Request", "SymbolSpec"]

MARKETS = {"spot": Market.SPOT, "linear": Market.LINEAR, "inverse": Market.INVERSE,
           "option": Market.OPTION}


class FeedError(ValueError):
    """A feed was configured with something it cannot subscribe to."""


class Count(IntEnum):
    """Per-worker counters (one slot each in ``Feed.counts``), bumped on the hot path."""

    FRAMES = 0             # text frames received
    DECODE_ERRORS = 1      # frames that are not valid JSON of the expected shape
    UNKNOWN_FRAMES = 2     # valid frames for a stream or symbol we did not subscribe to
    EXCHANGE_ERRORS = 3    # error frames sent by the exchange
    CONTROL_FRAMES = 4     # acks, pongs
    GAPS = 5               # sequence breaks
    CHECKSUM_FAILURES = 6  # OKX checksum mismatches
    CROSSED = 7            # books found crossed after an update
    OVERFLOWS = 8          # book side capacity exceeded
    STALE_EVENTS = 9       # events older than the snapshot, dropped by rule
    BUFFERED = 10          # depth events buffered while waiting for a snapshot
    DROPPED_NOT_LIVE = 11  # book messages dropped while their book resyncs
    RESYNCS = 12           # books that left LIVE/SYNCING to resync
    SNAPSHOTS = 13         # snapshots applied (REST or in-stream)
    RECONNECTS = 14        # connections re-established after a loss
    REST_REQUESTS = 15     # REST requests sent
    REST_REJECTED = 16     # REST answers 429/418/5xx or unusable bodies
    SILENT_CHANNELS = 17   # channels flagged silent by the liveness watchdog
    STALE_CONNECTIONS = 18  # connections closed by the stale watchdog
    PINGS = 19             # application pings sent
    DUPLICATES = 20        # records already delivered (connection overlap, venue repeats)
    HANDLER_ERRORS = 21    # unexpected exceptions in a handler (a bug: see the samples)


class SymbolSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One subscribed instrument: exchange-native name, market, streams and its symbol id.

    ``contract_size`` converts exchange sizes to base-asset units (OKX derivatives' ``ctVal``).
    """

    symbol: str
    market: str = "linear"
    streams: tuple[str, ...] = FEED_STREAMS
    symbol_id: int = 0
    contract_size: float = 1.0

    def __post_init__(self) -> None:
        if self.market not in MARKETS:
            raise FeedError(f"symbol {self.symbol}: market {self.market!r} is not one of "
                            f"{', '.join(MARKETS)}")
        bad = [s for s in self.streams if s not in FEED_STREAMS]
        if bad:
            raise FeedError(f"symbol {self.symbol}: unknown streams {bad}; known: "
                            f"{', '.join(FEED_STREAMS)}")
        if not self.contract_size > 0:
            raise FeedError(f"symbol {self.symbol}: contract_size must be > 0")

    @property
    def wants_book(self) -> bool:
        """True if this symbol keeps an order book (depth or book stream)."""
        return "depth" in self.streams or "book" in self.streams


class ConnectionSpec(msgspec.Struct, frozen=True):
    """One WebSocket connection a feed needs: URL, what to send on open, how to keep it up.

    ``symbol_ids`` are the books carried on it (they resync if it drops); ``ping`` is the
    application ping sent every ``ping_interval_s`` (None: the exchange pings us).
    """

    key: str
    url: str
    subscribe: tuple[bytes, ...] = ()
    symbol_ids: tuple[int, ...] = ()
    ping: bytes | None = None
    ping_interval_s: float = 20.0
    max_lifetime_s: float = 0.0   # > 0: rotate (make-before-break) before this age


class Request(msgspec.Struct, frozen=True):
    """Something a feed needs the control plane to do: ``snapshot`` or ``resubscribe``."""

    kind: str
    symbol_id: int


class RepeatFilter:
    """Recognises records already delivered while two connections overlap (a rotation).

    Two connections carry no order between them, so "the last id seen" is not enough: the
    successor's record k+1 may arrive before the old connection's k. Outside an overlap the
    feed only tracks the highest key per symbol (``last``); at :meth:`begin` that becomes the
    floor, and during the overlap a key is a repeat if it is at or below the floor or was
    already seen in the overlap.
    """

    def __init__(self, sids: list[int]) -> None:
        self.last = dict.fromkeys(sids, -1)
        self.floor = dict(self.last)
        self.seen: dict[int, set[int]] = {sid: set() for sid in sids}

    def begin(self) -> None:
        """An overlap starts: everything delivered so far is the floor."""
        self.floor = dict(self.last)

    def end(self) -> None:
        """The overlap is over: forget the keys it saw."""
        for keys in self.seen.values():
            keys.clear()

    def repeat(self, sid: int, key: int) -> bool:
        """During an overlap: True if ``key`` was delivered already (else it is noted)."""
        seen = self.seen[sid]
        if key <= self.floor[sid] or key in seen:
            return True
        seen.add(key)
        if key > self.last[sid]:
            self.last[sid] = key
        return False


class Feed:
    """Base of the Binance, Bybit and OKX feeds (see the module docstring)."""

    name = ""
    exchange = Exchange.NONE
    urls_type: Any = None   # the msgspec struct of the feed's endpoints
    CHANNELS: tuple[str, ...] = ()   # channel name of each route kind (liveness watchdog)

    def __init__(self, symbols: list[SymbolSpec], emitter: Emitter,
                 book_capacity: int = 8192) -> None:
        ids = [s.symbol_id for s in symbols]
        if len(set(ids)) != len(ids):
            raise FeedError(f"{self.name}: duplicate symbol ids {ids}")
        self.symbols = {s.symbol_id: s for s in symbols}
        self.markets = {s.symbol_id: int(MARKETS[s.market]) for s in symbols}
        self.emitter = emitter
        self.books: dict[int, Book] = {s.symbol_id: self._new_book(book_capacity)
                                       for s in symbols if s.wants_book}
        self.counts = [0] * len(Count)
        self.samples: deque[tuple[str, bytes]] = deque(maxlen=32)  # (reason, frame head)
        self.requests: deque[Request] = deque()
        self.pending: set[Request] = set()
        self.notify: Callable[[], None] | None = None   # control plane wake-up, if any
        # route (kind, symbol id, market) -> mono ns of its last frame (liveness watchdog);
        # keyed by the route tuple itself so the hot path allocates nothing
        self.last_seen: dict[tuple[int, int, int], int] = {}
        self.book_seen: dict[int, int] = {}   # symbol id -> mono ns of its last book message
        self.overlap = 0   # > 0 while a rotation runs two connections: repeats are expected

    @classmethod
    def discover(cls, frames: list[bytes], market: str | None = None
                 ) -> tuple[list[SymbolSpec], dict[str, Any]]:
        """Symbols, streams and constructor options that explain a capture (offline replay);
        ``market`` overrides the market the frames suggest."""
        raise NotImplementedError

    def _new_book(self, capacity: int) -> Book:
        return Book(capacity)

    def _trade_routes(self, fmt: str) -> dict[int, int]:
        """Symbol id → address of the route row with which a compiled scanner commits its
        trades from frames of format ``fmt`` (``trade_scan.FORMATS``); 0 where the emitter
        writes no ring (the general path then handles every frame)."""
        return {sid: self.emitter.trade_route(sid, self.markets[sid], fmt)
                for sid, spec in self.symbols.items() if "trades" in spec.streams}

    # -- hot path -----------------------------------------------------------------------
    def on_frame(self, conn: str, data: bytes, recv: int, mono: int) -> None:
        """Handle one text frame from connection ``conn``; never raises."""
        self.counts[0] += 1  # Count.FRAMES
        try:
            self._on_frame(conn, data, recv, mono)
        except (msgspec.DecodeError, ValueError, KeyError, TypeError, IndexError,
                AttributeError, OverflowError, struct.error) as exc:  # bad input
            self.emitter.discard_staged()
            self.bad(Count.DECODE_ERRORS, data, exc)
        except Exception as exc:  # a bug must not take the worker down: counted and sampled
            self.emitter.discard_staged()
            self.bad(Count.HANDLER_ERRORS, data, repr(exc))

    def _on_frame(self, conn: str, data: bytes, recv: int, mono: int) -> None:
        raise NotImplementedError

    def bad(self, reason: Count, data: bytes | memoryview, exc: object = None) -> None:
        """Count a frame under ``reason`` and keep a bounded sample for the rate-limited log."""
        self.counts[reason] += 1
        head = bytes(data[:160])
        self.samples.append((reason.name.lower(), head + (f" ({exc})".encode() if exc else
                                                          b"")))

    def request(self, kind: str, sid: int) -> None:
        """Queue a control-plane request once (until :meth:`done`)."""
        req = Request(kind, sid)
        if req not in self.pending:
            self.pending.add(req)
            self.requests.append(req)
            if self.notify is not None:
                self.notify()

    def done(self, req: Request) -> None:
        """The control plane finished (or gave up on) ``req``; it may be requested again."""
        self.pending.discard(req)

    def resync(self, sid: int, reason: Count, recv: int, mono: int) -> None:
        """Break the book of ``sid``: count ``reason``, RESYNCING, epoch + 1, empty, announce,
        and ask the control plane for a fresh start (snapshot or resubscription)."""
        self.counts[reason] += 1
        book = self.books[sid]
        if book.state == BookState.RESYNCING:  # a bad start: forget it, ask again
            book.clear()
            self._reset_sequence(sid)
        else:
            self._enter_resyncing(sid, recv, mono)
        self.request(self.resync_kind, sid)

    def _enter_resyncing(self, sid: int, recv: int, mono: int) -> None:
        """LIVE/SYNCING/STALE → RESYNCING: epoch + 1, emptied, announced (not LIVE)."""
        book = self.books[sid]
        self.counts[Count.RESYNCS] += 1
        book.state = BookState.RESYNCING
        book.epoch += 1
        book.clear()
        self._reset_sequence(sid)
        self.emitter.book(sid, self.markets[sid], 0, recv, mono, book, -1)

    resync_kind = "resubscribe"

    def _reset_sequence(self, sid: int) -> None:
        """Forget the sequence state of ``sid`` (exchange specific)."""

    # -- control plane ------------------------------------------------------------------
    def connections(self) -> list[ConnectionSpec]:
        """The connections this feed needs, with their subscription frames."""
        raise NotImplementedError

    def resubscribe_frames(self, sid: int) -> tuple[str, list[bytes]]:
        """(connection key, frames) that restart the book of ``sid`` (Bybit, OKX)."""
        raise NotImplementedError

    def on_disconnect(self, conn: str, recv: int, mono: int) -> None:
        """Connection ``conn`` dropped: its books can no longer be trusted."""
        for spec in self.connections():
            if spec.key == conn:
                for sid in spec.symbol_ids:
                    if sid in self.books:
                        self._mark_lost(sid, recv, mono)

    def _mark_lost(self, sid: int, recv: int, mono: int) -> None:
        # the reconnect resubscribes (Binance: its first buffered event asks for a snapshot)
        if self.books[sid].state != BookState.RESYNCING:
            self._enter_resyncing(sid, recv, mono)

    def mark_stale(self, sid: int, recv: int, mono: int) -> None:
        """The liveness watchdog found the book's channel silent: LIVE → STALE (announced)."""
        book = self.books.get(sid)
        if book is not None and book.state == BookState.LIVE:
            book.state = BookState.STALE
            self.emitter.book(sid, self.markets[sid], 0, recv, mono, book, book.update_id)

    def expected_channels(self) -> list[tuple[tuple[int, int, int], str]]:
        """Every subscribed (route, channel name) of a symbol: each should deliver frames."""
        routes: dict[Any, Any] = getattr(self, "_routes", {})
        found: set[tuple[int, int, int]] = set()
        for value in routes.values():  # per connection (Binance, Bybit) or flat (OKX)
            found.update(value.values() if isinstance(value, dict) else (value,))
        return [(r, self.CHANNELS[r[0]]) for r in found if r[1] >= 0]

    def begin_overlap(self) -> None:
        """A rotation opened a second connection: repeats are expected until
        :meth:`end_overlap` (nested overlaps count)."""
        self.overlap += 1

    def end_overlap(self, recv: int, mono: int) -> None:
        """The old connection of a rotation is gone (and its last frames are in)."""
        self.overlap = max(0, self.overlap - 1)

    def book_states(self) -> dict[str, str]:
        """Exchange-native symbol → book state name (for status and health)."""
        return {f"{self.symbols[sid].market}:{self.symbols[sid].symbol}": book.state.name
                for sid, book in self.books.items()}
