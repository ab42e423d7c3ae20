"""One book message applied and published by a single njit call.

Done as separate steps from Python (a numpy array of the levels, apply, crossed check, fill the
depth batch, commit it, fill the top-N row, commit it, store it in the latest table) a small
Binance diff cost ~11 µs, most of it interpreter glue and numba dispatch: five kernel calls
with eight array arguments. :func:`book_message_kernel` does all of it in one call made through
its compiled entry point with integer arguments only (addresses), so neither numba's dispatcher
nor array unboxing runs per message.

The addresses the kernel needs and that never change (ring headers, the book row, record
offsets) sit in a small int64 *context* array (:class:`BookCommitter` builds it). An output
without a commit target (replay's ``Collector``, tests) gets the same kernel: it fills the depth
batch and the book row without committing them and the committer hands them over from Python,
so replay and live run the same code.

Memory ordering: ring commits go through :func:`shm.atomics.commit_kernel` and latest-table
rows through :func:`shm.atomics.latest_store_kernel`; their contracts are written there.
"""

from __future__ import annotations

import struct
from itertools import chain
from typing import Any

import numba as nb
import numpy as np
from numba import types

from shm.atomics import address_of, commit_kernel, latest_store_kernel, typed_pointer
from shm.layout import DEPTH, FLAG_LAST_IN_MESSAGE, FLAG_NOT_LIVE, FLAG_SNAPSHOT, BookState

from .book import Book, _apply_one

__all__ = ["APPLIED", "CROSSED", "OVERFLOW", "BookCommitter", "book_message_kernel",
           "depth_row", "fill_prefix"]

APPLIED, OVERFLOW, CROSSED = 0, -1, -2   # book_message_kernel results below zero
_LIVE = int(BookState.LIVE)
_I64 = nb.int64


_f64p, _i64p, _u32p, _u16p, _u8p = (typed_pointer(t) for t in (
    types.float64, types.int64, types.uint32, types.uint16, types.uint8))
_depthp = typed_pointer(nb.from_dtype(DEPTH))

# context slots: the depth ring's and the book ring's commit targets (hdr 0: no ring, fill
# only), the book row's address, its record size in u64 words, the exchange id, then the byte
# offsets of the book record's fields (from its dtype, which depends on the book depth)
(C_D_HDR, C_D_RING, C_D_MASK, C_D_WORDS, C_D_STAMP, C_D_WAIT,
 C_B_HDR, C_B_RING, C_B_MASK, C_B_WORDS, C_B_STAMP, C_B_WAIT,
 C_ROW, C_ROW_WORDS, C_EXCHANGE, C_DEPTH) = range(16)
BOOK_FIELDS = ("ts_exchange_ns", "ts_recv_ns", "ts_mono_ns", "symbol_id", "exchange", "market",
               "flags", "update_id", "epoch", "state", "n_bids", "n_asks", "bid_px", "bid_qty",
               "ask_px", "ask_qty")
(O_TS, O_RECV, O_MONO, O_SID, O_EXCH, O_MARKET, O_FLAGS, O_UID, O_EPOCH, O_STATE, O_NB, O_NA,
 O_BPX, O_BQTY, O_APX, O_AQTY) = range(16, 16 + len(BOOK_FIELDS))
CTX_LEN = 16 + len(BOOK_FIELDS)


@nb.njit(cache=True, inline="always")
def fill_prefix(r, ts_ex, recv, mono, sid, exchange, market, flags):  # pragma: no cover
    """Fill the common prefix of a record (a numba record view); seq and ts_commit_ns are the
    commit's."""
    r.ts_exchange_ns = ts_ex
    r.ts_recv_ns = recv
    r.ts_mono_ns = mono
    r.symbol_id = sid
    r.exchange = exchange
    r.market = market
    r.flags = flags


@nb.njit(cache=True, inline="always")
def depth_row(r, ts_ex, recv, mono, sid, exchange, market, flags, price, qty, update_id,
              prev_id, epoch, side, state):  # pragma: no cover - njit
    """Fill one depth record (a numba record view)."""
    fill_prefix(r, ts_ex, recv, mono, sid, exchange, market, flags)
    r.price = price
    r.qty = qty
    r.update_id = update_id
    r.prev_update_id = prev_id
    r.epoch = epoch
    r.side = side
    r.state = state


