"""Compiled fast paths for the hottest frames: a Binance trade (or aggTrade) and a Bybit
``publicTrade`` push.

:func:`binance_trade_kernel` and :func:`bybit_trades_kernel` scan the frame's bytes (no Python
objects), fill the trade records and commit them to the ring in one njit call (a Bybit push's
trades as one batch: they become visible together, as on the general path). The decode, the
attribute reads and the emitter calls of the general path cost ≈ 1 µs a frame more
(``benchmarks/ingest_bench.py``).

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
is declined. The bounds of ``binance_wire.Id``/``Ms`` and ``bybit_wire`` are checked the same
way.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from shm.atomics import commit_kernel, typed_pointer
from shm.layout import FLAG_ID_HASHED, TRADE

from .book_commit import fill_prefix
from .json_scan import (
    DECLINED,
    code,
    flat_value_end,
    int_value,
    literal_end,
    number_end,
    parse_decimal,
    string_end,
    word,
)

__all__ = ["DECLINED", "ROUTE_WORDS", "binance_trade_kernel", "bybit_trades_kernel",
           "route_row", "scan_binance_trade", "scan_bybit_trades"]

_MAX_MS = 9_000_000_000_000          # binance_wire.Ms
_QUOTE, _COLON, _COMMA, _CLOSE = 34, 58, 44, 125
_MS_NS = 1_000_000


_TRADE_REC = typed_pointer(nb.from_dtype(TRADE))
TRADE_SIZE = TRADE.itemsize
_I64P = typed_pointer(nb.int64)
#: hdr, ring, mask, words, stamp_word, waiters, stage, exchange, sid, market, id key (Binance),
#: batch address and capacity (records; Bybit stages a message's trades there)
ROUTE_WORDS = 13
_ID_MAX = 2**63 - 1
_MAX_TS_MS = _ID_MAX // 1_000_000     # bybit_wire._TS_MS
_OPEN_ARRAY, _CLOSE_ARRAY, _OPEN = 91, 93, 123
_DATA, _TYPE, _TS, _BT, _SEQ, _BUY, _SELL = (word(w) for w in (
    b"data", b"type", b"ts", b"BT", b"seq", b"Buy", b"Sell"))
# frame openings, compared as two integers: '{"stream":"' and '{"topic":"'
_STREAM_A, _STREAM_B = word(b'{"strea'), word(b'm":"')
_TOPIC_A, _TOPIC_B = word(b'{"topic'), word(b'":"')
_DATA_HEAD_A, _DATA_HEAD_B = word(b'","data'), word(b'":{')


_BYTES = nb.types.Bytes(nb.uint8, 1, "C", readonly=True)


@nb.njit(nb.int64(_BYTES, nb.int64, nb.int64, nb.int64, nb.int64), cache=True)
def binance_trade_kernel(raw, start, route, recv, mono):  # pragma: no cover - njit
    """Scan the ``trade`` event of a combined-stream frame whose data object follows
    ``start`` (the index of the quote closing the stream name), commit it, and return its
    trade id; :data:`DECLINED` (nothing committed) for anything the general path must see.
    ``route`` is the address of the stream's :func:`route_row` (five arguments instead of
    fourteen: numba unboxes each argument, ≈ 30 ns apiece).

    Fields as ``binance_wire.Trade``/``AggTrade``: ``E`` (ms, required), ``s`` (string,
    required), the id ``t`` or ``a`` (required), ``p``/``q`` (decimals, as strings or
    numbers), ``m`` (bool), ``T`` (ms, default 0); other keys are skipped (validated as flat
    JSON values)."""
    ctx = nb.carray(_I64P(route), (ROUTE_WORDS,))
    if ctx[0] == 0:
        return DECLINED   # the emitter closed: its ring may be unmapped
    idk = ctx[10]   # the id's key: t (trade) or a (aggTrade)
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
        if i >= n or buf[i] != _QUOTE:
            return DECLINED
        key_end = string_end(buf, i + 1, n)
        if key_end < 0 or key_end + 1 >= n or buf[key_end + 1] != _COLON:
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
                e_ms = int_value(buf, i, v_end, 0, _MAX_MS)
                if e_ms == DECLINED:
                    return DECLINED
            elif key == 84:
                t_ms = int_value(buf, i, v_end, 0, _MAX_MS)
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
        if i >= n:
            return DECLINED
        if buf[i] == _COMMA:
            i += 1
            continue
        if buf[i] == _CLOSE:
            break
        return DECLINED
    # the data object closed: the frame must close right after it
    if i + 2 != n or buf[i + 1] != _CLOSE:
        return DECLINED
    if (e_ms == DECLINED or trade_id == DECLINED or maker < 0 or not have_s
            or price != price or qty != qty):
        return DECLINED   # a required field missing, or a number we cannot convert exactly
    if t_ms == DECLINED:
        t_ms = 0
    stage = ctx[6]
    r = nb.carray(_TRADE_REC(stage), (1,))[0]
    fill_prefix(r, t_ms * _MS_NS, recv, mono, ctx[8], ctx[7], ctx[9], 0)
    r.price = price
    r.qty = qty
    r.trade_id = trade_id
    r.side = -1 if maker else 1
    commit_kernel(ctx[0], ctx[1], ctx[2], ctx[3], stage, 1, ctx[4], ctx[5])
    return trade_id


def route_row(commit_target: tuple[int, ...], stage: int, exchange: int, sid: int,
              market: int, id_key: str, batch: np.ndarray) -> np.ndarray:
    """What the kernels need to commit one stream's trades: the ring's ``commit_target()``,
    the staging row's address, the record's exchange, symbol id and market, the key of the
    trade id (Binance: ``t`` for ``trade``, ``a`` for ``aggTrade``) and a batch buffer of
    TRADE records for multi-trade messages. Keep the array (and ``batch``) alive while its
    address is in use."""
    row = np.array([*commit_target, stage, exchange, sid, market, ord(id_key),
                    batch.ctypes.data, len(batch)], np.int64)
    assert len(row) == ROUTE_WORDS and batch.dtype == TRADE
    return row


@nb.njit(cache=True)
def _bybit_trade(buf, i, n, row, recv, mono, sid, exchange, market):  # pragma: no cover
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
        if i >= n or buf[i] != _QUOTE:
            return -1
        key_end = string_end(buf, i + 1, n)
        if key_end < 0 or key_end + 1 >= n or buf[key_end + 1] != _COLON:
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
            t_ms = int_value(buf, v, end, 0, _MAX_MS)
            if t_ms == DECLINED:
                return -1
        elif klen == 1 and (k0 == 112 or k0 == 118):     # p, v
            if is_str:
                lo, hi = v + 1, end - 1
                if number_end(buf, lo, hi + 1) != hi:
                    return -1
            else:
                lo, hi = v, end
                if not (buf[v] == 45 or 48 <= buf[v] <= 57):
                    return -1   # a literal
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
        if i >= n:
            return -1
        if buf[i] == _COMMA:
            i += 1
            continue
        if buf[i] != _CLOSE:
            return -1
        break
    if (t_ms == DECLINED or trade_id == DECLINED or not have_s or not have_side
            or price != price or qty != qty):
        return -1
    r = nb.carray(_TRADE_REC(row), (1,))[0]
    fill_prefix(r, t_ms * _MS_NS, recv, mono, sid, exchange, market, flags)
    r.price = price
    r.qty = qty
    r.trade_id = trade_id
    r.side = side
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


@nb.njit(nb.int64(_BYTES, nb.int64, nb.int64, nb.int64, nb.int64), cache=True)
def bybit_trades_kernel(raw, start, route, recv, mono):  # pragma: no cover - njit
    """Scan a ``publicTrade`` push whose topic string ends at ``start``, commit its trades
    as one batch, and return how many; :data:`DECLINED` (nothing committed) otherwise.
    Top-level keys as ``bybit_wire.Push``: ``data`` (required, the trades), ``type``
    (string), ``ts`` (ms); others (``topic``, ``cts``): flat values, skipped."""
    ctx = nb.carray(_I64P(route), (ROUTE_WORDS,))
    if ctx[0] == 0:
        return DECLINED
    buf = raw
    n = len(buf)
    if (start < 10 or code(buf, 0, 7) != _TOPIC_A or code(buf, 7, 10) != _TOPIC_B
            or string_end(buf, 10, n) != start):
        return DECLINED
    batch, capacity, size = ctx[11], ctx[12], TRADE_SIZE
    sid, exchange, market = ctx[8], ctx[7], ctx[9]
    count = -1
    i = start + 1
    while True:
        if i >= n:
            return DECLINED
        if buf[i] == _CLOSE:
            break
        if buf[i] != _COMMA or i + 1 >= n or buf[i + 1] != _QUOTE:
            return DECLINED
        key_end = string_end(buf, i + 2, n)
        if key_end < 0 or key_end + 1 >= n or buf[key_end + 1] != _COLON:
            return DECLINED
        ks = i + 2
        i = key_end + 2
        key = code(buf, ks, key_end)
        if key == _DATA:
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
                i = _bybit_trade(buf, i, n, batch + count * size, recv, mono, sid, exchange,
                                 market)
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
            continue
        end = flat_value_end(buf, i, n)
        if end < 0:
            return DECLINED
        if key == _TYPE:
            if buf[i] != _QUOTE:
                return DECLINED   # msgspec wants a string
        elif key == _TS:
            if buf[i] == _QUOTE or int_value(buf, i, end, 0, _MAX_TS_MS) == DECLINED:
                return DECLINED
        i = end
    if i + 1 != n or count < 0:
        return DECLINED
    if count:
        commit_kernel(ctx[0], ctx[1], ctx[2], ctx[3], batch, count, ctx[4], ctx[5])
    return count


#: the compiled kernels without numba's dispatcher (each signature is compiled at import)
scan_binance_trade = binance_trade_kernel.overloads[  # type: ignore[attr-defined]
    binance_trade_kernel.signatures[0]].entry_point
scan_bybit_trades = bybit_trades_kernel.overloads[  # type: ignore[attr-defined]
    bybit_trades_kernel.signatures[0]].entry_point
