"""From decoded exchange messages to bus records: staging rows, njit fill kernels, outputs.

A feed calls one :class:`Emitter` method per normalized record. The emitter fills a
preallocated staging row (or, for depth, a preallocated batch) and hands it to the stream's
output: a :class:`shm.Writer` in a worker, a :class:`Collector` in offline replay and tests.
Nothing here allocates per record except the field tuple of single-row streams.

Stream names are the bus's (``trades``, ``bbo``, ``depth``, ``book``, ``liquidations``,
``funding``, ``open_interest``); a feed only writes the streams it was given outputs for.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, Protocol

import numba as nb
import numpy as np

from shm.atomics import address_of, commit_kernel, typed_pointer
from shm.layout import (
    BBO,
    DEPTH,
    FLAG_LAST_IN_MESSAGE,
    FLAG_NOT_LIVE,
    FLAG_SNAPSHOT,
    FUNDING,
    LIQUIDATION,
    OPEN_INTEREST,
    TRADE,
    BookState,
    Side,
    book_dtype,
)

from .book import Book
from .book_commit import BookCommitter, depth_row, fill_prefix
from .trade_scan import R_HDR, route_row, set_contract

__all__ = ["FEED_STREAMS", "Collector", "Emitter", "Output"]

FEED_STREAMS = ("trades", "bbo", "depth", "book", "liquidations", "funding", "open_interest")
_LIVE = int(BookState.LIVE)
_TRADE_BATCH = 256   # trades staged per commit (a Bybit/OKX message can carry many)


class Output(Protocol):
    """Where one stream's records go (``shm.Writer`` has this shape)."""

    @property
    def stage(self) -> np.ndarray: ...

    def commit_staged(self) -> int: ...

    def commit(self, record: object) -> int: ...

    def commit_batch(self, records: np.ndarray) -> int: ...


class LatestOutput(Protocol):
    """A per-symbol latest-value table (``shm.LatestWriter`` has this shape)."""

    def update(self, symbol_id: int, record: object) -> None: ...

    def update_raw(self, symbol_id: int, record: memoryview) -> None: ...


class Collector:
    """An :class:`Output` that keeps copies of every record (offline replay, tests)."""

    def __init__(self, dtype: np.dtype) -> None:
        self.dtype = dtype
        self.records: list[np.ndarray] = []
        self._stage = np.zeros(1, dtype)

    @property
    def stage(self) -> np.ndarray:
        """One-record staging array (see ``shm.Writer.stage``)."""
        return self._stage

    def commit_staged(self) -> int:
        """Keep the staged record."""
        self.records.append(self._stage.copy())
        return len(self.records) - 1

    def commit(self, record: object) -> int:
        """Keep one record (a tuple in field order or a row of the dtype)."""
        self._stage[0] = record
        return self.commit_staged()

    def commit_batch(self, records: np.ndarray) -> int:
        """Keep a batch of records."""
        self.records.append(records.copy())
        return len(self.records) - 1

    def array(self) -> np.ndarray:
        """Everything kept so far, in commit order."""
        if not self.records:
            return np.zeros(0, self.dtype)
        return np.concatenate(self.records)


# u8 packs as "q": the same bytes for values below 2**63 (all a record holds), and CPython
# converts signed ints on a fast path ("Q" goes through _PyLong_AsByteArray, ~0.1 µs a record)
_STRUCT_CODES = {"u8": "q", "i8": "q", "u4": "I", "i4": "i", "u2": "H", "i2": "h", "u1": "B",
                 "i1": "b", "f8": "d", "f4": "f"}


def record_struct(dtype: np.dtype) -> struct.Struct:
    """A ``struct.Struct`` packing a flat record of ``dtype`` (padding included), so a record is
    staged with one ``pack_into`` (~0.2 µs) instead of a numpy tuple assignment (~0.6 µs)."""
    fmt, pos = "<", 0
    fields: Mapping[str, Any] = dtype.fields or {}
    for name, (field, offset) in sorted(((n, fields[n][:2]) for n in dtype.names or ()),
                                        key=lambda item: item[1][1]):
        if field.shape:
            raise ValueError(f"field {name} is an array: not packable")
        fmt += "x" * (offset - pos) + _STRUCT_CODES[field.str[1:]]
        pos = offset + field.itemsize
    fmt += "x" * (dtype.itemsize - pos)
    packer = struct.Struct(fmt)
    assert packer.size == dtype.itemsize
    return packer