@nb.njit(cache=True, inline="always")
def _write_book_row(ctx, bid_px, bid_qty, n_bids, ask_px, ask_qty, n_asks, ts_ex, recv, mono,
                    sid, market, flags, update_id, epoch, state):  # pragma: no cover - njit
    row = ctx[C_ROW]
    depth = ctx[C_DEPTH]
    nb.carray(_i64p(row + ctx[O_TS]), (1,))[0] = ts_ex
    nb.carray(_i64p(row + ctx[O_RECV]), (1,))[0] = recv
    nb.carray(_i64p(row + ctx[O_MONO]), (1,))[0] = mono
    nb.carray(_u32p(row + ctx[O_SID]), (1,))[0] = sid
    nb.carray(_u8p(row + ctx[O_EXCH]), (1,))[0] = ctx[C_EXCHANGE]
    nb.carray(_u8p(row + ctx[O_MARKET]), (1,))[0] = market
    nb.carray(_u16p(row + ctx[O_FLAGS]), (1,))[0] = flags
    nb.carray(_i64p(row + ctx[O_UID]), (1,))[0] = update_id
    nb.carray(_u32p(row + ctx[O_EPOCH]), (1,))[0] = epoch
    nb.carray(_u8p(row + ctx[O_STATE]), (1,))[0] = state
    nb_ = min(depth, n_bids)
    na = min(depth, n_asks)
    nb.carray(_u8p(row + ctx[O_NB]), (1,))[0] = nb_
    nb.carray(_u8p(row + ctx[O_NA]), (1,))[0] = na
    out_bp = nb.carray(_f64p(row + ctx[O_BPX]), (depth,))
    out_bq = nb.carray(_f64p(row + ctx[O_BQTY]), (depth,))
    out_ap = nb.carray(_f64p(row + ctx[O_APX]), (depth,))
    out_aq = nb.carray(_f64p(row + ctx[O_AQTY]), (depth,))
    # sides are stored worst first: the best level is the last entry
    for i in range(depth):
        if i < nb_:
            out_bp[i] = bid_px[n_bids - 1 - i]
            out_bq[i] = bid_qty[n_bids - 1 - i]
        else:
            out_bp[i] = np.nan
            out_bq[i] = 0.0
        if i < na:
            out_ap[i] = ask_px[n_asks - 1 - i]
            out_aq[i] = ask_qty[n_asks - 1 - i]
        else:
            out_ap[i] = np.nan
            out_aq[i] = 0.0


@nb.njit(_I64(_I64, _I64, _I64, _I64, _I64, _I64, _I64, _I64, _I64, _I64, _I64, _I64, _I64,
              _I64, _I64, _I64, _I64, _I64, _I64, _I64, _I64), cache=True)
