"""Per-symbol latest-value tables: one row per symbol id, each guarded by its own seqlock.

A late joiner reads the table for the current state, then follows the ring for changes.
Row layout (stride a multiple of 64): a 64-byte row header (:data:`LATEST_ROW_HEADER`:
``version`` u8, ``updates`` u8, ``name`` S48) followed by one record of the ring's dtype.

Seqlock protocol. Writer: ``version += 1`` (odd) -> store name/record -> ``version += 1``
(even). Reader: load version (retry while odd) -> copy the row -> reload version; equal means the
copy is not torn. The writer's stores and the reader's loads are separate C calls made from
Python, which the compiler cannot reorder, and x86-64 keeps stores and loads in program order.
"""

from __future__ import annotations

import os
import time

import numpy as np

from .claim import claim_segment
from .errors import LayoutMismatch, ShmError
from .layout import (
    HEADER_SIZE,
    LATEST_ROW_HEADER,
    H,
    SegmentKind,
    SegmentState,
    describe_dtype,
    dtype_from_description,
)
from .segment import Segment
from .wake import check_platform

__all__ = ["LatestReader", "LatestWriter"]

_ROW_HEADER = LATEST_ROW_HEADER.itemsize
_SPIN_TRIES = 1_000
_GIVE_UP_NS = 2_000_000_000


def _check_row(name: str, symbol_id: int, rows: int) -> None:
    if not 0 <= symbol_id < rows:
        raise IndexError(f"segment {name}: symbol id {symbol_id} outside 0..{rows - 1}")


def _stride(dtype: np.dtype) -> int:
    return (_ROW_HEADER + dtype.itemsize + 63) // 64 * 64


class LatestWriter:
    """Single writer of a latest-value table (``<ring name>.latest``) of ``rows`` symbols."""

    def __init__(self, name: str, dtype: np.dtype, rows: int, *, replace: bool = False):
        check_platform()
        describe_dtype(dtype)
        if rows < 1:
            raise ValueError(f"segment {name}: rows must be ≥ 1")
        self.name = name
        self.dtype = dtype
        self.rows = rows
        self._stride = _stride(dtype)
        self._seg, self._lock_fd = claim_segment(name, dtype, rows, SegmentKind.LATEST,
                                                 self._stride, replace)
        self._mem = self._seg.memory()
        self._words = self._mem.cast("Q")
        self._void_torn_rows()
        self._stage = np.zeros(1, dtype)
        self._stage_mem = self._stage.data.cast("B")
        self.closed = False

    def _void_torn_rows(self) -> None:
        """After a takeover, rows a dead writer left odd (mid-update) are torn: make them even
        again and mark them as holding no record (``updates = 0``), keeping their name."""
        for symbol_id in range(self.rows):
            w = (HEADER_SIZE + symbol_id * self._stride) >> 3
            if self._words[w] & 1:
                self._words[w + 1] = 0
                self._words[w] += 1

    def _row(self, symbol_id: int) -> int:
        _check_row(self.name, symbol_id, self.rows)
        return HEADER_SIZE + symbol_id * self._stride

    def register(self, symbol_id: int, name: str) -> None:
        """Record the exchange-native symbol name of row ``symbol_id`` (up to 47 bytes)."""
        raw = name.encode()
        if len(raw) > 47:
            raise ValueError(f"segment {self.name}: symbol name {name!r} longer than 47 bytes")
        off = self._row(symbol_id)
        w = off >> 3
        version = self._words[w]
        self._words[w] = version + 1
        self._mem[off + 16:off + 64] = raw.ljust(48, b"\0")
        self._words[w] = version + 2

    def update(self, symbol_id: int, record: object) -> None:
        """Replace row ``symbol_id`` with ``record`` (a ``np.void`` of the dtype or a tuple)."""
        self._stage[0] = record
        self.update_raw(symbol_id, self._stage_mem)

    def update_raw(self, symbol_id: int, record: memoryview) -> None:
        """Replace row ``symbol_id`` with the bytes of one record (a ``memoryview`` cast to
        ``"B"`` of exactly ``dtype.itemsize`` bytes): no numpy conversion on the hot path."""
        off = self._row(symbol_id)
        w = off >> 3
        version = self._words[w]
        self._words[w] = version + 1           # odd: readers retry
        self._mem[off + _ROW_HEADER:off + _ROW_HEADER + self.dtype.itemsize] = record
        self._words[w + 1] += 1
        self._words[w] = version + 2           # even: row consistent again

    def row_address(self, symbol_id: int) -> int:
        """Address of row ``symbol_id`` (its seqlock header) for
        :func:`shm.atomics.latest_store_kernel`; valid until :meth:`close`."""
        return self._seg.base + self._row(symbol_id)

    def update_batch(self, records: np.ndarray) -> None:
        """Apply ``records`` in order (the last record per ``symbol_id`` wins)."""
        for record in records:
            self.update(int(record["symbol_id"]), record)

    def heartbeat(self) -> None:
        """Mark the writer alive (control-plane idle tick)."""
        self._seg.heartbeat()

    def close(self, unlink: bool = False) -> None:
        """Mark CLOSED and unmap; ``unlink`` removes the file."""
        if self.closed:
            return
        self.closed = True
        self._seg.set(H.STATE, SegmentState.CLOSED)
        if unlink:
            self._seg.unlink()
        self._words.release()
        self._mem.release()
        self._seg.close()
        os.close(self._lock_fd)


