"""Bybit ``publicTrade`` pushes for the compiled path (:mod:`.push_scan` runs the loop; see
:mod:`.trade_scan`): the frame's opening, its top-level values and one trade object."""

from __future__ import annotations

import numba as nb
import numpy as np

from shm.layout import FLAG_ID_HASHED

from .json_scan import (
    DECLINED,
    code,
    flat_value_end,
    int_value,
    key_at,
    literal_end,
    member_sep,
    number_span,
    parse_decimal,
    string_end,
    word,
)
from .trade_scan import (
    MAX_MS,
    fill_trade,
)

__all__ = ["bybit_opening", "bybit_top_value_ok", "bybit_trade"]

_QUOTE, _CLOSE, _OPEN = 34, 125, 123
_MS_NS = 1_000_000
_ID_MAX = 2**63 - 1
_MAX_TS_MS = _ID_MAX // 1_000_000     # bybit_wire._TS_MS
_TYPE, _TS, _BT, _SEQ, _BUY, _SELL = (word(w) for w in (
    b"type", b"ts", b"BT", b"seq", b"Buy", b"Sell"))
_TOPIC_A, _TOPIC_B = word(b'{"topic'), word(b'":"')   # the frame's opening '{"topic":"'


@nb.njit(cache=True)
def bybit_trade(buf, i, n, ctx, row, recv, mono):  # pragma: no cover - njit
    """Scan one ``publicTrade`` object at ``i`` into ``row``; the index after it, or -1.
    Fields as ``bybit_wire.Trade``: ``T`` (ms), ``s``, ``S``, ``v``, ``p``, ``i`` (a decimal
    id or a UUID, folded as ``bybit_wire.trade_id`` does; other ids: declined), optional
    ``L`` (string), ``BT`` (bool), ``seq`` (int); other keys: flat values, skipped."""
    if i >= n or buf[i] != _OPEN:
        return -1
    i += 1
    t_ms = trade_id = DECLINED
    price = qty = np.nan
    side = flags = 0
    have_s = have_side = False
    if i < n and buf[i] == _CLOSE:
        return -1   # required fields missing
    while True:
        key_end = key_at(buf, i, n)
        if key_end < 0:
            return -1
        ks = i + 1
        klen = key_end - ks
        k0 = buf[ks]
        i = key_end + 2
        v = i
        end = flat_value_end(buf, v, n)
        if end < 0:
            return -1
        is_str = buf[v] == _QUOTE
        if klen == 1 and k0 == 84:                       # T
            if is_str:
                return -1
            t_ms = int_value(buf, v, end, 0, MAX_MS)
            if t_ms == DECLINED:
                return -1
        elif klen == 1 and (k0 == 112 or k0 == 118):     # p, v
            lo, hi = number_span(buf, v, end)
            if lo < 0:
                return -1
            value = parse_decimal(buf, lo, hi)
            if k0 == 112:
                price = value
            else:
                qty = value
        elif klen == 1 and (k0 == 115 or k0 == 83 or k0 == 105 or k0 == 76):   # s S i L
            if not is_str:
                return -1
            lo, hi = v + 1, end - 1
            if k0 == 115:
                have_s = True
            elif k0 == 83:
                have_side = True
                value_code = code(buf, lo, hi)
                side = 1 if value_code == _BUY else -1 if value_code == _SELL else 0
            elif k0 == 105:
                trade_id, flags = _bybit_id(buf, lo, hi)
                if trade_id == DECLINED:
                    return -1
        elif code(buf, ks, key_end) == _BT:
            if buf[v] != 116 and buf[v] != 102:
                return -1   # not a bool
        elif code(buf, ks, key_end) == _SEQ:
            if is_str or literal_end(buf, v, n) >= 0:
                return -1
            if int_value(buf, v, end, -_ID_MAX, _ID_MAX) == DECLINED:
                return -1
        i = end
        sep = member_sep(buf, i, n)
        if sep < 0:
            return -1
        if sep == 0:
            break
        i += 1
    if (t_ms == DECLINED or trade_id == DECLINED or not have_s or not have_side
            or price != price or qty != qty):
        return -1
    fill_trade(ctx, row, t_ms * _MS_NS, recv, mono, flags, price, qty, trade_id, side)
    return i + 1


@nb.njit(cache=True)
def _hex(c: int) -> int:  # pragma: no cover - njit
    if 48 <= c <= 57:
        return c - 48
    if 97 <= c <= 102:
        return c - 87
    if 65 <= c <= 70:
        return c - 55
    return -1


@nb.njit(cache=True)
def _bybit_id(buf, lo, hi):  # pragma: no cover - njit
    """``bybit_wire.trade_id`` of ``buf[lo:hi]`` for a decimal id (≤ 18 digits) or a UUID
    in its 8-4-4-4-12 form: ``(id, flags)``; ``(DECLINED, 0)`` for anything else."""
    if 0 < hi - lo <= 18:
        v = 0
        for k in range(lo, hi):
            c = buf[k]
            if not 48 <= c <= 57:
                v = -1
                break
            v = v * 10 + (c - 48)
        if v >= 0:
            return v, 0
    if hi - lo != 36:
        return DECLINED, 0
    v = 0
    for k in range(36):
        c = buf[lo + k]
        if k == 8 or k == 13 or k == 18 or k == 23:
            if c != 45:
                return DECLINED, 0
            continue
        d = _hex(c)
        if d < 0:
            return DECLINED, 0
        v = ((v << 4) | d) & _ID_MAX   # the low 63 bits of the 128-bit number
    return v, FLAG_ID_HASHED


@nb.njit(cache=True, inline="always")
def bybit_opening(buf, start, n):  # pragma: no cover - njit
    """True if the frame opens with ``{"topic":"`` and a plain topic string ending at
    ``start``."""
    return (start >= 10 and code(buf, 0, 7) == _TOPIC_A and code(buf, 7, 10) == _TOPIC_B
            and string_end(buf, 10, n) == start)


@nb.njit(cache=True, inline="always")
def bybit_top_value_ok(buf, key, i, end):  # pragma: no cover - njit
    """Whether a top-level value other than ``data`` passes ``bybit_wire.Push``: ``type``
    a string, ``ts`` ms within bounds; other keys (``topic``, ``cts``) anything flat."""
    if key == _TYPE:
        return buf[i] == _QUOTE
    if key == _TS:
        return buf[i] != _QUOTE and int_value(buf, i, end, 0, _MAX_TS_MS) != DECLINED
    return True
