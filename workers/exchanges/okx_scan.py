"""OKX ``trades`` pushes for the compiled path (:mod:`.push_scan` runs the loop; see
:mod:`.trade_scan`): the frame's opening and one trade object, sized by the contract."""

from __future__ import annotations

import numba as nb
import numpy as np

from .json_scan import (
    DECLINED,
    code,
    flat_value_end,
    int_value,
    key_at,
    member_sep,
    number_span,
    parse_decimal,
    word,
)
from .trade_scan import (
    MAX_MS,
    R_INVERSE,
    fill_trade,
)

__all__ = ["okx_opening", "okx_trade"]

_QUOTE, _OPEN = 34, 123
_MS_NS = 1_000_000
_ID_MAX = 2**63 - 1
_INST, _TRADE_ID, _PX, _SZ, _SIDE, _TS, _COUNT, _BUY, _SELL = (
    word(w) for w in (b"instId", b"tradeId", b"px", b"sz", b"side", b"ts", b"count", b"buy",
                      b"sell"))
# the frame's opening '{"arg":{"channel":"', compared as integers
_ARG_A, _ARG_B, _ARG_C = word(b'{"arg":'), word(b'{"chann'), word(b'el":"')


@nb.njit(cache=True)
def _flat_object_end(buf, i, n):  # pragma: no cover - njit
    """Index of the ``}`` closing the flat object that opens at ``i``, or -1."""
    if i >= n or buf[i] != _OPEN:
        return -1
    i += 1
    while True:
        key_end = key_at(buf, i, n)
        if key_end < 0:
            return -1
        i = flat_value_end(buf, key_end + 2, n)
        sep = member_sep(buf, i, n) if i >= 0 else -1
        if sep <= 0:
            return i if sep == 0 else -1
        i += 1


@nb.njit(cache=True)
def okx_trade(buf, i, n, ctx, contract, row, recv, mono):  # pragma: no cover - njit
    """Scan one trade object at ``i`` into ``row``; the index after it, or -1. Fields as
    ``okx_wire.Trade``: ``instId``, ``tradeId`` (a decimal string: ``int()`` on the general
    path), ``px``, ``sz`` (decimals), ``side`` (``buy``/``sell``), ``ts`` (ms), optional
    ``count`` (int); other keys: flat values, skipped."""
    if i >= n or buf[i] != _OPEN:
        return -1
    i += 1
    ts_ms = trade_id = DECLINED
    price = qty = np.nan
    side = 0
    have_inst = False
    while True:
        key_end = key_at(buf, i, n)
        if key_end < 0:
            return -1
        key = code(buf, i + 1, key_end)
        v = key_end + 2
        end = flat_value_end(buf, v, n)
        if end < 0:
            return -1
        is_str = buf[v] == _QUOTE
        if key == _INST:
            if not is_str:
                return -1
            have_inst = True
        elif key == _TRADE_ID:
            if not is_str or not 0 < end - v - 2 <= 18:
                return -1
            trade_id = int_value(buf, v + 1, end - 1, 0, _ID_MAX)
            if trade_id == DECLINED:
                return -1
        elif key == _PX or key == _SZ:
            lo, hi = number_span(buf, v, end)
            if lo < 0:
                return -1
            value = parse_decimal(buf, lo, hi)
            if key == _PX:
                price = value
            else:
                qty = value
        elif key == _SIDE:
            if not is_str:
                return -1
            value_code = code(buf, v + 1, end - 1)
            side = 1 if value_code == _BUY else -1 if value_code == _SELL else 0
            if side == 0:
                return -1   # Literal["buy", "sell"]
        elif key == _TS or key == _COUNT:
            lo, hi = number_span(buf, v, end)
            if lo < 0:
                return -1
            if key == _TS:
                ts_ms = int_value(buf, lo, hi, 0, MAX_MS)
                if ts_ms == DECLINED:
                    return -1
            elif int_value(buf, lo, hi, -_ID_MAX, _ID_MAX) == DECLINED:
                return -1
        i = end
        sep = member_sep(buf, i, n)
        if sep < 0:
            return -1
        if sep == 0:
            break
        i += 1
    if (ts_ms == DECLINED or trade_id == DECLINED or side == 0 or not have_inst
            or price != price or qty != qty):
        return -1
    if ctx[R_INVERSE]:   # OkxFeed._base: contracts to base units, in the same operations
        base = qty * contract / price if price > 0 else np.nan
    else:
        base = qty * contract
    fill_trade(ctx, row, ts_ms * _MS_NS, recv, mono, 0, price, base, trade_id, side)
    return i + 1


@nb.njit(cache=True, inline="always")
def okx_opening(buf, start, n):  # pragma: no cover - njit
    """True if the frame opens with ``{"arg":{"channel":"`` and the arg is a flat object
    closing at ``start``."""
    return (start >= 19 and code(buf, 0, 7) == _ARG_A and code(buf, 7, 14) == _ARG_B
            and code(buf, 14, 19) == _ARG_C and _flat_object_end(buf, 7, n) == start)