@nb.njit(cache=True)
def _fill_depth(out, bid_px, bid_qty, ask_px, ask_qty, ts_ex, recv, mono, sid, exchange,
                market, flags, update_id, prev_id, epoch, state):  # pragma: no cover - njit
    n = 0
    for side in range(2):
        px = bid_px if side == 0 else ask_px
        qty = bid_qty if side == 0 else ask_qty
        for i in range(len(px)):
            depth_row(out[n], ts_ex, recv, mono, sid, exchange, market, flags, px[i], qty[i],
                       update_id, prev_id, epoch, 1 if side == 0 else -1, state)
            n += 1
    if n > 0:
        out[n - 1].flags = flags | 1  # FLAG_LAST_IN_MESSAGE
    return n


_TRADE_REC = typed_pointer(nb.from_dtype(TRADE))
_I = nb.int64


@nb.njit(_I(_I, _I, _I, _I, _I, _I, _I, _I, _I, _I, _I, _I, _I, nb.float64, nb.float64, _I, _I,
            _I), cache=True)
def trade_commit_kernel(hdr, ring, mask, words, stamp_word, waiters, stage, exchange, sid,
                        market, ts_ex, recv, mono, price, qty, trade_id, side,
                        flags):  # pragma: no cover - njit
    """Fill one trade record in the staging row at ``stage`` and commit it to the ring given
    by its :meth:`shm.Writer.commit_target` (``hdr`` .. ``waiters``); the commit's result."""
    r = nb.carray(_TRADE_REC(stage), (1,))[0]
    fill_prefix(r, ts_ex, recv, mono, sid, exchange, market, flags)
    r.price = price
    r.qty = qty
    r.trade_id = trade_id
    r.side = side
    return commit_kernel(hdr, ring, mask, words, stage, 1, stamp_word, waiters)


_TRADE_COMMIT = trade_commit_kernel.overloads[  # the compiled function: no dispatcher
    trade_commit_kernel.signatures[0]].entry_point  # type: ignore[attr-defined]


def _closed(*args: object) -> None:
    raise ValueError("emitter is closed: its ring writers may be unmapped")


