"""OKX order book with the exchange's level strings, its CRC32 checksum, and seqId continuity.

:class:`OkxBook` is a :class:`~workers.exchanges.book.Book` (float sides stored worst first, best
level last) that also keeps, for every level, the price and size **strings** OKX sent: the
checksum is a CRC32 of ``bid1px:bid1sz:ask1px:ask1sz:...`` over the top 25 levels per side using
the original text (``"0.10"`` and ``"0.1"`` differ), so it cannot be rebuilt from floats.

The strings live in a preallocated ``uint8`` slot pool per side (no Python object per level);
each level carries the int32 index of its slot, shifted with its price and size by the ``@njit``
kernel. Shifting the string bytes themselves (82 instead of 20 bytes per level) made 400-level
updates 2–5× slower than the float-only book: OKX's far end, the start of worst-first storage,
changes on nearly every message. The slot array of a side is always a permutation of the pool:
entries ``[0, count)`` are the levels' slots, the rest are free, so a delete hands its slot to
the free part and an insert takes the first free one, with no free list to maintain.

A message's levels reach the kernel as JSON byte strings (``msgspec.json.encode`` of the decoded
lists, or the raw JSON from :data:`~workers.exchanges.okx_wire.decode_books_raw`); the kernel
reads the first two strings of each level and parses them itself, about 2.5× cheaper than
``float()`` in Python. The parse is exact: Clinger's fast path (an integer mantissa ≤ 2^53 scaled
by 10^-k, k ≤ 22, is one correctly rounded IEEE operation) gives the same float as
``float(text)``; any other number falls back to ``float()``. The kernel then converts sizes to
the book's float units (``OkxBook.qty_scale``: contracts → base units) and keeps the message's
parsed levels for the caller's depth records (``OkxBook.message_counts`` and
``message_address``: what ``BookCommitter.publish`` reads).

:class:`OkxSequence` implements the ``seqId``/``prevSeqId`` rule; frames without them (OKX
before 2022, the recordings) skip it, and only the checksum proves continuity.
"""

from __future__ import annotations

from enum import IntEnum

import msgspec
import numba as nb
import numpy as np

from shm.atomics import address_of
from workers.exchanges.book import Book, BookOverflow

__all__ = ["CHECKSUM_DEPTH", "OkxBook", "OkxSequence", "OkxVerdict", "okx_checksum"]

CHECKSUM_DEPTH = 25  # levels per side covered by OKX's checksum

# kernel status codes (negative: nothing of the message was applied, except _FULL)
_OK, _FULL, _BAD, _SLOW = 0, -1, -2, -3
_SEP = 58  # ":"
_Json = bytes | np.ndarray  # JSON text: bytes, or a uint8 array view of a frame
_POW10 = np.array([10.0 ** k for k in range(23)])  # all exact in float64


def _crc_tables() -> np.ndarray:
    """Slicing-by-8 tables of the reflected IEEE CRC32 (zlib's): row 0 is the classic byte
    table, row k advances a byte k more positions. int64, so that numba never mixes signed and
    unsigned integers (that would turn them into floats)."""
    table = np.zeros((8, 256), np.int64)
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0xEDB88320 if c & 1 else c >> 1
        table[0, i] = c
    for k in range(1, 8):
        for i in range(256):
            table[k, i] = (table[k - 1, i] >> 8) ^ table[0, table[k - 1, i] & 0xFF]
    return table


_CRC = _crc_tables()
_encode = msgspec.json.Encoder().encode


@nb.njit(cache=True)
def _parse_decimal(buf: _Json, start: int, end: int) -> float:
    """``float(buf[start:end])`` for ``[-]digits[.digits]`` within Clinger's exact fast path,
    else NaN (the caller falls back to ``float()``; OKX sends no exponents)."""
    i, neg = start, False
    if i < end and buf[i] == 45:  # "-"
        neg, i = True, i + 1
    mant, digits, scale, dot, seen = 0, 0, 0, False, False
    while i < end:
        c = buf[i]
        if 48 <= c <= 57:
            seen = True
            if mant or c != 48:       # leading zeros are not significant
                digits += 1
                if digits > 18:       # int64 would overflow; far beyond 2^53 anyway
                    return np.nan
                mant = mant * 10 + (c - 48)
            if dot:
                scale -= 1
        elif c == 46 and not dot:     # "."
            dot = True
        else:
            return np.nan
        i += 1
    if not seen or mant > 9007199254740992 or scale < -22:
        return np.nan
    value = mant / _POW10[-scale]
    return -value if neg else value


