"""The single writer of a ring segment."""

from __future__ import annotations

import os
import time

import numpy as np

from .atomics import address_of, commit_kernel, futex_wake
from .claim import claim_segment
from .errors import LayoutMismatch
from .layout import HEADER_SIZE, H, SegmentKind, SegmentState, describe_dtype
from .wake import Doorbell, check_platform

__all__ = ["Writer"]

# The compiled commit itself, called without the dispatcher's type resolution (200 against
# 350 ns a call, measured): its signature is fixed to eight int64s, which CPython ints unbox to.
_COMMIT = commit_kernel.overloads[commit_kernel.signatures[0]].entry_point  # type: ignore[attr-defined]


class Writer:
    """Single writer of a ring of fixed-size records.

    ``Writer(name, dtype, capacity)`` creates the segment ``name`` (mode 0640) and its doorbell,
    or takes over a segment whose writer is gone (same geometry; the generation is bumped and
    the sequence continues). ``replace=True`` recreates a segment whose layout differs.
    Records must be a structured dtype whose first field is ``seq`` (u8); ``commit`` overwrites
    ``seq`` and, when the dtype has it, ``ts_commit_ns`` (CLOCK_MONOTONIC, the clock of
    ``time.perf_counter_ns()``, read inside the commit just before the records become visible).
    The writer never blocks on readers; a reader that falls ``capacity`` records behind is lapped.
    """

    def __init__(self, name: str, dtype: np.dtype, capacity: int, *, replace: bool = False):
        check_platform()
        describe_dtype(dtype)  # validates: structured, seq first
        if capacity < 2 or capacity & (capacity - 1):
            raise ValueError(f"segment {name}: capacity {capacity} is not a power of two ≥ 2")
        if dtype.itemsize % 8:
            raise LayoutMismatch(f"segment {name}: record size {dtype.itemsize} is not a "
                                 "multiple of 8 (build the dtype with align=True)")
        self.name = name
        self.dtype = dtype
        self.capacity = capacity
        self._seg, self._lock_fd = claim_segment(name, dtype, capacity, SegmentKind.RING,
                                                 dtype.itemsize, replace)
        try:
            self._bell = Doorbell.for_writer(name + ".wake")
        except BaseException:
            self._seg.set(H.STATE, SegmentState.CLOSED)
            self._seg.close()
            os.close(self._lock_fd)  # releases the lock
            raise
        seg = self._seg
        self._hdr = seg.base
        self._ring = seg.base + HEADER_SIZE
        self._mask = capacity - 1
        self._words = dtype.itemsize // 8
        self._waiters = self._bell.parked_addr
        self._wake_addr = seg.base + H.WAKE_SEQ
        stamp_offset = dtype.fields["ts_commit_ns"][1] if dtype.fields and \
            "ts_commit_ns" in dtype.fields else -1
        self._stamp_word = stamp_offset // 8 if stamp_offset % 8 == 0 else -1
        self._stage = np.zeros(1, dtype)
        self._stage_addr = int(self._stage.ctypes.data)
        self._next_reap_ns = 0
        self.closed = False

    @property
    def generation(self) -> int:
        """Generation of this writer (1 for a fresh segment, +1 per takeover)."""
        return self._seg.get(H.GENERATION)

    @property
    def tail(self) -> int:
        """Sequence number the next commit will get (= records committed so far)."""
        return self._seg.get(H.TAIL)

    def commit(self, record: object) -> int:
        """Commit one record (a ``np.void`` of this dtype or a field tuple); returns its seq."""
        try:
            self._stage[0] = record
        except (TypeError, ValueError) as exc:
            raise LayoutMismatch(f"segment {self.name}: record does not fit {self.dtype}: "
                                 f"{exc}") from None
        return self._publish(self._stage_addr, 1)

    @property
    def stage(self) -> np.ndarray:
        """A writable one-record array of the ring's dtype: fill it in place (for example with
        ``struct.pack_into``), then :meth:`commit_staged` — the allocation-free commit."""
        return self._stage

    def commit_staged(self) -> int:
        """Commit the record in :attr:`stage`; returns its seq."""
        if self.closed:
            raise ValueError(f"segment {self.name}: writer is closed")
        result = _COMMIT(self._hdr, self._ring, self._mask, self._words, self._stage_addr, 1,
                         self._stamp_word, self._waiters)
        return (result >> 1) - 1

    def commit_target(self) -> tuple[int, int, int, int, int, int]:
        """``(hdr, ring, mask, words, stamp_word, waiters)``: the arguments of
        :func:`shm.atomics.commit_kernel` for this ring, for njit code that commits itself.

        The addresses are valid until :meth:`close`; the caller must stop committing first.
        """
        return (self._hdr, self._ring, self._mask, self._words, self._stamp_word,
                self._waiters)

    def commit_from(self, address: int, count: int) -> int:
        """Commit ``count`` records from raw memory at ``address``: for a caller that keeps a
        preallocated batch buffer and its address (``ndarray.ctypes.data`` costs 0.4 µs a
        call). The caller guarantees the memory holds ``count`` records of this dtype."""
        if count > self.capacity:  # one compare: a wrapped batch would overwrite itself
            raise ValueError(f"segment {self.name}: batch of {count} exceeds capacity "
                             f"{self.capacity}")
        return self._publish(address, count)

    def commit_batch(self, records: np.ndarray) -> int:
        """Commit a 1-d array of records in order; returns the seq of the last one (−1 if empty)."""
        if records.dtype is not self.dtype and records.dtype != self.dtype:
            raise LayoutMismatch(f"segment {self.name}: batch dtype differs from the ring's")
        count = len(records)
        if count == 0:
            return self.tail - 1
        if count > self.capacity:
            raise ValueError(f"segment {self.name}: batch of {count} exceeds capacity "
                             f"{self.capacity}")
        if not records.flags.c_contiguous:
            records = np.ascontiguousarray(records)
        return self._publish(address_of(records), count)

    def _publish(self, src: int, count: int) -> int:
        if self.closed:
            raise ValueError(f"segment {self.name}: writer is closed")
        result = _COMMIT(self._hdr, self._ring, self._mask, self._words, src, count,
                         self._stamp_word, self._waiters)
        return (result >> 1) - 1

    def heartbeat(self) -> None:
        """Mark the writer alive and free dead readers' doorbell slots.

        Call from the control plane's idle tick (e.g. every 100 ms), never from the hot path.
        """
        self._seg.heartbeat()
        now = time.monotonic_ns()
        if now >= self._next_reap_ns:
            self._next_reap_ns = now + 1_000_000_000
            self._bell.reap()

    def close(self, unlink: bool = False) -> None:
        """Mark CLOSED, wake parked readers, release the segment; ``unlink`` removes the files."""
        if self.closed:
            if unlink:  # close() earlier (e.g. by a with-block), unlink now
                for path in (self._seg.path, self._seg.path + ".wake"):
                    try:
                        os.unlink(path)
                    except FileNotFoundError:
                        pass
            return
        self.closed = True
        seg = self._seg
        seg.set(H.STATE, SegmentState.CLOSED)
        seg.set(H.WAKE_SEQ, (seg.get(H.WAKE_SEQ) + 1) & 0xFFFFFFFF)
        futex_wake(self._wake_addr)
        if unlink:
            seg.unlink()
            self._bell.segment.unlink()
        self._bell.close()
        seg.close()
        os.close(self._lock_fd)

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
