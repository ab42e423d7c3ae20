"""Apply an OKX book message straight from the frame's bytes: one call, integer arguments.

:meth:`OkxBook.apply_json` hands the kernel two ``msgspec.Raw`` sides and ten arrays through
numba's dispatcher, which costs ~2.5 µs a call before any work (typing each argument; a
``Raw`` goes through the buffer protocol). Here the kernel gets addresses only: the book's
arrays from a small context array built once per book, and the levels as offsets into the
frame, whose bytes it reads in place. It is called through its compiled entry point.

The address of a ``bytes`` object's data is ``id(frame) + bytes.__basicsize__ - 1`` in CPython
(``PyBytesObject.ob_sval``); the module checks that against numpy once at import. The frame
must stay referenced during the call, which the caller's own reference guarantees.

Only a push with one book item whose ``"asks":`` and ``"bids":`` keys are found after its
``"data":`` key takes this path; anything else, and the rare number the kernel's exact
decimal parser declines, goes through :meth:`OkxBook.apply_json`.
"""

from __future__ import annotations

from typing import Any

import numba as nb
import numpy as np
from numba import types

from shm.atomics import address_of, typed_pointer

from .book import BookOverflow
from .okx_book import _FULL, _OK, OkxBook, _apply_and_checksum

__all__ = ["apply_frame"]

_BYTES_DATA = bytes.__basicsize__ - 1   # offset of ob_sval in a CPython bytes object
_probe = b"microstream"
assert address_of(np.frombuffer(_probe, np.uint8)) == id(_probe) + _BYTES_DATA, \
    "bytes layout differs from CPython's: okx_frame cannot read frames in place"

_f64p, _i64p, _i32p, _u8p = (typed_pointer(t) for t in (
    types.float64, types.int64, types.int32, types.uint8))
# context slots (int64): array addresses and the shapes that go with them
(X_SIDES, X_CAP, X_SLOTS, X_STR, X_WIDTH, X_LEN, X_OFFS, X_VALS, X_BUF, X_BUF_LEN) = range(10)
_I64 = nb.int64


@nb.njit(types.UniTuple(_I64, 6)(_I64, _I64, _I64, _I64, _I64, _I64, _I64, nb.float64, _I64),
         cache=True)
def apply_frame_kernel(ctx_addr, frame_addr, frame_len, bids_at, asks_at, n_bids, n_asks,
                       scale, inverse):  # pragma: no cover - njit
    """:func:`~workers.exchanges.okx_book._apply_and_checksum` on a book given by its context
    and sides given as offsets of their JSON arrays in the frame at ``frame_addr``."""
    x = nb.carray(_i64p(ctx_addr), (10,))
    cap, width = x[X_CAP], x[X_WIDTH]
    sides = nb.carray(_f64p(x[X_SIDES]), (4, cap))
    slots = nb.carray(_i32p(x[X_SLOTS]), (2, cap))
    strings = nb.carray(_u8p(x[X_STR]), (2, cap, 2, width))
    lengths = nb.carray(_u8p(x[X_LEN]), (2, cap, 2))
    offs = nb.carray(_i64p(x[X_OFFS]), (2 * cap, 4))
    vals = nb.carray(_f64p(x[X_VALS]), (2 * cap, 2))
    buf = nb.carray(_u8p(x[X_BUF]), (x[X_BUF_LEN],))
    frame = nb.carray(_u8p(frame_addr), (frame_len,))
    return _apply_and_checksum(sides, slots, strings, lengths, n_bids, n_asks,
                               frame[bids_at:], frame[asks_at:], offs, vals, False, scale,
                               inverse != 0, buf)


_KERNEL = apply_frame_kernel.overloads[  # the compiled function: no dispatcher
    apply_frame_kernel.signatures[0]].entry_point  # type: ignore[attr-defined]


def apply_frame(book: OkxBook, frame: bytes, bids: Any, asks: Any) -> int:
    """Apply the single book item of ``frame`` (its decoded ``bids``/``asks`` Raw sides are
    the fallback) and return the book's checksum, like :meth:`OkxBook.apply_json`."""
    data_at = frame.find(b'"data":') if type(frame) is bytes else -1
    bids_at = frame.find(b'"bids":', data_at) if data_at >= 0 else -1
    asks_at = frame.find(b'"asks":', data_at) if data_at >= 0 else -1
    if bids_at < 0 or asks_at < 0:
        return book.apply_json(bids, asks)
    status, n, m, mid, end, crc = _KERNEL(book.context_address(), id(frame) + _BYTES_DATA,
                                          len(frame), bids_at + 7, asks_at + 7, book.n_bids,
                                          book.n_asks, book.qty_scale, int(book.inverse))
    if status == _OK:
        book.applied(n, m, mid, end)
        return crc
    if status == _FULL:  # partly applied, like apply_json
        book.applied(n, m, 0, 0)
        raise BookOverflow(f"book side full ({book.capacity} levels)")
    book.applied(book.n_bids, book.n_asks, 0, 0)
    return book.apply_json(bids, asks)  # the slow number path, or its own error