@nb.njit(cache=True)
def _skip_ws(js: _Json, i: int) -> int:
    while i < len(js) and (js[i] == 32 or js[i] == 10 or js[i] == 13 or js[i] == 9):
        i += 1
    return i


@nb.njit(cache=True)
def _scan(js: _Json, offs: np.ndarray, vals: np.ndarray, row: int, parse: bool,
          width: int) -> int:
    """Read a JSON level array ``[["px","sz",...],...]`` into ``offs[row:]`` (px start, px len,
    sz start, sz len) and, if ``parse``, ``vals[row:]`` (px, sz; NaN if not fast-parseable).
    Returns the next free row, or a negative status."""
    n = len(js)
    i = _skip_ws(js, 0)
    if i == n or js[i] != 91:  # "["
        return _BAD
    i = _skip_ws(js, i + 1)
    if i < n and js[i] == 93:  # "]": no levels
        return row
    while True:
        if i == n or js[i] != 91:
            return _BAD
        if row == len(offs):
            return _FULL
        field = 0
        i += 1
        while True:  # the strings of one level
            i = _skip_ws(js, i)
            if i == n or js[i] != 34:  # '"'
                return _BAD
            start = i = i + 1
            while i < n and js[i] != 34:
                if js[i] == 92:  # backslash: never in a number
                    return _BAD
                i += 1
            if i == n or i - start > width:
                return _BAD
            if field < 2:
                offs[row, 2 * field] = start
                offs[row, 2 * field + 1] = i - start
                if parse:
                    vals[row, field] = _parse_decimal(js, start, i)
            field += 1
            i = _skip_ws(js, i + 1)
            if i < n and js[i] == 44:  # ","
                i += 1
            elif i < n and js[i] == 93:
                break
            else:
                return _BAD
        if field < 2:
            return _BAD
        row += 1
        i = _skip_ws(js, i + 1)
        if i < n and js[i] == 44:
            i = _skip_ws(js, i + 1)
        elif i < n and js[i] == 93:
            return row
        else:
            return _BAD


@nb.njit(cache=True)
def _apply_side(f: np.ndarray, slots: np.ndarray, s: np.ndarray, ln: np.ndarray, side: int,
                count: int, js: _Json, offs: np.ndarray, vals: np.ndarray, first: int,
                last: int, ascending: bool) -> int:
    """``book.apply_levels`` for one side (rows ``2 * side`` price, ``+ 1`` size of ``f``) that
    also keeps each level's slot and writes its strings there; returns the new count or -1 when
    full."""
    prices, qtys, slot = f[2 * side], f[2 * side + 1], slots[side]
    capacity = len(prices)
    for row in range(first, last):
        price, qty = vals[row, 0], vals[row, 1]
        lo, hi = 0, count  # first index whose price is not below `price` in storage order
        while lo < hi:
            mid = (lo + hi) >> 1
            before = prices[mid] < price if ascending else prices[mid] > price
            if before:
                lo = mid + 1
            else:
                hi = mid
        found = lo < count and prices[lo] == price
        if qty == 0.0:
            if found:
                freed = slot[lo]
                for j in range(lo, count - 1):
                    prices[j] = prices[j + 1]
                    qtys[j] = qtys[j + 1]
                    slot[j] = slot[j + 1]
                count -= 1
                slot[count] = freed  # first free slot
            continue
        if not found:
            if count == capacity:
                return -1
            taken = slot[count]
            for j in range(count, lo, -1):
                prices[j] = prices[j - 1]
                qtys[j] = qtys[j - 1]
                slot[j] = slot[j - 1]
            slot[lo] = taken
            prices[lo] = price
            count += 1
        qtys[lo] = qty
        # the price text too: the same float may arrive spelled differently, and OKX's checksum
        # uses the text of its own current book
        k = slot[lo]
        for field in range(2):
            start, size = offs[row, 2 * field], offs[row, 2 * field + 1]
            for b in range(size):
                s[side, k, field, b] = js[start + b]
            ln[side, k, field] = size
    return count