class Emitter:
    """Builds and commits the records of one exchange worker.

    ``outputs`` maps stream names to :class:`Output`\\ s (streams without one are skipped);
    ``latest`` optionally maps stream names to latest-value tables updated with every record.
    Every method takes the message's three stamps: exchange time (ns), receive wall-clock
    (``time.time_ns()``) and receive monotonic (``time.perf_counter_ns()``).
    """

    def __init__(self, exchange: int, outputs: Mapping[str, Output],
                 latest: Mapping[str, LatestOutput] | None = None, book_depth: int = 20,
                 max_depth_levels: int = 8192) -> None:
        unknown = set(outputs) - set(FEED_STREAMS)
        if unknown:
            raise ValueError(f"unknown feed streams {sorted(unknown)}; known: {FEED_STREAMS}")
        self.exchange = exchange
        self.outputs = outputs
        self.latest = latest or {}
        self.book_dtype = book_dtype(book_depth)
        self._trades = outputs.get("trades")
        self._bbo = outputs.get("bbo")
        self._depth = outputs.get("depth")
        self._book = outputs.get("book")
        self._liq = outputs.get("liquidations")
        self._funding = outputs.get("funding")
        self._oi = outputs.get("open_interest")
        self._depth_buf = np.zeros(max_depth_levels, DEPTH)
        # the book record is filled in place: in the ring writer's stage when there is one
        book_out = outputs.get("book")
        book_row = book_out.stage if book_out is not None else np.zeros(1, self.book_dtype)
        if book_row.dtype != self.book_dtype:
            raise ValueError(f"output for book has dtype {book_row.dtype}, expected "
                             f"{self.book_dtype}")
        self._latest_book = self.latest.get("book")
        #: applies and publishes book messages (depth batch, top-N row, latest table)
        self.books = BookCommitter(exchange, self._depth, book_out, self._latest_book, book_row,
                                   max_depth_levels)
        # hot single-record streams are staged with struct.pack_into, then committed in place
        self._trade_stage, self._trade_pack, self._trade_commit = self._staging("trades", TRADE)
        self._bbo_stage, self._bbo_pack, self._bbo_commit = self._staging("bbo", BBO)
        #: ``trade(sid, market, ts_ex, recv, mono, price, qty, trade_id, side, flags)``: one
        #: trade (``side`` the aggressor's, ``Side.BUY``/``Side.SELL``). For a ring it is the
        #: compiled :func:`trade_commit_kernel` with the ring's addresses bound (no Python
        #: frame: −0.4 µs a trade); otherwise a staged pack and commit.
        self.trade: Callable[..., Any] = self._trade_staged
        target = getattr(outputs.get("trades"), "commit_target", None)
        if target is not None:
            self.trade = partial(_TRADE_COMMIT, *target(), address_of(self._trade_stage),
                                 exchange)
        # trades of one multi-trade message are packed here and committed together
        self._trade_out = outputs.get("trades")
        self._trade_routes: dict[int, np.ndarray] = {}   # address -> route row
        self._trade_batch = np.zeros(_TRADE_BATCH, TRADE)
        self._trade_batch_addr = self._trade_batch.ctypes.data
        self._trade_n = 0
        self._trade_size = TRADE.itemsize
        self._bbo_bytes: Any = self._bbo_stage.data.cast("B") if self._bbo_stage is not None \
            else None
        self._latest_bbo = self.latest.get("bbo")
        self._latest_funding = self.latest.get("funding")
        self._latest_oi = self.latest.get("open_interest")
        for name, dtype in (("trades", TRADE), ("bbo", BBO), ("liquidations", LIQUIDATION),
                            ("funding", FUNDING), ("open_interest", OPEN_INTEREST)):
            out = outputs.get(name)
            if out is not None and getattr(out, "dtype", dtype) != dtype:
                raise ValueError(f"output for {name} has dtype {out.dtype}, expected "  # type: ignore[attr-defined]
                                 f"{dtype}")

    def trade_route(self, sid: int, market: int, fmt: str) -> int:
        """Address of a :func:`trade_scan.route_row` with which compiled code commits trades
        of ``sid`` in frames of format ``fmt`` (a key of ``trade_scan.FORMATS``) straight to
        the trades ring; 0 when the trades output is not a ring (a Collector) or absent."""
        target = getattr(self._trade_out, "commit_target", None)
        if target is None or self._trade_stage is None:
            return 0
        row = route_row(target(), address_of(self._trade_stage), self.exchange, sid, market,
                        fmt, self._trade_batch)
        address = address_of(row)
        self._trade_routes[address] = row   # kept alive: compiled code holds its address
        return address

    def set_trade_contract(self, route: int, contract: float, inverse: bool) -> None:
        """Set the contract size of the route row at address ``route`` (OKX)."""
        set_contract(self._trade_routes[route], contract, inverse)

    def _staging(self, stream: str, dtype: np.dtype) -> tuple[Any, Any, Any]:
        out = self.outputs.get(stream)
        if out is None:
            return None, None, None
        return out.stage, record_struct(dtype).pack_into, out.commit_staged

    def _trade_staged(self, sid: int, market: int, ts_ex: int, recv: int, mono: int,
                      price: float, qty: float, trade_id: int, side: int, flags: int) -> None:
        """:attr:`trade` for an output without a commit target (or none at all)."""
        stage = self._trade_stage
        if stage is not None:
            self._trade_pack(stage, 0, 0, ts_ex, recv, mono, 0, sid, self.exchange, market,
                             flags, price, qty, trade_id, side)
            self._trade_commit()

    def close(self) -> None:
        """Stop committing through raw ring addresses (call before closing the writers)."""
        self.trade = _closed
        for row in self._trade_routes.values():
            row[R_HDR] = 0   # the scanners decline from now on

    def trade_add(self, sid: int, market: int, ts_ex: int, recv: int, mono: int, price: float,
                  qty: float, trade_id: int, side: int, flags: int = 0) -> None:
        """Stage one trade of a multi-trade message; :meth:`trades_done` commits them all at
        once (one commit per message: its records become visible together)."""
        if self._trade_out is None:
            return
        if self._trade_n == _TRADE_BATCH:
            self.trades_done()
        self._trade_pack(self._trade_batch, self._trade_n * self._trade_size, 0, ts_ex, recv,
                         mono, 0, sid, self.exchange, market, flags, price, qty, trade_id, side)
        self._trade_n += 1

    def discard_staged(self) -> None:
        """Forget trades staged by a message that turned out malformed (nothing of it is
        committed)."""
        self._trade_n = 0

    def trades_done(self) -> None:
        """Commit the trades staged by :meth:`trade_add`."""
        n = self._trade_n
        if n:
            self._trade_n = 0
            out: Any = self._trade_out
            commit_from = getattr(out, "commit_from", None)
            if commit_from is not None:
                commit_from(self._trade_batch_addr, n)
            else:
                out.commit_batch(self._trade_batch[:n])

    def bbo(self, sid: int, market: int, ts_ex: int, recv: int, mono: int, bid_px: float,
            bid_qty: float, ask_px: float, ask_qty: float, update_id: int) -> None:
        """Best bid and offer (level 1)."""
        stage = self._bbo_stage
        if stage is not None:
            self._bbo_pack(stage, 0, 0, ts_ex, recv, mono, 0, sid, self.exchange, market, 0,
                           bid_px, bid_qty, ask_px, ask_qty, update_id)
            self._bbo_commit()
            if self._latest_bbo is not None:
                self._latest_bbo.update_raw(sid, self._bbo_bytes)

    def depth(self, sid: int, market: int, ts_ex: int, recv: int, mono: int,
              bid_px: np.ndarray, bid_qty: np.ndarray, ask_px: np.ndarray, ask_qty: np.ndarray,
              update_id: int, prev_id: int, epoch: int, state: int, flags: int = 0) -> None:
        """The level changes of one applied book message, bids then asks, as one batch; the
        last record carries ``FLAG_LAST_IN_MESSAGE``."""
        out = self._depth
        if out is None:
            return
        state = int(state)  # an IntEnum argument makes numba's dispatch ~20 µs slower
        if state != _LIVE:
            flags |= FLAG_NOT_LIVE
        buf = self._depth_buf
        total = len(bid_px) + len(ask_px)
        if total > len(buf):
            buf = self._depth_buf = np.zeros(total, DEPTH)
        n = _fill_depth(buf, bid_px, bid_qty, ask_px, ask_qty, ts_ex, recv, mono, sid,
                        self.exchange, market, flags, update_id, prev_id, epoch, state)
        if n:
            out.commit_batch(buf[:n])

    def full_depth(self, sid: int, market: int, recv: int, mono: int, book: Book) -> None:
        """Every level of ``book`` as one depth batch flagged ``FLAG_SNAPSHOT`` (sent at an
        interval so that a consumer that lost records can rebuild the book)."""
        nb_, na = book.n_bids, book.n_asks
        self.depth(sid, market, 0, recv, mono, book.bid_px[:nb_], book.bid_qty[:nb_],
                   book.ask_px[:na], book.ask_qty[:na], book.update_id, -1, book.epoch,
                   int(book.state), FLAG_SNAPSHOT)

    def book(self, sid: int, market: int, ts_ex: int, recv: int, mono: int, book: Book,
             update_id: int, flags: int = 0) -> None:
        """The top-N snapshot of ``book`` as it is (state and epoch from the book)."""
        if self._book is not None or self._latest_book is not None:
            self.books.publish_book(book, sid, market, ts_ex, recv, mono, update_id, flags)

    def liquidation(self, sid: int, market: int, ts_ex: int, recv: int, mono: int,
                    price: float, qty: float, side: int) -> None:
        """A liquidation order; ``side`` is the order's (SELL: a long was liquidated)."""
        if self._liq is not None:
            self._liq.commit((0, ts_ex, recv, mono, 0, sid, self.exchange, market, 0, price,
                              qty, side))

    def funding(self, sid: int, market: int, ts_ex: int, recv: int, mono: int, mark_px: float,
                index_px: float, funding_rate: float, predicted_rate: float,
                next_funding_ns: int) -> None:
        """Mark, index and funding (NaN for what the exchange does not send)."""
        if self._funding is not None:
            rec = (0, ts_ex, recv, mono, 0, sid, self.exchange, market, 0, mark_px, index_px,
                   funding_rate, predicted_rate, next_funding_ns)
            self._funding.commit(rec)
            if self._latest_funding is not None:
                self._latest_funding.update(sid, rec)

    def open_interest(self, sid: int, market: int, ts_ex: int, recv: int, mono: int,
                      base_units: float, quote_value: float) -> None:
        """Open interest in base-asset units and its quote value (NaN if unknown)."""
        if self._oi is not None:
            rec = (0, ts_ex, recv, mono, 0, sid, self.exchange, market, 0, base_units,
                   quote_value)
            self._oi.commit(rec)
            if self._latest_oi is not None:
                self._latest_oi.update(sid, rec)


assert FLAG_LAST_IN_MESSAGE == 1 and int(Side.BUY) == 1  # _fill_depth relies on both