def book_message_kernel(ctx_addr, sides, capacity, n_bids, n_asks, apply, flat_addr, n_pairs,
                        nb_pairs, depth_addr, latest_row, sid, market, ts_ex, recv, mono,
                        update_id, prev_id, epoch, state, flags):  # pragma: no cover - njit
    """Apply (if ``apply``) and publish one book message; every argument is an int64.

    ``sides``/``capacity``: a :class:`~workers.exchanges.book.Book`'s ``address`` and
    ``capacity`` (rows bid px, bid qty, ask px, ask qty, each worst first), with its counts
    ``n_bids``/``n_asks``. ``flat_addr`` holds the message's ``n_pairs`` levels as float64
    ``[p, q, ...]``, the first ``nb_pairs`` bids. With ``apply`` the levels are applied and a
    full side (:data:`OVERFLOW`) or a crossed book (:data:`CROSSED`) stops before anything is
    published. Then, if ``depth_addr`` (a DEPTH buffer of ≥ ``n_pairs`` rows) is non-zero, the
    levels become one depth batch (the last flagged ``FLAG_LAST_IN_MESSAGE``), committed when
    the context has a depth ring; the top-N row is filled, committed when it has a book ring,
    and stored in the latest table when ``latest_row`` is non-zero.

    Returns ``n_bids << 32 | n_asks``, or a negative code.
    """
    ctx = nb.carray(_i64p(ctx_addr), (CTX_LEN,))
    bid_px = nb.carray(_f64p(sides), (capacity,))
    bid_qty = nb.carray(_f64p(sides + 8 * capacity), (capacity,))
    ask_px = nb.carray(_f64p(sides + 16 * capacity), (capacity,))
    ask_qty = nb.carray(_f64p(sides + 24 * capacity), (capacity,))
    flat = nb.carray(_f64p(flat_addr), (2 * n_pairs,))
    if apply:
        for k in range(n_pairs):
            if k < nb_pairs:
                n_bids = _apply_one(bid_px, bid_qty, n_bids, flat[2 * k], flat[2 * k + 1], True)
                if n_bids < 0:
                    return OVERFLOW
            else:
                n_asks = _apply_one(ask_px, ask_qty, n_asks, flat[2 * k], flat[2 * k + 1],
                                    False)
                if n_asks < 0:
                    return OVERFLOW
        if n_bids > 0 and n_asks > 0 and bid_px[n_bids - 1] >= ask_px[n_asks - 1]:
            return CROSSED
    result = (n_bids << 32) | n_asks
    if state != _LIVE:
        flags |= 2  # FLAG_NOT_LIVE
    exchange = ctx[C_EXCHANGE]
    if depth_addr != 0 and n_pairs > 0:
        rows = nb.carray(_depthp(depth_addr), (n_pairs,))
        for k in range(n_pairs):
            depth_row(rows[k], ts_ex, recv, mono, sid, exchange, market, flags, flat[2 * k],
                      flat[2 * k + 1], update_id, prev_id, epoch, 1 if k < nb_pairs else -1,
                      state)
        rows[n_pairs - 1].flags = flags | 1  # FLAG_LAST_IN_MESSAGE
        if ctx[C_D_HDR] != 0:
            commit_kernel(ctx[C_D_HDR], ctx[C_D_RING], ctx[C_D_MASK], ctx[C_D_WORDS],
                          depth_addr, n_pairs, ctx[C_D_STAMP], ctx[C_D_WAIT])
    _write_book_row(ctx, bid_px, bid_qty, n_bids, ask_px, ask_qty, n_asks, ts_ex, recv, mono,
                    sid, market, flags & ~16, update_id, epoch, state)  # FLAG_SNAPSHOT: depth
    if ctx[C_B_HDR] != 0:
        committed = commit_kernel(ctx[C_B_HDR], ctx[C_B_RING], ctx[C_B_MASK], ctx[C_B_WORDS],
                                  ctx[C_ROW], 1, ctx[C_B_STAMP], ctx[C_B_WAIT])
        # the latest row gets the ring record's seq and commit stamp (the commit wrote them
        # into the slot only): a late joiner follows the ring from that seq
        seq = (committed >> 1) - 1
        slot = nb.carray(_i64p(ctx[C_B_RING] + (seq & ctx[C_B_MASK]) * ctx[C_B_WORDS] * 8),
                         (ctx[C_B_WORDS],))
        row = nb.carray(_i64p(ctx[C_ROW]), (ctx[C_ROW_WORDS],))
        row[0] = seq
        if ctx[C_B_STAMP] >= 0:
            row[ctx[C_B_STAMP]] = slot[ctx[C_B_STAMP]]
    if latest_row != 0:
        latest_store_kernel(latest_row, ctx[C_ROW], ctx[C_ROW_WORDS])
    return result


assert (FLAG_LAST_IN_MESSAGE, FLAG_NOT_LIVE, FLAG_SNAPSHOT) == (1, 2, 16)  # the kernel's flags
_KERNEL = book_message_kernel.overloads[  # the compiled function: no dispatcher
    book_message_kernel.signatures[0]].entry_point  # type: ignore[attr-defined]