@nb.njit(cache=True)
def _apply_message(f: np.ndarray, slots: np.ndarray, s: np.ndarray, ln: np.ndarray,
                   n_bids: int, n_asks: int, bids: _Json, asks: _Json, offs: np.ndarray,
                   vals: np.ndarray, floats_given: bool, scale: float, inverse: bool
                   ) -> tuple[int, int, int, int, int]:
    """Scan both sides, then apply them; returns (status, n_bids, n_asks, bid rows, rows).
    With ``floats_given`` the caller has filled ``vals`` (the ``float()`` fallback). Sizes
    are stored as ``size * scale`` (``/ price`` if ``inverse``): see :class:`OkxBook`."""
    width = s.shape[3]
    mid = _scan(bids, offs, vals, 0, not floats_given, width)
    if mid < 0:
        return mid, n_bids, n_asks, 0, 0
    end = _scan(asks, offs, vals, mid, not floats_given, width)
    if end < 0:
        return end, n_bids, n_asks, 0, 0
    if not floats_given:
        for row in range(end):
            if np.isnan(vals[row, 0]) or np.isnan(vals[row, 1]):
                return _SLOW, n_bids, n_asks, 0, 0
    if scale != 1.0 or inverse:
        for row in range(end):
            if inverse and not vals[row, 0] > 0.0:
                return _BAD, n_bids, n_asks, 0, 0
        for row in range(end):  # size 0 stays 0: deletes are unaffected
            vals[row, 1] = vals[row, 1] * scale / vals[row, 0] if inverse else (
                vals[row, 1] * scale)
    nb_ = _apply_side(f, slots, s, ln, 0, n_bids, bids, offs, vals, 0, mid, True)
    if nb_ < 0:
        return _FULL, n_bids, n_asks, 0, 0
    na = _apply_side(f, slots, s, ln, 1, n_asks, asks, offs, vals, mid, end, False)
    if na < 0:
        return _FULL, nb_, n_asks, 0, 0
    return _OK, nb_, na, mid, end


@nb.njit(cache=True)
def _crc32(buf: np.ndarray, n: int) -> int:
    """zlib.crc32 of ``buf[:n]``, 8 bytes per step (slicing-by-8: eight independent table
    loads instead of a chain of eight dependent ones; ~4× the byte-at-a-time loop)."""
    t, crc, i = _CRC, 0xFFFFFFFF, 0
    while i + 8 <= n:
        c = crc ^ (buf[i] | (buf[i + 1] << 8) | (buf[i + 2] << 16) | (np.int64(buf[i + 3]) << 24))
        crc = (t[7, c & 0xFF] ^ t[6, (c >> 8) & 0xFF] ^ t[5, (c >> 16) & 0xFF] ^ t[4, c >> 24]
               ^ t[3, buf[i + 4]] ^ t[2, buf[i + 5]] ^ t[1, buf[i + 6]] ^ t[0, buf[i + 7]])
        i += 8
    while i < n:
        crc = t[0, (crc ^ buf[i]) & 0xFF] ^ (crc >> 8)
        i += 1
    return crc ^ 0xFFFFFFFF


@nb.njit(cache=True)
def okx_checksum(slots: np.ndarray, s: np.ndarray, ln: np.ndarray, n_bids: int, n_asks: int,
                 depth: int, buf: np.ndarray) -> int:
    """Signed CRC32 (zlib's) of ``bid1px:bid1sz:ask1px:ask1sz:...`` over the best ``depth``
    levels per side, interleaved; the longer side's extra levels follow. The text is assembled
    in ``buf`` (≥ ``4 * depth * (width + 1)`` bytes) first: level strings are ~8 bytes, too
    short for an 8-byte step."""
    n = 0
    for i in range(depth):
        for side in range(2):
            count = n_bids if side == 0 else n_asks
            if i < count:
                k = slots[side, count - 1 - i]  # sides are stored worst first
                for field in range(2):
                    for b in range(ln[side, k, field]):
                        buf[n] = s[side, k, field, b]
                        n += 1
                    buf[n] = _SEP
                    n += 1
    crc = _crc32(buf, max(0, n - 1))  # no ":" after the last size
    return crc - (1 << 32) if crc >= (1 << 31) else crc


@nb.njit(cache=True)
def _apply_and_checksum(f: np.ndarray, slots: np.ndarray, s: np.ndarray, ln: np.ndarray,
                        n_bids: int, n_asks: int, bids: _Json, asks: _Json, offs: np.ndarray,
                        vals: np.ndarray, floats_given: bool, scale: float, inverse: bool,
                        buf: np.ndarray) -> tuple[int, int, int, int, int, int]:
    """:func:`_apply_message`, then the checksum of the result: one dispatch per message.
    ``bids``/``asks`` are JSON bytes, or uint8 arrays starting at a side's ``[`` (the scan
    stops at its closing bracket)."""
    status, n, m, mid, end = _apply_message(f, slots, s, ln, n_bids, n_asks, bids, asks, offs,
                                            vals, floats_given, scale, inverse)
    crc = okx_checksum(slots, s, ln, n, m, CHECKSUM_DEPTH, buf) if status == _OK else 0
    return status, n, m, mid, end, crc


