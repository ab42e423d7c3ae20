"""Byte-level JSON scanning for the compiled trade paths (:mod:`.trade_scan`).

Each helper accepts a strict subset of JSON and answers -1, NaN or :data:`DECLINED` for
anything outside it, so a caller can decline a frame (leave it to msgspec) instead of ever
interpreting input differently from msgspec: printable ASCII strings without escapes, numbers
without exponents, flat values. Decimals convert exactly (Clinger's fast path, see
:func:`parse_decimal`).
"""

from __future__ import annotations

import numba as nb
import numpy as np

__all__ = [
    "DECLINED",
    "code",
    "flat_value_end",
    "int_value",
    "key_at",
    "literal_end",
    "member_sep",
    "number_end",
    "number_span",
    "parse_decimal",
    "string_end",
    "word",
]

#: what a kernel returns when it leaves a frame to the general path
DECLINED = -(2**63)
_POW10 = np.array([10.0**i for i in range(23)])
_QUOTE = 34
# inside a string: 0 plain, 1 the closing quote, 2 not ours (control, backslash, non-ASCII:
# escapes and UTF-8 are left to msgspec)
_STRING_BYTES = np.array([1 if c == 34 else 2 if c < 32 or c == 92 or c >= 127 else 0
                          for c in range(256)], np.uint8)
_TRUE, _NULL, _FALS = (int.from_bytes(w, "little") for w in (b"true", b"null", b"fals"))


@nb.njit(cache=True, inline="always")
def string_end(buf: np.ndarray, i: int, n: int) -> int:  # pragma: no cover - njit
    """Index of the closing quote of the string whose first byte is at ``i`` (after the
    opening quote), or -1 for anything but printable ASCII without escapes."""
    while i < n:
        kind = _STRING_BYTES[buf[i]]   # one table load a byte instead of four compares
        if kind:
            return i if kind == 1 else -1
        i += 1
    return -1


@nb.njit(cache=True, inline="always")
def number_end(buf: np.ndarray, i: int, n: int) -> int:  # pragma: no cover - njit
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


@nb.njit(cache=True, inline="always")
def parse_decimal(buf: np.ndarray, i: int, end: int) -> float:  # pragma: no cover - njit
    """The value of the decimal ``buf[i:end]`` (``-?digits[.digits]``, already validated by
    :func:`number_end` or a string scan), or NaN if it cannot be converted exactly."""
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


@nb.njit(cache=True, inline="always")
def int_value(buf: np.ndarray, i: int, end: int, low: int, high: int) -> int:  # pragma: no cover
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


@nb.njit(cache=True, inline="always")
def literal_end(buf: np.ndarray, i: int, n: int) -> int:  # pragma: no cover - njit
    """End of ``true``, ``false`` or ``null`` starting at ``i``, or -1."""
    four = code(buf, i, min(i + 4, n))
    if four == _TRUE or four == _NULL:
        return i + 4
    if four == _FALS and i + 4 < n and buf[i + 4] == 101:
        return i + 5
    return -1


@nb.njit(cache=True, inline="always")
def flat_value_end(buf: np.ndarray, i: int, n: int) -> int:  # pragma: no cover - njit
    """End of the string, number or literal starting at ``i``; -1 for anything else (an
    object or array: the callers decline nested values they do not read)."""
    if i >= n:
        return -1
    c = buf[i]
    if c == _QUOTE:
        end = string_end(buf, i + 1, n)
        return end + 1 if end >= 0 else -1
    if c == 45 or 48 <= c <= 57:
        return number_end(buf, i, n)
    return literal_end(buf, i, n)


def word(text: bytes) -> int:
    """The :func:`code` of ``text`` (at most 7 bytes), computed in Python for constants."""
    assert len(text) <= 7
    return int.from_bytes(text, "little")


@nb.njit(cache=True, inline="always")
def code(buf: np.ndarray, lo: int, hi: int) -> int:  # pragma: no cover - njit
    """``buf[lo:hi]`` packed little-endian into an int (-1 if longer than 7 bytes): keys and
    small values compare as one integer against :func:`word` constants. Bytes literals
    inside njit code would be allocated at every use."""
    if hi - lo > 7 or hi < lo:
        return -1
    v = 0
    for k in range(hi - 1, lo - 1, -1):
        v = (v << 8) | buf[k]
    return v


@nb.njit(cache=True, inline="always")
def key_at(buf: np.ndarray, i: int, n: int) -> int:  # pragma: no cover - njit
    """Index of the quote closing the object key that opens at ``i`` (checked: a quote, a
    plain string, then a colon), or -1."""
    if i >= n or buf[i] != _QUOTE:
        return -1
    end = string_end(buf, i + 1, n)
    if end < 0 or end + 1 >= n or buf[end + 1] != 58:
        return -1
    return end


@nb.njit(cache=True, inline="always")
def number_span(buf: np.ndarray, v: int, end: int) -> tuple[int, int]:  # pragma: no cover
    """``(lo, hi)`` of the number in the value ``buf[v:end]``: a string holding a JSON number
    or a bare number (strict=False lets msgspec read both); ``(-1, -1)`` for anything else."""
    if buf[v] == _QUOTE:
        lo, hi = v + 1, end - 1
        if lo >= hi or number_end(buf, lo, hi + 1) != hi:
            return -1, -1
        return lo, hi
    if not (buf[v] == 45 or 48 <= buf[v] <= 57):
        return -1, -1   # a literal
    return v, end


@nb.njit(cache=True, inline="always")
def member_sep(buf: np.ndarray, i: int, n: int) -> int:  # pragma: no cover - njit
    """What follows an object member ending at ``i``: 1 a comma (another member), 0 the
    object's closing brace (at ``i``), -1 anything else."""
    if i >= n:
        return -1
    if buf[i] == 44:
        return 1
    return 0 if buf[i] == 125 else -1