class LatestReader:
    """Read-only view of a latest-value table; ``get`` returns torn-free copies."""

    def __init__(self, name: str):
        check_platform()
        seg = Segment.open(name)
        if seg.get(H.KIND) != SegmentKind.LATEST:
            seg.close()
            raise LayoutMismatch(f"segment {name} is not a latest-value table")
        self.name = name
        self._seg = seg
        try:
            self.dtype = dtype_from_description(seg.get_text(H.DESCR, H.DESCR_SIZE))
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            seg.close()
            raise LayoutMismatch(f"segment {name}: unreadable dtype description ({exc})") from None
        self.rows = seg.get(H.CAPACITY)
        self._stride = seg.get(H.RECORD_SIZE)
        if self._stride != _stride(self.dtype) or seg.size < HEADER_SIZE + self.rows * self._stride:
            seg.close()
            raise LayoutMismatch(f"segment {name}: {self.rows} rows of {self._stride} B do not "
                                 f"match its dtype or its {seg.size} bytes")
        self._mem = seg.memory()
        self._words = self._mem.cast("Q")
        self._ids: dict[str, int] = {}
        self.torn_retries = 0
        # how long a row may stay mid-update before get() raises ShmError (a monitor probing
        # a possibly stopped writer sets it short)
        self.give_up_ns = _GIVE_UP_NS

    def _read_row(self, symbol_id: int) -> bytearray | None:
        off = HEADER_SIZE + symbol_id * self._stride
        w = off >> 3
        words, mem = self._words, self._mem
        tries = 0
        deadline = 0
        while True:
            before = words[w]
            if not before & 1:
                row = bytearray(mem[off:off + self._stride])
                if words[w] == before:
                    return row if before else None
            self.torn_retries += 1
            tries += 1
            if tries >= _SPIN_TRIES:
                # The writer may be preempted mid-update: yield, and give up only after a while.
                now = time.monotonic_ns()
                deadline = deadline or now + self.give_up_ns
                if now > deadline:
                    raise ShmError(f"segment {self.name}: row {symbol_id} stayed mid-update "
                                   f"for {self.give_up_ns / 1e9:g} s (writer stuck or dead?)")
                time.sleep(0)

    def names(self) -> dict[int, str]:
        """Every registered row name (exchange-native symbol), by row."""
        out = {}
        for i in range(self.rows):
            got = self._read_row(i)
            if got is not None:
                row_name = bytes(got[16:64]).rstrip(b"\0").decode()
                if row_name:
                    out[i] = row_name
        return out

    def symbol_id(self, name: str) -> int:
        """Row of the exchange-native symbol ``name``; KeyError if it was never registered."""
        if name not in self._ids:
            self._ids.update({n: i for i, n in self.names().items()})
        try:
            return self._ids[name]
        except KeyError:
            raise KeyError(f"segment {self.name}: no row for symbol {name!r}") from None

    def get(self, symbol: int | str) -> np.void | None:
        """Latest record for a symbol id or name, or ``None`` if that row was never written."""
        symbol_id = self.symbol_id(symbol) if isinstance(symbol, str) else symbol
        _check_row(self.name, symbol_id, self.rows)
        got = self._read_row(symbol_id)
        if got is None or int.from_bytes(got[8:16], "little") == 0:
            return None  # registered (named) but no record yet
        return np.frombuffer(got, self.dtype, 1, _ROW_HEADER)[0]

    def snapshot(self) -> dict[int, np.void]:
        """Every written row, by symbol id (each row torn-free; rows read one after another)."""
        out = {}
        for i in range(self.rows):
            record = self.get(i)
            if record is not None:
                out[i] = record
        return out

    def close(self) -> None:
        """Unmap the table; records returned earlier stay valid (they are copies)."""
        self._words.release()
        self._mem.release()
        self._seg.close()