class BookCommitter:
    """Publishes book messages of one exchange through :func:`book_message_kernel`.

    ``depth``/``book`` are the depth and book outputs (``None``: not written); an output with a
    ``commit_target()`` (``shm.Writer``) is committed by the kernel, any other (``Collector``)
    from Python. ``latest`` is the book's latest table (``row_address`` used when it has one).
    """

    def __init__(self, exchange: int, depth: Any, book: Any, latest: Any, book_row: np.ndarray,
                 max_levels: int = 8192) -> None:
        self._depth, self._book, self._latest = depth, book, latest
        self._row = book_row          # the book record is filled here (a writer's stage)
        self._row_bytes = book_row.data.cast("B")
        ctx = np.zeros(CTX_LEN, np.int64)
        for base, out in ((C_D_HDR, depth), (C_B_HDR, book)):
            target = getattr(out, "commit_target", None)
            if target is not None:
                ctx[base:base + 6] = target()
        self._depth_ring = bool(ctx[C_D_HDR])
        self._book_ring = bool(ctx[C_B_HDR])
        self._rings = tuple(out for out, ring in ((depth, self._depth_ring),
                                                  (book, self._book_ring)) if ring)
        ctx[C_ROW] = address_of(book_row)
        ctx[C_ROW_WORDS] = book_row.dtype.itemsize // 8
        ctx[C_EXCHANGE] = exchange
        fields: Any = book_row.dtype.fields
        ctx[C_DEPTH] = fields["bid_px"][0].shape[0]
        for slot, name in enumerate(BOOK_FIELDS, 16):
            ctx[slot] = fields[name][1]
        self._ctx = ctx
        self._ctx_addr = address_of(ctx)
        self._latest_rows: dict[int, int] = {}
        self._latest_row = getattr(latest, "row_address", None)
        self._grow(max_levels)
        self._packers: dict[int, Any] = {}

    def _grow(self, levels: int) -> None:
        self._flat = np.zeros(2 * levels)
        self._flat_addr = address_of(self._flat)
        self._flat_mem = self._flat.data.cast("B")
        self._batch = np.zeros(levels, DEPTH)
        self._batch_addr = address_of(self._batch)

    def _pack(self, n: int) -> Any:
        packer = self._packers.get(n)
        if packer is None:
            packer = self._packers[n] = struct.Struct(f"<{2 * n}d").pack_into
        return packer

    def apply(self, book: Book, bids: list[tuple[float, float]],
              asks: list[tuple[float, float]], sid: int, market: int, ts_ex: int, recv: int,
              mono: int, update_id: int, prev_id: int, flags: int = 0,
              publish_depth: bool = True) -> int:
        """Apply one message's levels (bids then asks, as decoded) to ``book`` and, unless it
        overflows or crosses (the negative result), make the book LIVE and publish the depth
        batch (``publish_depth``) and the top-N row. Returns :data:`APPLIED` or the code."""
        n = len(bids) + len(asks)
        if n > len(self._batch):
            self._grow(n)
        self._pack(n)(self._flat_mem, 0, *chain(chain.from_iterable(bids),
                                                chain.from_iterable(asks)))
        return self._run(book, 1, self._flat_addr, n, len(bids), sid, market, ts_ex, recv,
                         mono, update_id, prev_id, _LIVE, flags, publish_depth)

    def publish(self, book: Book, flat_addr: int, n_pairs: int, nb_pairs: int, sid: int,
                market: int, ts_ex: int, recv: int, mono: int, update_id: int, prev_id: int,
                flags: int = 0) -> None:
        """Publish a message ``book`` already applied (OKX: its own kernel keeps the strings);
        its levels are ``n_pairs`` float64 pairs at ``flat_addr``, the first ``nb_pairs``
        bids. The book's state is published as it is."""
        if n_pairs > len(self._batch):
            self._grow(n_pairs)
        self._run(book, 0, flat_addr, n_pairs, nb_pairs, sid, market, ts_ex, recv, mono,
                  update_id, prev_id, int(book.state), flags, True)

    def publish_book(self, book: Book, sid: int, market: int, ts_ex: int, recv: int, mono: int,
                     update_id: int, flags: int = 0) -> None:
        """Publish the top-N row of ``book`` as it is (state, epoch), without depth records."""
        self._run(book, 0, 0, 0, 0, sid, market, ts_ex, recv, mono, update_id, -1,
                  int(book.state), flags, False)

    def _run(self, book: Book, apply: int, flat_addr: int, n: int, nb_pairs: int, sid: int,
             market: int, ts_ex: int, recv: int, mono: int, update_id: int, prev_id: int,
             state: int, flags: int, publish_depth: bool) -> int:
        depth = self._depth is not None and publish_depth
        latest = 0
        if self._latest_row is not None:
            latest = self._latest_rows.get(sid, 0) or self._row_of(sid)
        for ring in self._rings:  # the kernel writes through raw addresses: never after close
            if ring.closed:
                raise ValueError(f"segment {ring.name}: writer is closed")
        result = _KERNEL(self._ctx_addr, book.address, book.capacity, book.n_bids, book.n_asks,
                         apply, flat_addr, n, nb_pairs, self._batch_addr if depth else 0, latest,
                         sid, market, ts_ex, recv, mono, update_id, prev_id, book.epoch, state,
                         flags)
        if result < 0:
            return result
        book.n_bids, book.n_asks = result >> 32, result & 0xFFFFFFFF
        if apply:
            book.state = BookState.LIVE
        book.update_id = update_id
        if depth and n and not self._depth_ring:
            self._depth.commit_batch(self._batch[:n])
        if self._book is not None and not self._book_ring:
            self._book.commit_staged()
        if self._latest is not None and self._latest_row is None:
            self._latest.update_raw(sid, self._row_bytes)
        return APPLIED

    def _row_of(self, sid: int) -> int:
        row: int = self._latest_row(sid)  # type: ignore[misc]
        self._latest_rows[sid] = row
        return row
