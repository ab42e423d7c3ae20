"""The single writer of a ring segment."""

from __future__ import annotations

import fcntl
import os
import time

import numpy as np

from .atomics import address_of, commit_kernel
from .errors import LayoutMismatch, SegmentNotFound, WriterBusy
from .layout import (
    HEADER_SIZE,
    LAYOUT_VERSION,
    MAGIC,
    PAGE_SIZE,
    H,
    SegmentKind,
    SegmentState,
    describe_dtype,
    dtype_hash,
)
from .segment import SHM_DIR, Segment, process_start_time
from .wake import Doorbell, check_platform, futex_wake

__all__ = ["Writer"]


def _page_round(size: int) -> int:
    return (size + PAGE_SIZE - 1) // PAGE_SIZE * PAGE_SIZE


def init_header(seg: Segment, dtype: np.dtype, capacity: int, kind: SegmentKind,
                record_size: int) -> None:
    """Write the static header fields of a newly created segment (magic last)."""
    seg.set(H.LAYOUT_VERSION, LAYOUT_VERSION)
    seg.set(H.DTYPE_HASH, dtype_hash(dtype))
    seg.set(H.RECORD_SIZE, record_size)
    seg.set(H.CAPACITY, capacity)
    seg.set(H.KIND, kind)
    seg.set(H.DATA_OFFSET, HEADER_SIZE)
    seg.set(H.CREATED_NS, time.time_ns())
    seg.set_text(H.NAME, H.NAME_SIZE, seg.name)
    seg.set_text(H.DESCR, H.DESCR_SIZE, describe_dtype(dtype))
    seg.set(H.MAGIC, MAGIC)


def claim_segment(name: str, dtype: np.dtype, capacity: int, kind: SegmentKind,
                  record_size: int, replace: bool) -> tuple[Segment, int]:
    """Create segment ``name`` or take it over from a dead writer; returns it with a held lock fd.

    An exclusive ``flock`` on the file, held for the writer's lifetime and released by the
    kernel when the process dies, guarantees a single writer. The header then gets a bumped
    generation and this process's pid and start time, so readers see the restart.
    """
    size = _page_round(HEADER_SIZE + capacity * record_size)
    try:
        seg = Segment.open(name, writable=True)
    except SegmentNotFound:
        seg = Segment.create(name, size)
        init_header(seg, dtype, capacity, kind, record_size)
    except LayoutMismatch:
        if not replace:
            raise
        os.unlink(os.path.join(SHM_DIR, name))
        seg = Segment.create(name, size)
        init_header(seg, dtype, capacity, kind, record_size)
    lock_fd = os.open(seg.path, os.O_RDONLY)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(lock_fd)
        pid = seg.get(H.WRITER_PID)
        seg.close()
        raise WriterBusy(f"segment {name} is written by live pid {pid}") from None
    problem = _geometry_problem(seg, dtype, capacity, kind, record_size)
    if problem:
        generation = seg.get(H.GENERATION)
        if replace:
            seg.unlink()
        seg.close()
        os.close(lock_fd)
        if not replace:
            raise LayoutMismatch(f"segment {name}: {problem}")
        seg = Segment.create(name, size)
        init_header(seg, dtype, capacity, kind, record_size)
        seg.set(H.GENERATION, generation)  # bumped below: readers see a new generation
        lock_fd = os.open(seg.path, os.O_RDONLY)
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    pid = os.getpid()
    seg.set(H.WRITER_PID, pid)
    seg.set(H.WRITER_START_TIME, process_start_time(pid))
    seg.set(H.TAIL_INTENT, seg.get(H.TAIL))  # a dead writer's half-written slots are void
    seg.set(H.GENERATION, seg.get(H.GENERATION) + 1)
    seg.heartbeat()
    seg.set(H.STATE, SegmentState.RUNNING)
    return seg, lock_fd


def _geometry_problem(seg: Segment, dtype: np.dtype, capacity: int, kind: SegmentKind,
                      record_size: int) -> str:
    if seg.get(H.KIND) != kind:
        return f"kind {seg.get(H.KIND)} is not {kind.name}"
    if seg.get(H.DTYPE_HASH) != dtype_hash(dtype):
        return "record dtype differs from the existing segment's"
    if seg.get(H.CAPACITY) != capacity or seg.get(H.RECORD_SIZE) != record_size:
        return (f"capacity {seg.get(H.CAPACITY)}×{seg.get(H.RECORD_SIZE)} B differs from "
                f"requested {capacity}×{record_size} B")
    return ""


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
            os.close(self._lock_fd)
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
        self._wakes = 0
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
        result = commit_kernel(self._hdr, self._ring, self._mask, self._words, src, count,
                               self._stamp_word, self._waiters)
        if result & 1:  # the kernel woke parked readers
            self._wakes += 1
            self._seg.set(H.WAKES, self._wakes)
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
