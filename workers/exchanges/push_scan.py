"""The compiled path of a multi-trade push, Bybit ``publicTrade`` or OKX ``trades`` (see
:mod:`.trade_scan`): the loop over the top-level keys and the ``data`` array is shared; the
opening and the trade objects are the venue's (:mod:`.bybit_scan`, :mod:`.okx_scan`)."""

from __future__ import annotations

import numba as nb

from .bybit_scan import bybit_opening, bybit_top_value_ok, bybit_trade
from .json_scan import DECLINED, code, flat_value_end, key_at, word
from .okx_scan import okx_opening, okx_trade
from .trade_scan import (
    FORMATS,
    KERNEL,
    R_BATCH,
    R_CAPACITY,
    R_FORMAT,
    R_HDR,
    TRADE_SIZE,
    commit_trades,
    contract_of,
    entry_point,
    route_view,
)

__all__ = ["push_trades_kernel", "scan_push_trades"]

_COMMA, _CLOSE, _OPEN_ARRAY, _CLOSE_ARRAY = 44, 125, 91, 93
_BYBIT, _OKX = FORMATS["bybit"], FORMATS["okx"]
_DATA, _EVENT = word(b"data"), word(b"event")


@nb.njit(KERNEL, cache=True)
def push_trades_kernel(raw, start, route, recv, mono):  # pragma: no cover - njit
    """Scan a push whose topic (Bybit) or arg (OKX) ends at ``start``, commit its trades as
    one batch and return how many; :data:`DECLINED` (nothing committed) otherwise.

    Top-level keys as ``bybit_wire.Push`` / ``okx_wire.TradePush``: ``data`` holds the
    trades (required by Bybit; absent: none for OKX); OKX's ``event`` declines (the general
    path answers events); other keys are flat values (see :func:`bybit_top_value_ok`)."""
    ctx = route_view(route)
    if ctx[R_HDR] == 0:
        return DECLINED
    buf = raw
    n = len(buf)
    venue = ctx[R_FORMAT]
    if venue == _BYBIT:
        if not bybit_opening(buf, start, n):
            return DECLINED
    elif venue != _OKX or not okx_opening(buf, start, n):
        return DECLINED
    contract = contract_of(route)
    batch, capacity = ctx[R_BATCH], ctx[R_CAPACITY]
    count = -1
    i = start + 1
    while True:
        if i >= n:
            return DECLINED
        if buf[i] == _CLOSE:
            break
        if buf[i] != _COMMA:
            return DECLINED
        key_end = key_at(buf, i + 1, n)
        if key_end < 0:
            return DECLINED
        key = code(buf, i + 2, key_end)
        i = key_end + 2
        if key != _DATA:
            end = flat_value_end(buf, i, n)
            if end < 0 or (key == _EVENT and venue == _OKX):
                return DECLINED
            if venue == _BYBIT and not bybit_top_value_ok(buf, key, i, end):
                return DECLINED
            i = end
            continue
        if count >= 0 or i >= n or buf[i] != _OPEN_ARRAY:
            return DECLINED   # "data" twice, or not an array
        count = 0
        i += 1
        if i < n and buf[i] == _CLOSE_ARRAY:
            i += 1
            continue
        while True:
            if count == capacity:
                return DECLINED
            row = batch + count * TRADE_SIZE
            if venue == _BYBIT:
                i = bybit_trade(buf, i, n, ctx, row, recv, mono)
            else:
                i = okx_trade(buf, i, n, ctx, contract, row, recv, mono)
            if i < 0:
                return DECLINED
            count += 1
            if i < n and buf[i] == _COMMA:
                i += 1
                continue
            if i < n and buf[i] == _CLOSE_ARRAY:
                i += 1
                break
            return DECLINED
    if i + 1 != n or (count < 0 and venue == _BYBIT):
        return DECLINED
    if count > 0:
        commit_trades(ctx, batch, count)
    return max(count, 0)


#: :func:`push_trades_kernel` without numba's dispatcher
scan_push_trades = entry_point(push_trades_kernel)