class OkxBook(Book):
    """One instrument's OKX book: ``Book``'s float sides plus each level's original strings.

    Strings longer than ``width`` bytes are rejected (ValueError); OKX's are ≤ 13 in the
    recordings. ``Book.apply`` (floats only) is refused: it would leave the strings stale.

    ``qty_scale`` and ``inverse`` convert OKX's sizes (contracts for derivatives) into the float
    quantities the book keeps: ``size * qty_scale``, divided by the level's price when
    ``inverse`` (a contract worth ``qty_scale`` quote units). The strings, and so the checksum,
    stay the exchange's; every float reader (records, ``top``, ``levels``) sees base units.
    Set them before the first message: levels already stored are not rescaled.
    """

    def __init__(self, capacity: int = 1024, width: int = 32, qty_scale: float = 1.0,
                 inverse: bool = False) -> None:
        super().__init__(0)
        self.qty_scale = float(qty_scale)
        self.inverse = bool(inverse)
        self._rows = (0, 0)  # bid rows, all rows of the last applied message in _vals
        # rows: bid px, bid size, ask px, ask size; the Book attributes are views of them
        self._use(np.zeros((4, capacity)))
        # per side: each level's slot (a permutation of the pool, see the module docstring),
        # and the pool: [side, slot, price|size] text and its length in bytes
        self._slots = np.tile(np.arange(capacity, dtype=np.int32), (2, 1))
        self._s = np.zeros((2, capacity, 2, width), np.uint8)
        self._n = np.zeros((2, capacity, 2), np.uint8)
        # per message scratch: string offsets and parsed floats of every level, bids then asks
        self._offs = np.zeros((2 * capacity, 4), np.int64)
        self._vals = np.zeros((2 * capacity, 2))
        self.message_address = address_of(self._vals)  # see message_levels
        self._ctx = np.zeros(0, np.int64)  # see context_address
        self._ctx_addr = 0
        self._ctx_buf: np.ndarray | None = None
        self._buf = np.zeros(4 * CHECKSUM_DEPTH * (width + 1), np.uint8)

    def apply(self, bid_px: np.ndarray, bid_qty: np.ndarray, ask_px: np.ndarray,
              ask_qty: np.ndarray) -> None:
        """Not supported: use :meth:`apply_strings`."""
        raise TypeError("OkxBook needs the level strings: use apply_strings")

    def apply_strings(self, bids: list[list[str]], asks: list[list[str]]) -> int:
        """Apply one message's levels (``[px, sz, ...]`` strings as OKX sent them; size ``"0"``
        deletes). A snapshot: :meth:`clear` first. BookOverflow if a side is full (the book is
        then partly updated: resync), ValueError for a malformed level. Returns the
        checksum (see :meth:`apply_json`)."""
        return self.apply_json(_encode(bids), _encode(asks))

    def apply_json(self, bids: bytes | msgspec.Raw, asks: bytes | msgspec.Raw) -> int:
        """:meth:`apply_strings` with each side given as its JSON array text (for example
        ``okx_wire.decode_books_raw``'s fields: the lists are never built). Returns the
        :meth:`checksum` of the book it leaves, computed in the same kernel call."""
        args = (self._sides, self._slots, self._s, self._n, self.n_bids, self.n_asks, bids, asks,
                self._offs, self._vals)
        scale, inverse, buf = self.qty_scale, self.inverse, self._buf
        self._rows = (0, 0)
        status, n, m, mid, end, crc = _apply_and_checksum(*args, False, scale, inverse, buf)
        if status == _SLOW:  # a number outside the exact fast path: Python parses them all
            levels = msgspec.json.decode(bids) + msgspec.json.decode(asks)
            self._vals[:len(levels)] = [(float(lv[0]), float(lv[1])) for lv in levels]
            status, n, m, mid, end, crc = _apply_and_checksum(*args, True, scale, inverse, buf)
        if status == _FULL:
            self.n_bids, self.n_asks = n, m
            raise BookOverflow(f"book side full ({self.capacity} levels)")
        if status != _OK:
            raise ValueError(f"malformed OKX levels: {bids[:80]!r} {asks[:80]!r}")
        self.n_bids, self.n_asks = n, m
        self._rows = (mid, end)
        return crc

    def context_address(self) -> int:
        """Address of an int64 array describing this book's memory for kernels that take
        addresses (``okx_frame``): sides, capacity, slots, strings, string width, lengths,
        offsets, values, checksum buffer, its length. Valid while the book lives."""
        if self._ctx_buf is not self._buf:  # built once; again if checksum() grew the buffer
            self._ctx_buf = self._buf
            s = self._s
            self._ctx = np.array([self.address, self.capacity, address_of(self._slots),
                                  address_of(s), s.shape[3], address_of(self._n),
                                  address_of(self._offs), address_of(self._vals),
                                  address_of(self._buf), len(self._buf)], np.int64)
            self._ctx_addr = address_of(self._ctx)
        return self._ctx_addr

    def applied(self, n_bids: int, n_asks: int, bid_rows: int, rows: int) -> None:
        """Record the result of a message applied by an outside kernel (see
        :meth:`message_counts`)."""
        self.n_bids, self.n_asks = n_bids, n_asks
        self._rows = (bid_rows, rows)

    def message_levels(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The last applied message's levels as floats (bid prices, bid quantities, ask
        prices, ask quantities, in message order, quantities scaled like the book's): views
        of per-message scratch, valid until the next apply; empty after a failed one."""
        mid, end = self._rows
        v = self._vals
        return v[:mid, 0], v[:mid, 1], v[mid:end, 0], v[mid:end, 1]

    def message_counts(self) -> tuple[int, int]:
        """Bid levels and all levels of the last applied message: they are float64 ``[p, q]``
        pairs at :attr:`message_address`, bids first (what ``BookCommitter.publish`` takes)."""
        return self._rows

    def checksum(self, depth: int = CHECKSUM_DEPTH) -> int:
        """OKX's checksum of the current book (compare with the message's ``checksum``)."""
        if len(self._buf) < 4 * depth * (self._s.shape[3] + 1):
            self._buf = np.zeros(4 * depth * (self._s.shape[3] + 1), np.uint8)
        return okx_checksum(self._slots, self._s, self._n, self.n_bids, self.n_asks, depth,
                            self._buf)

    def strings(self, depth: int) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """The best ``depth`` levels per side as (price, size) strings, best first."""
        def text(side: int, k: int, field: int) -> str:
            return self._s[side, k, field, :self._n[side, k, field]].tobytes().decode()

        out: list[list[tuple[str, str]]] = [[], []]
        for side, count in ((0, self.n_bids), (1, self.n_asks)):
            for j in range(count - 1, max(-1, count - 1 - depth), -1):
                k = self._slots[side, j]
                out[side].append((text(side, k, 0), text(side, k, 1)))
        return out[0], out[1]


class OkxVerdict(IntEnum):
    """What to do with one OKX book message."""

    APPLY = 1      # apply it (after clear() for a snapshot), then verify its checksum
    GAP = 2        # continuity broken, or no snapshot yet: resubscribe for a new snapshot
    DUPLICATE = 3  # the message just applied, again: drop it


class OkxSequence:
    """``seqId``/``prevSeqId`` continuity of one instrument's incremental book channel.

    A snapshot carries ``prevSeqId == -1``; each update must carry ``prevSeqId ==`` the previous
    ``seqId``. That also admits OKX's two special updates: a no-change heartbeat repeats the
    ``seqId`` (``prevSeqId == seqId ==`` previous), and after maintenance ``seqId`` may restart
    lower than ``prevSeqId``. Messages without the fields (``None``: old feeds) skip the check;
    mixing sequenced and unsequenced messages is a gap.
    """

    def __init__(self) -> None:
        self.synced = False
        self.seq_id: int | None = None    # seqId of the last applied message
        self.prev_seq_id: int | None = None

    def reset(self) -> None:
        """Forget the chain (resync): updates are gaps until the next snapshot."""
        self.synced = False
        self.seq_id = self.prev_seq_id = None

    def check(self, snapshot: bool, seq_id: int | None, prev_seq_id: int | None) -> OkxVerdict:
        """Verdict for a message (``action == "snapshot"`` → ``snapshot``); on APPLY the chain
        advances, on GAP it is reset."""
        if snapshot:
            if (seq_id is None) != (prev_seq_id is None) or (
                    seq_id is not None and prev_seq_id != -1):
                self.reset()
                return OkxVerdict.GAP
        elif not self.synced or (seq_id is None) != (self.seq_id is None):
            self.reset()
            return OkxVerdict.GAP
        elif seq_id is not None and prev_seq_id != self.seq_id:
            if seq_id == self.seq_id and prev_seq_id == self.prev_seq_id:
                return OkxVerdict.DUPLICATE
            self.reset()
            return OkxVerdict.GAP
        self.synced = True
        self.seq_id, self.prev_seq_id = seq_id, prev_seq_id
        return OkxVerdict.APPLY
