"""Compiled JSON for ``orderbook`` payloads: the same bytes msgspec writes, ≈ 5× cheaper.

A top-20 book is most of what the publisher encodes (every depth message publishes one), and
building it through a dict, ``tolist()`` and msgspec cost ≈ 14 µs. :func:`encode_books` writes
each record of a batch straight into one buffer, or *declines* it, and the caller then encodes
that record the general way. It declines whatever it cannot write exactly as msgspec would:

* floats outside ``[1e-5, 1e16)`` (msgspec switches to exponents there), NaN and infinities,
  and floats whose shortest round-trip decimal needs more than 15 significant digits;
* symbol ids without a prefix (the general path names them ``sid<N>``).

Floats: the shortest decimal that parses back to the same double, as msgspec and ``repr``
give it. With ``m = round(x · 10^k)`` for the smallest ``k`` such that ``m / 10^k == x``: both
``m < 2^53`` and ``10^k ≤ 10^22`` are exact doubles, so the division is correctly rounded and
the test is exact (Clinger's fast path, as in :mod:`workers.exchanges.json_scan`). With at
most 15 digits no neighbour ``m ± 1`` can round-trip too, so there is no closest to choose.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

__all__ = ["FLOAT_DIGITS", "encode_books", "payload_bound", "text_table"]

FLOAT_DIGITS = 15                       # significant digits this path writes at most
_MAX_MANTISSA = 10.0**FLOAT_DIGITS
_POW10 = np.array([10.0**i for i in range(23)])
_TWO53 = float(2**53)
_LOW, _HIGH = 1e-5, 1e16                 # msgspec writes plain decimals in [_LOW, _HIGH)
# bytes of the fixed keys
_K_MARKET, _K_SEQ, _K_RECV = b',"market":', b',"seq":', b',"ts_recv_ns":'
_K_UID, _K_BIDS, _K_ASKS = b',"last_update_id":', b',"bids":[', b'],"asks":['
_K_STATE, _K_EPOCH = b'],"state":', b',"epoch":'


def _const(raw: bytes) -> np.ndarray:
    return np.frombuffer(raw, np.uint8).copy()


_MARKET_KEY, _SEQ_KEY, _RECV_KEY = _const(_K_MARKET), _const(_K_SEQ), _const(_K_RECV)
_UID_KEY, _BIDS_KEY, _ASKS_KEY = _const(_K_UID), _const(_K_BIDS), _const(_K_ASKS)
_STATE_KEY, _EPOCH_KEY = _const(_K_STATE), _const(_K_EPOCH)


def payload_bound(prefix_bytes: int, depth: int) -> int:
    """An upper bound of one payload's bytes: its prefix, ``4 × depth`` floats of ≤ 24 bytes
    with their brackets and commas, five integers of ≤ 20 digits, the keys and names."""
    return prefix_bytes + 4 * depth * 26 + 5 * 21 + 200


def text_table(texts: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Byte strings as a (rows, longest) uint8 table and their lengths, for the kernel."""
    width = max([len(t) for t in texts] + [1])
    table = np.zeros((max(len(texts), 1), width), np.uint8)
    lengths = np.zeros(max(len(texts), 1), np.int64)
    for i, t in enumerate(texts):
        table[i, :len(t)] = np.frombuffer(t, np.uint8)
        lengths[i] = len(t)
    return table, lengths


@nb.njit(cache=True, inline="always")
def _put(out: np.ndarray, at: int, raw: np.ndarray, n: int) -> int:
    for i in range(n):
        out[at + i] = raw[i]
    return at + n


@nb.njit(cache=True)
def _count(value: np.uint64) -> int:
    """How many decimal digits an unsigned value has."""
    n = 1
    while value >= 10:
        value //= np.uint64(10)
        n += 1
    return n


@nb.njit(cache=True)
def _digits(out: np.ndarray, at: int, value: np.uint64) -> int:
    """Decimal digits of an unsigned value."""
    n = _count(value)
    for i in range(n - 1, -1, -1):
        out[at + i] = 48 + value % np.uint64(10)
        value //= np.uint64(10)
    return at + n


@nb.njit(cache=True)
def _int(out: np.ndarray, at: int, value: np.int64) -> int:
    if value < 0:
        out[at] = 45   # '-'
        # -(value + 1) + 1 keeps INT64_MIN exact in unsigned arithmetic
        return _digits(out, at + 1, np.uint64(-(value + 1)) + np.uint64(1))
    return _digits(out, at, np.uint64(value))


