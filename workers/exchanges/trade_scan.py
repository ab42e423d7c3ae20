"""A compiled fast path for the hottest frame there is: one Binance trade (or aggTrade).

:func:`binance_trade_kernel` scans the frame's bytes (no Python objects), fills the trade
record and commits it to the ring in one njit call: the decode, the attribute reads and the
emitter call of the general path cost ≈ 1 µs a frame more (``benchmarks/ingest_bench.py``).

The scanner is deliberately narrow. It accepts exactly the JSON that Binance sends (no
whitespace, ASCII strings without escapes, plain numbers, the data object flat) and declines
everything else *before committing anything*, returning :data:`DECLINED`; the caller then
takes the general msgspec path, which decodes what it can and counts what is malformed. So
a frame is either committed here with the values msgspec would give, or handled there: the
fast path never decides that input is bad and never commits a partial record.

Numbers are exact: a decimal with at most 15 significant digits and at most 22 fraction
digits is ``mantissa / 10**fraction`` with both operands exact doubles, and one IEEE
division rounds correctly (Clinger's fast path), as msgspec's parser does. Anything longer
is declined. The bounds of ``binance_wire.Id``/``Ms`` are checked the same way.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from shm.atomics import commit_kernel, typed_pointer
from shm.layout import TRADE

from .book_commit import fill_prefix

__all__ = ["DECLINED", "ROUTE_WORDS", "binance_trade_kernel", "parse_decimal", "route_row",
           "scan_binance_trade"]

#: what the kernel returns when it leaves a frame to the general path
DECLINED = -(2**63)
_MAX_MS = 9_000_000_000_000          # binance_wire.Ms
_MAX_MANTISSA = 10**15               # ≤ 15 significant digits: exact as a double
_POW10 = np.array([10.0**i for i in range(23)])
_QUOTE, _COLON, _COMMA, _CLOSE = 34, 58, 44, 125
_MS_NS = 1_000_000


@nb.njit(cache=True)
def _string_end(buf: np.ndarray, i: int, n: int) -> int:  # pragma: no cover - njit
    """Index of the closing quote of the string whose first byte is at ``i`` (after the
    opening quote), or -1 for anything but printable ASCII without escapes."""
    while i < n:
        c = buf[i]
        if c == _QUOTE:
            return i
        if c < 32 or c >= 127 or c == 92:   # control, non-ASCII (UTF-8 checks), backslash
            return -1
        i += 1
    return -1


@nb.njit(cache=True)
def _number_end(buf: np.ndarray, i: int, n: int) -> int:  # pragma: no cover - njit
    """End of a JSON number starting at ``i`` (strict grammar), or -1."""
    if i < n and buf[i] == 45:   # '-'
        i += 1
    if i >= n or not 48 <= buf[i] <= 57:
        return -1
    if buf[i] == 48:
        i += 1
    else:
        while i < n and 48 <= buf[i] <= 57:
            i += 1
    if i < n and buf[i] == 46:   # '.'
        i += 1
        if i >= n or not 48 <= buf[i] <= 57:
            return -1
        while i < n and 48 <= buf[i] <= 57:
            i += 1
    if i < n and (buf[i] == 101 or buf[i] == 69):   # exponent: valid, but not for us
        return -1
    return i


@nb.njit(cache=True)
def parse_decimal(buf: np.ndarray, i: int, end: int) -> float:  # pragma: no cover - njit
    """The value of the decimal ``buf[i:end]`` (``-?digits[.digits]``, already validated by
    :func:`_number_end` or a string scan), or NaN if it cannot be converted exactly."""
    neg = buf[i] == 45
    if neg:
        i += 1
    mantissa = 0
    fraction = -1
    digits = 0
    while i < end:
        c = buf[i]
        if c == 46:
            if fraction >= 0:
                return np.nan
            fraction = 0
        elif 48 <= c <= 57:
            if digits or c != 48:
                digits += 1
            if digits > 15:
                return np.nan
            mantissa = mantissa * 10 + (c - 48)
            if fraction >= 0:
                fraction += 1
        else:
            return np.nan
        i += 1
    if fraction == 0 or fraction > 22:
        return np.nan   # "1." or too many fraction digits
    if neg and mantissa == 0:
        return np.nan   # "-0" is 0.0 to msgspec, "-0.0" is -0.0: not worth matching
    value = float(mantissa)
    if fraction > 0:
        value /= _POW10[fraction]
    return -value if neg else value


@nb.njit(cache=True)
def _int_value(buf: np.ndarray, i: int, end: int, low: int, high: int) -> int:  # pragma: no cover
    """The integer ``buf[i:end]`` if it is one within ``[low, high]``, else DECLINED."""
    neg = buf[i] == 45
    if neg:
        i += 1
    if end - i > 18:   # beyond what int64 holds for sure: the general path decides
        return DECLINED
    v = 0
    while i < end:
        c = buf[i]
        if not 48 <= c <= 57:
            return DECLINED
        v = v * 10 + (c - 48)
        i += 1
    if neg:
        v = -v
    return v if low <= v <= high else DECLINED


_TRADE_REC = typed_pointer(nb.from_dtype(TRADE))
_I64P = typed_pointer(nb.int64)
#: hdr, ring, mask, words, stamp_word, waiters, stage, exchange, sid, market, id key
ROUTE_WORDS = 11


_BYTES = nb.types.Bytes(nb.uint8, 1, "C", readonly=True)


@nb.njit(nb.int64(_BYTES, nb.int64, nb.int64, nb.int64, nb.int64), cache=True)
def binance_trade_kernel(buf, start, route, recv, mono):  # pragma: no cover - njit
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
    n = len(buf)
    # the whole frame is checked, the envelope too: '{"stream":"<name>","data":{'
    opening = b'{"stream":"'
    if n < 11 or _string_end(buf, 11, n) != start:
        return DECLINED
    for k in range(11):
        if buf[k] != opening[k]:
            return DECLINED
    head = b'","data":{'
    i = start
    if i + 10 > n:
        return DECLINED
    for k in range(10):
        if buf[i + k] != head[k]:
            return DECLINED
    i += 10
    e_ms = t_ms = trade_id = DECLINED
    price = qty = np.nan
    maker = -1
    have_s = False
    while True:
        if i >= n or buf[i] != _QUOTE:
            return DECLINED
        key_end = _string_end(buf, i + 1, n)
        if key_end < 0 or key_end + 1 >= n or buf[key_end + 1] != _COLON:
            return DECLINED
        key = buf[i + 1] if key_end == i + 2 else 0   # the fields we read are one letter
        i = key_end + 2
        if i >= n:
            return DECLINED
        c = buf[i]
        if c == _QUOTE:   # a string value
            v_start = i + 1
            v_end = _string_end(buf, v_start, n)
            if v_end < 0:
                return DECLINED
            i = v_end + 1
            if key == 112 or key == 113:   # p, q: a decimal in a string (strict=False)
                if _number_end(buf, v_start, v_end + 1) != v_end:
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
            word = b"true" if c == 116 else b"false"
            if i + len(word) > n:
                return DECLINED
            for k in range(len(word)):
                if buf[i + k] != word[k]:
                    return DECLINED
            i += len(word)
            if key == 109:   # m
                maker = 1 if c == 116 else 0
            elif key == 69 or key == 84 or key == idk or key == 112 or key == 113 \
                    or key == 115:
                return DECLINED   # a bool where msgspec wants something else
        elif c == 45 or 48 <= c <= 57:   # a number
            v_end = _number_end(buf, i, n)
            if v_end < 0:
                return DECLINED
            if key == 69:
                e_ms = _int_value(buf, i, v_end, 0, _MAX_MS)
                if e_ms == DECLINED:
                    return DECLINED
            elif key == 84:
                t_ms = _int_value(buf, i, v_end, 0, _MAX_MS)
                if t_ms == DECLINED:
                    return DECLINED
            elif key == idk:
                trade_id = _int_value(buf, i, v_end, -1, 2**63 - 1)
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
              market: int, id_key: str) -> np.ndarray:
    """What :func:`binance_trade_kernel` needs to commit one stream's trades: the ring's
    ``commit_target()``, the staging row's address, the record's exchange, symbol id and
    market, and the key of the trade id (``t`` for ``trade``, ``a`` for ``aggTrade``). Keep
    the array alive while its address is in use."""
    row = np.array([*commit_target, stage, exchange, sid, market, ord(id_key)], np.int64)
    assert len(row) == ROUTE_WORDS
    return row


#: the compiled kernel without numba's dispatcher (its one signature is compiled at import)
scan_binance_trade = binance_trade_kernel.overloads[  # type: ignore[attr-defined]
    binance_trade_kernel.signatures[0]].entry_point
