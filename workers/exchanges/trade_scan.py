"""Compiled fast paths for the hottest frames: what the exchange kernels share.

:mod:`.binance_scan` (a ``trade``/``aggTrade`` frame), :mod:`.bybit_scan` (a ``publicTrade``
push) and :mod:`.okx_scan` (a ``trades`` push) scan a frame's bytes (no Python objects), fill
the trade records and commit them to the ring in one njit call, a push's trades as one batch
(they become visible together, as on the general path). The decode, the attribute reads and
the emitter calls of the general path cost ≈ 1 µs a frame more (``benchmarks/ingest_bench.py``).

The scanners are deliberately narrow (:mod:`.json_scan`). They accept exactly the JSON the
exchanges send (no whitespace, ASCII strings without escapes, plain numbers, flat trade
objects) and decline everything else *before committing anything*, returning
:data:`DECLINED`; the caller then takes the general msgspec path, which decodes what it can
and counts what is malformed. So a frame is either committed here with the values msgspec
would give, or handled there: the fast path never decides that input is bad and never commits
a partial message.

Numbers are exact: a decimal with at most 15 significant digits and at most 22 fraction
digits is ``mantissa / 10**fraction`` with both operands exact doubles, and one IEEE
division rounds correctly (Clinger's fast path), as msgspec's parser does. Anything longer
is declined, and so is anything outside the bounds the wire structs declare.

:mod:`.push_scan` holds the loop over a push's trades that Bybit and OKX share.

A kernel is called as ``kernel(frame, start, route, recv_ns, mono_ns)``: ``route`` is the
address of a :func:`route_row` (five arguments instead of fifteen: numba unboxes each, ≈ 30 ns
apiece) and ``start`` the index the Python router already found (the end of the stream name,
topic or arg), checked again by the kernel.
"""

from __future__ import annotations

from typing import Any

import numba as nb
import numpy as np

from shm.atomics import commit_kernel, typed_pointer
from shm.layout import TRADE

from .book_commit import fill_prefix
from .json_scan import DECLINED

__all__ = [
    "DECLINED",
    "KERNEL",
    "MAX_MS",
    "ROUTE_WORDS",
    "R_BATCH",
    "R_CAPACITY",
    "R_CONTRACT",
    "R_FORMAT",
    "R_HDR",
    "R_INVERSE",
    "TRADE_SIZE",
    "commit_trades",
    "contract_of",
    "entry_point",
    "fill_trade",
    "route_row",
    "route_view",
    "set_contract",
]

MAX_MS = 9_000_000_000_000            # binance_wire.Ms: ms * 10**6 fits int64
TRADE_SIZE = TRADE.itemsize
_TRADE_REC = typed_pointer(nb.from_dtype(TRADE))
_I64P = typed_pointer(nb.int64)
_F64P = typed_pointer(nb.float64)
_MS_NS = 1_000_000

# the route row: commit target (hdr, ring, mask, words, stamp_word, waiters), the staging
# row, the record's exchange / symbol id / market, the frame format (FORMATS), the batch buffer
# and its capacity (records), and OKX's contract size (float64 bits) and inverse flag
R_HDR, R_STAGE, R_EXCHANGE, R_SID, R_MARKET, R_FORMAT, R_BATCH, R_CAPACITY, R_CONTRACT, \
    R_INVERSE = 0, 6, 7, 8, 9, 10, 11, 12, 13, 14
ROUTE_WORDS = 15
#: frame formats: Binance ``trade`` (its id is ``t``) and ``aggTrade`` (``a``), a Bybit
#: ``publicTrade`` push, an OKX ``trades`` push
FORMATS = {"trade": ord("t"), "aggTrade": ord("a"), "bybit": ord("b"), "okx": ord("o")}
#: every kernel's signature: (frame bytes, start, route address, recv ns, mono ns) -> int64
KERNEL = nb.int64(nb.types.Bytes(nb.uint8, 1, "C", readonly=True), nb.int64, nb.int64,
                  nb.int64, nb.int64)


@nb.njit(cache=True, inline="always")
def route_view(route: int) -> Any:  # pragma: no cover - njit
    """The route row at address ``route`` as an int64 array."""
    return nb.carray(_I64P(route), (ROUTE_WORDS,))


@nb.njit(cache=True, inline="always")
def contract_of(route: int) -> float:  # pragma: no cover - njit
    """The contract size stored in the route row (its float64 bits)."""
    return nb.carray(_F64P(route), (ROUTE_WORDS,))[R_CONTRACT]


@nb.njit(cache=True, inline="always")
def fill_trade(ctx: Any, addr: int, ts_ex_ns: int, recv: int, mono: int, flags: int,
               price: float, qty: float, trade_id: int, side: int) -> None:  # pragma: no cover
    """Fill the TRADE record at ``addr`` for the route's symbol."""
    r = nb.carray(_TRADE_REC(addr), (1,))[0]
    fill_prefix(r, ts_ex_ns, recv, mono, ctx[R_SID], ctx[R_EXCHANGE], ctx[R_MARKET], flags)
    r.price = price
    r.qty = qty
    r.trade_id = trade_id
    r.side = side


@nb.njit(cache=True, inline="always")
def commit_trades(ctx: Any, addr: int, count: int) -> None:  # pragma: no cover - njit
    """Commit ``count`` records at ``addr`` to the route's ring (one batch)."""
    commit_kernel(ctx[0], ctx[1], ctx[2], ctx[3], addr, count, ctx[4], ctx[5])


def route_row(commit_target: tuple[int, ...], stage: int, exchange: int, sid: int,
              market: int, fmt: str, batch: np.ndarray, contract: float = 1.0,
              inverse: bool = False) -> np.ndarray:
    """What the kernels need to commit one stream's trades: the ring's ``commit_target()``,
    the staging row's address, the record's exchange, symbol id and market, the frame
    format (a key of :data:`FORMATS`), a batch buffer of
    TRADE records for multi-trade messages, and the contract size (OKX: sizes are contracts;
    ``inverse``: worth ``contract`` of the quote currency). Keep the array (and ``batch``)
    alive while its address is in use; :func:`set_contract` updates the size in place."""
    if fmt not in FORMATS:
        raise ValueError(f"route_row: format {fmt!r} is not one of {sorted(FORMATS)}")
    row = np.array([*commit_target, stage, exchange, sid, market, FORMATS[fmt],
                    batch.ctypes.data, len(batch), 0, int(inverse)], np.int64)
    row[R_CONTRACT:R_CONTRACT + 1].view(np.float64)[0] = contract
    assert len(row) == ROUTE_WORDS and batch.dtype == TRADE
    return row


def set_contract(row: np.ndarray, contract: float, inverse: bool) -> None:
    """Change the contract size of a route row (OKX instruments arrive from REST)."""
    row[R_CONTRACT:R_CONTRACT + 1].view(np.float64)[0] = contract
    row[R_INVERSE] = int(inverse)


def entry_point(kernel: Any) -> Any:
    """A kernel's compiled function without numba's dispatcher (its one signature is
    compiled, or loaded from the cache, at import)."""
    return kernel.overloads[kernel.signatures[0]].entry_point