@nb.njit(cache=True)
def _float(out: np.ndarray, at: int, x: float) -> int:
    """Write ``x`` as msgspec does; -1 to decline."""
    if x == 0.0:
        if math.copysign(1.0, x) < 0:
            out[at] = 45
            at += 1
        out[at], out[at + 1], out[at + 2] = 48, 46, 48   # 0.0
        return at + 3
    if x != x:
        return -1
    if x < 0:
        out[at] = 45
        at += 1
        x = -x
    if not (_LOW <= x < _HIGH):
        return -1
    for k in range(23):
        p = _POW10[k]
        y = x * p
        if y >= _TWO53:
            return -1
        m = math.floor(y + 0.5)
        if m / p == x:
            # at most FLOAT_DIGITS digits: then m is the only candidate at this k (m ± 1 are
            # 1/10^k apart, more than x's ulp ≈ m·2^-52/10^k while m < 2^52), so no closest
            # of several has to be chosen
            if m >= _MAX_MANTISSA:
                return -1
            # digits of m with k of them after the point ("0.000m" when m is shorter)
            buf = np.uint64(m)
            n = _count(buf)
            if k == 0:
                at = _digits(out, at, buf)
                out[at], out[at + 1] = 46, 48   # .0
                return at + 2
            whole = n - k
            if whole <= 0:
                out[at], out[at + 1] = 48, 46   # 0.
                at += 2
                for _ in range(-whole):
                    out[at] = 48
                    at += 1
                return _digits(out, at, buf)
            end = at + n + 1
            for i in range(n + 1):
                pos = end - 1 - i
                if i == k:
                    out[pos] = 46
                else:
                    out[pos] = 48 + buf % np.uint64(10)
                    buf //= np.uint64(10)
            return end
    return -1


@nb.njit(cache=True)
def _levels(out: np.ndarray, at: int, px: np.ndarray, qty: np.ndarray, n: int) -> int:
    for j in range(n):
        if j:
            out[at] = 44   # ,
            at += 1
        out[at] = 91       # [
        at = _float(out, at + 1, px[j])
        if at < 0:
            return -1
        out[at] = 44
        at = _float(out, at + 1, qty[j])
        if at < 0:
            return -1
        out[at] = 93       # ]
        at += 1
    return at


@nb.njit(cache=True)
def encode_books(records: np.ndarray, prefixes: np.ndarray, prefix_lens: np.ndarray,
                 markets: np.ndarray, market_lens: np.ndarray, states: np.ndarray,
                 state_lens: np.ndarray, out: np.ndarray, ends: np.ndarray) -> int:
    """Write the payload of each ``shm.BOOK`` record into ``out``, one after another;
    ``ends[i]`` is where record ``i``'s payload ends, or -1 where it was declined (it then
    takes no bytes). ``prefixes[sid]``: ``{"exchange":..,"symbol":..,"event_type":"orderbook",
    "timestamp":`` as msgspec writes it; ``markets``/``states``: the quoted name of every
    code (256 rows). ``out`` must hold ``len(records) ×`` :func:`payload_bound` bytes.
    Returns the number of records declined."""
    at = 0
    declined = 0
    for i in range(len(records)):
        r = records[i]
        depth = r.bid_px.shape[0]
        sid = r.symbol_id
        if sid >= len(prefix_lens) or prefix_lens[sid] == 0:
            ends[i] = -1
            declined += 1
            continue
        start = at
        at = _put(out, at, prefixes[sid], prefix_lens[sid])
        ts = r.ts_exchange_ns
        at = _int(out, at, ts // 1_000_000)
        at = _put(out, at, _MARKET_KEY, len(_MARKET_KEY))
        code = np.int64(r.market) & 255
        at = _put(out, at, markets[code], market_lens[code])
        at = _put(out, at, _SEQ_KEY, len(_SEQ_KEY))
        at = _digits(out, at, np.uint64(r.seq))
        at = _put(out, at, _RECV_KEY, len(_RECV_KEY))
        at = _int(out, at, r.ts_recv_ns)
        at = _put(out, at, _UID_KEY, len(_UID_KEY))
        at = _int(out, at, r.update_id)
        at = _put(out, at, _BIDS_KEY, len(_BIDS_KEY))
        at = _levels(out, at, r.bid_px, r.bid_qty, min(np.int64(r.n_bids), depth))
        if at >= 0:
            at = _put(out, at, _ASKS_KEY, len(_ASKS_KEY))
            at = _levels(out, at, r.ask_px, r.ask_qty, min(np.int64(r.n_asks), depth))
        if at < 0:
            at = start
            ends[i] = -1
            declined += 1
            continue
        at = _put(out, at, _STATE_KEY, len(_STATE_KEY))
        code = np.int64(r.state) & 255
        at = _put(out, at, states[code], state_lens[code])
        at = _put(out, at, _EPOCH_KEY, len(_EPOCH_KEY))
        at = _digits(out, at, np.uint64(r.epoch))
        out[at] = 125   # }
        at += 1
        ends[i] = at
    return declined
