"""The compiled path of a Binance ``trade`` or ``aggTrade`` frame (see :mod:`.trade_scan`)."""

from __future__ import annotations

import numba as nb
import numpy as np

from .json_scan import (
    DECLINED,
    code,
    int_value,
    key_at,
    literal_end,
    member_sep,
    number_end,
    parse_decimal,
    string_end,
    word,
)
from .trade_scan import (
    KERNEL,
    MAX_MS,
    R_FORMAT,
    R_HDR,
    R_STAGE,
    commit_trades,
    entry_point,
    fill_trade,
    route_view,
)

__all__ = ["binance_trade_kernel", "scan_binance_trade"]

_QUOTE, _CLOSE = 34, 125
_MS_NS = 1_000_000
# the frame's opening, compared as integers: '{"stream":"' and '","data":{'
_STREAM_A, _STREAM_B = word(b'{"strea'), word(b'm":"')
_DATA_HEAD_A, _DATA_HEAD_B = word(b'","data'), word(b'":{')


@nb.njit(KERNEL, cache=True)
def binance_trade_kernel(raw, start, route, recv, mono):  # pragma: no cover - njit
    """Scan the ``trade`` event of a combined-stream frame whose data object follows
    ``start`` (the index of the quote closing the stream name), commit it, and return its
    trade id; :data:`DECLINED` (nothing committed) for anything the general path must see.

    Fields as ``binance_wire.Trade``/``AggTrade``: ``E`` (ms, required), ``s`` (string,
    required), the id ``t`` or ``a`` (required), ``p``/``q`` (decimals, as strings or
    numbers), ``m`` (bool), ``T`` (ms, default 0); other keys are skipped (validated as flat
    JSON values)."""
    ctx = route_view(route)
    if ctx[R_HDR] == 0:
        return DECLINED   # the emitter closed: its ring may be unmapped
    idk = ctx[R_FORMAT]   # the id's key: FORMATS has t for trade, a for aggTrade
    buf = raw
    n = len(buf)
    # the whole frame is checked, the envelope too: '{"stream":"<name>","data":{'
    if (start < 11 or code(buf, 0, 7) != _STREAM_A or code(buf, 7, 11) != _STREAM_B
            or string_end(buf, 11, n) != start):
        return DECLINED
    i = start
    if i + 10 > n or code(buf, i, i + 7) != _DATA_HEAD_A or code(buf, i + 7, i + 10) != \
            _DATA_HEAD_B:
        return DECLINED
    i += 10
    e_ms = t_ms = trade_id = DECLINED
    price = qty = np.nan
    maker = -1
    have_s = False
    while True:
        key_end = key_at(buf, i, n)
        if key_end < 0:
            return DECLINED
        key = buf[i + 1] if key_end == i + 2 else 0   # the fields we read are one letter
        i = key_end + 2
        if i >= n:
            return DECLINED
        c = buf[i]
        if c == _QUOTE:   # a string value
            v_start = i + 1
            v_end = string_end(buf, v_start, n)
            if v_end < 0:
                return DECLINED
            i = v_end + 1
            if key == 112 or key == 113:   # p, q: a decimal in a string (strict=False)
                if number_end(buf, v_start, v_end + 1) != v_end:
                    return DECLINED
                value = parse_decimal(buf, v_start, v_end)
                if key == 112:
                    price = value
                else:
                    qty = value
            elif key == 115:   # s
                have_s = True
            elif key == 69 or key == 84 or key == idk or key == 109:   # E, T, t, m
                return DECLINED   # as strings: the general path decides
        elif c == 116 or c == 102:   # true / false
            end = literal_end(buf, i, n)
            if end < 0:
                return DECLINED
            i = end
            if key == 109:   # m
                maker = 1 if c == 116 else 0
            elif key == 69 or key == 84 or key == idk or key == 112 or key == 113 \
                    or key == 115:
                return DECLINED   # a bool where msgspec wants something else
        elif c == 45 or 48 <= c <= 57:   # a number
            v_end = number_end(buf, i, n)
            if v_end < 0:
                return DECLINED
            if key == 69:
                e_ms = int_value(buf, i, v_end, 0, MAX_MS)
                if e_ms == DECLINED:
                    return DECLINED
            elif key == 84:
                t_ms = int_value(buf, i, v_end, 0, MAX_MS)
                if t_ms == DECLINED:
                    return DECLINED
            elif key == idk:
                trade_id = int_value(buf, i, v_end, -1, 2**63 - 1)
                if trade_id == DECLINED:
                    return DECLINED
            elif key == 112 or key == 113:
                value = parse_decimal(buf, i, v_end)
                if key == 112:
                    price = value
                else:
                    qty = value
            elif key == 115 or key == 109:
                return DECLINED
            i = v_end
        else:   # null, nested values: the general path
            return DECLINED
        sep = member_sep(buf, i, n)
        if sep < 0:
            return DECLINED
        if sep == 0:
            break
        i += 1
    # the data object closed: the frame must close right after it
    if i + 2 != n or buf[i + 1] != _CLOSE:
        return DECLINED
    if (e_ms == DECLINED or trade_id == DECLINED or maker < 0 or not have_s
            or price != price or qty != qty):
        return DECLINED   # a required field missing, or a number we cannot convert exactly
    if t_ms == DECLINED:
        t_ms = 0
    stage = ctx[R_STAGE]
    fill_trade(ctx, stage, t_ms * _MS_NS, recv, mono, 0, price, qty, trade_id,
               -1 if maker else 1)
    commit_trades(ctx, stage, 1)
    return trade_id


#: :func:`binance_trade_kernel` without numba's dispatcher
scan_binance_trade = entry_point(binance_trade_kernel)
