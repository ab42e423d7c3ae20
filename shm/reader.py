"""The public reader of a ring: copy-then-validate, lap accounting, spin/park waiting."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Literal

import msgspec
import numpy as np

from .atomics import (
    ST_DELIVERED,
    ST_DISCONTINUITIES,
    ST_GENERATION,
    ST_INVALID,
    ST_LAPPED,
    ST_LOST,
    ST_NEXT,
    ST_TAIL,
    address_of,
    read_kernel,
)
from .errors import LayoutMismatch, SegmentNotFound, ShmError, WriterGone
from .latest import LatestReader
from .layout import (
    HEADER_SIZE,
    H,
    SegmentKind,
    SegmentState,
    describe_dtype,
    dtype_from_description,
    dtype_hash,
)
from .segment import Segment, segment_name, writer_alive
from .wake import Doorbell, check_platform, futex_wait, futex_wait_any

__all__ = ["Reader", "ReaderStats", "wait_any"]

_TAIL_W = H.TAIL >> 3
_WAKE_W = H.WAKE_SEQ >> 3
_STATE_W = H.STATE >> 3
_LIVENESS_INTERVAL_NS = 250_000_000


def _ring_dtype(name: str, seg: Segment) -> np.dtype:
    """The ring's record dtype, after checking every header field the read kernel relies on
    (it works on raw addresses, so a foreign or corrupt header must never reach it)."""
    if seg.get(H.KIND) != SegmentKind.RING:
        raise LayoutMismatch(f"segment {name} is not a ring")
    try:
        dtype = dtype_from_description(seg.get_text(H.DESCR, H.DESCR_SIZE))
        describe_dtype(dtype)  # seq (u8) first
    except (ValueError, KeyError, TypeError, IndexError) as exc:  # incl. JSON/Unicode errors
        raise LayoutMismatch(f"segment {name}: unreadable dtype description ({exc})") from None
    capacity, size = seg.get(H.CAPACITY), seg.get(H.RECORD_SIZE)
    if capacity < 2 or capacity & (capacity - 1):
        raise LayoutMismatch(f"segment {name}: capacity {capacity} is not a power of two ≥ 2")
    if size != dtype.itemsize or size % 8 or dtype_hash(dtype) != seg.get(H.DTYPE_HASH):
        raise LayoutMismatch(f"segment {name}: header dtype description is inconsistent")
    if seg.get(H.DATA_OFFSET) != HEADER_SIZE or seg.size < HEADER_SIZE + capacity * size:
        raise LayoutMismatch(f"segment {name}: {seg.size} bytes cannot hold {capacity} records "
                             f"of {size} B")
    return dtype


class ReaderStats(msgspec.Struct, frozen=True):
    """A snapshot of a reader's counters. Loss is a statistic, not an error."""

    delivered: int        # records returned by poll()
    lapped: int           # times the writer overtook this reader
    lost: int             # records overwritten before this reader copied them
    invalid: int          # records dropped by the seq check (never expected from a live writer)
    discontinuities: int  # writer restarts (new generation or recreated segment) seen
    generation: int       # writer generation currently followed
    next_seq: int         # seq the next poll() starts at
    tail: int             # writer's tail at the last poll
    lag: int              # tail - next_seq at the last poll
    parks: int            # times the reader blocked on the futex
    writer_stale: bool    # writer alive but its heartbeat is older than stale_after_ms


class Reader:
    """Read-only consumer of one ring, usable from any local process.

    ``poll()`` returns a private, validated copy (a structured ndarray, possibly empty) of the
    records committed since the last call, at most ``max_batch`` at a time. A reader that falls
    more than ``capacity`` behind is lapped: it counts the lost records and jumps ahead, keeping
    ``lap_margin`` records of slack. ``start`` is ``"latest"`` (only new records), ``"oldest"``
    (everything still in the ring) or a sequence number.

    ``poll_into(buffer)`` is the allocation-free form: it fills a reused array and returns the
    count (one numba call does the wait, the copy and the validation).

    Waiting (``timeout_s > 0``): ``wait="spin"`` busy-polls the tail; ``"park"`` spins for
    ``spin_us`` then sleeps on the ring's futex until the writer commits (the writer wakes only
    parked readers), rechecking at least every ``park_timeout_ms``.

    If the writer closes or dies, ``poll`` first delivers what is left, then raises
    :class:`WriterGone`; the reader stays usable and resumes, counting a discontinuity, when a
    writer takes the segment over or recreates it.
    """

    def __init__(self, name: str, *, start: Literal["latest", "oldest"] | int = "latest",
                 wait: Literal["spin", "park"] = "park", spin_us: float = 50.0,
                 park_timeout_ms: float = 100.0, max_batch: int = 4096,
                 lap_margin: int | None = None, dtype: np.dtype | None = None,
                 stale_after_ms: float = 2000.0):
        check_platform()
        if wait not in ("spin", "park"):
            raise ValueError(f"wait must be 'spin' or 'park', not {wait!r}")
        if max_batch < 1:
            raise ValueError("max_batch must be ≥ 1")
        self.name = name
        self._spin_only = wait == "spin"
        self._spin_ns = int(spin_us * 1000)
        self._park_s = park_timeout_ms / 1000
        self._max_batch = max_batch
        self._lap_margin_arg = lap_margin
        self._want_dtype = dtype
        self._stale_ns = int(stale_after_ms * 1e6)
        self._latest: LatestReader | None = None
        self._into: np.ndarray | None = None
        self._into_addr = 0
        # Counters live in an int64 array that read_kernel updates (see shm.atomics ST_*).
        self._state = np.zeros(8, np.int64)
        self._st = self._state.data
        self._state_addr = address_of(self._state)
        self._parks = self._reopens = 0
        self._closed = False
        self._writer_stale = False
        self._last_check_ns = 0
        self._attach(Segment.open(name))
        tail = self._hw[_TAIL_W]
        if start == "latest":
            first = tail
        elif start == "oldest":
            first = max(0, tail - self.capacity)
        elif isinstance(start, int) and start >= 0:
            first = start
        else:
            self.close()
            raise ValueError(f"start must be 'latest', 'oldest' or a seq ≥ 0, not {start!r}")
        self._st[ST_NEXT], self._st[ST_TAIL] = first, tail

    @classmethod
    def attach(cls, exchange: str, stream: str, instance: str = "default",
               **options: object) -> Reader:
        """Open ``microstream.<instance>.<exchange>.<stream>.v<layout>`` (see :class:`Reader`)."""
        return cls(segment_name(instance, exchange, stream), **options)  # type: ignore[arg-type]

    def _attach(self, seg: Segment) -> None:
        try:
            dtype = _ring_dtype(self.name, seg)
        except LayoutMismatch:
            seg.close()
            raise
        if self._want_dtype is not None and self._want_dtype != dtype:
            seg.close()
            raise LayoutMismatch(f"segment {self.name}: records are {dtype}, expected "
                                 f"{self._want_dtype}")
        self._seg = seg
        self._into = None  # a poll_into buffer must be re-validated against this layout
        self.dtype = dtype
        self.capacity = seg.get(H.CAPACITY)
        self._size = dtype.itemsize
        self._mask = self.capacity - 1
        self._margin = (self._lap_margin_arg if self._lap_margin_arg is not None
                        else self.capacity // 8)
        # memoryviews: indexing one costs ~60 ns against ~170 ns for a numpy scalar load
        self._mem = seg.memory()
        self._hw = self._mem[:HEADER_SIZE].cast("Q")
        self._ring_addr = seg.base + HEADER_SIZE
        self._words = self._size // 8
        self._wake_addr = seg.base + H.WAKE_SEQ
        self._st[ST_GENERATION] = seg.get(H.GENERATION)
        self._bell = None if self._spin_only else Doorbell.for_reader(self.name + ".wake")
        self._empty = np.empty(0, dtype)
        self._stage = np.empty(self._max_batch, dtype)  # poll() copies out of here
        self._stage_mem = self._stage.data.cast("B")
        self._stage_addr = address_of(self._stage)

    @property
    def words(self) -> tuple[int, int]:
        """``(tail word, next-seq word)``: the addresses of the ring's committed tail and of
        this reader's next seq (both int64), for code that checks many rings at once
        (:func:`shm.atomics.pending_kernel`). Valid until the reader closes or re-opens its
        segment; a re-open always counts a discontinuity (:attr:`stats`)."""
        return self._seg.base + H.TAIL, self._state_addr + 8 * ST_NEXT

    # -- reading ------------------------------------------------------------------------
    def poll(self, timeout_s: float = 0.0) -> np.ndarray:
        """New records since the last call (a private copy), waiting up to ``timeout_s``."""
        n = self._read(self._stage_addr, self._max_batch, timeout_s)
        if n <= 0:
            return self._empty
        return np.frombuffer(bytearray(self._stage_mem[:n * self._size]), self.dtype)

    def poll_into(self, out: np.ndarray, timeout_s: float = 0.0) -> int:
        """Copy new records into ``out[:n]`` without allocating; returns ``n``.

        The hot-path form of :meth:`poll` for a consumer that reuses one buffer (a contiguous,
        writable 1-d array of this ring's dtype).
        """
        if out is not self._into:
            if out.dtype != self.dtype or out.ndim != 1 or not out.flags.c_contiguous \
                    or not out.flags.writeable or len(out) == 0:
                raise LayoutMismatch(f"segment {self.name}: poll_into needs a writable, "
                                     f"contiguous, non-empty 1-d array of {self.dtype}")
            self._into, self._into_addr = out, address_of(out)
        n = self._read(self._into_addr, min(len(out), self._max_batch), timeout_s)
        return n if n > 0 else 0

    def _read(self, dst: int, limit: int, timeout_s: float) -> int:
        """Spin, park and copy; returns the number of records now at ``dst`` (0 if none)."""
        if self._closed:
            raise ValueError(f"segment {self.name}: reader is closed")
        args = (self._seg.base, self._ring_addr, self._mask, self._words, limit, dst)
        if timeout_s <= 0:
            got = read_kernel(*args, 0, self._margin, self._state_addr)
        else:
            now = time.perf_counter_ns()
            deadline = now + int(timeout_s * 1e9)
            spin_until = deadline if self._spin_only else min(deadline, now + self._spin_ns)
            while True:
                # spin inside the kernel, ≤ 1 ms per call so that Python can handle signals
                until = min(spin_until, now + 1_000_000) if now < spin_until else 0
                got = read_kernel(*args, until, self._margin, self._state_addr)
                if got >= 0:
                    return got
                now = time.perf_counter_ns()
                if now >= deadline:
                    break
                if now >= spin_until:
                    reopens = self._reopens
                    self._park(deadline - now)
                    if self._reopens != reopens:  # new mapping: `args` point at the old one
                        return 0
                    now = time.perf_counter_ns()
        if got < 0:
            self._idle_check()
            return 0
        return got

    def _park(self, remaining_ns: int) -> None:
        """Sleep on the ring's futex until the writer commits, for at most the park timeout."""
        hw, bell = self._hw, self._bell
        wake_seq = hw[_WAKE_W] & 0xFFFFFFFF  # read before setting our parked bit (shm.wake)
        if bell is not None:
            bell.enter()
        try:
            if hw[_TAIL_W] > self._st[ST_NEXT]:
                return
            closed = hw[_STATE_W] == SegmentState.CLOSED
            if not closed:
                self._parks += 1
                timeout = min(self._park_s, remaining_ns / 1e9) if bell else 0.001
                futex_wait(self._wake_addr, wake_seq, timeout)
        finally:
            if bell is not None:
                bell.leave()
        # Only now, with the doorbell released: the check may re-open (and unmap) the segment.
        if closed or hw[_TAIL_W] <= self._st[ST_NEXT]:
            self._idle_check(force=closed)  # closed: raise WriterGone or re-open, never spin

    # -- writer liveness ----------------------------------------------------------------
    def _idle_check(self, force: bool = False) -> None:
        now = time.monotonic_ns()
        if not force and now - self._last_check_ns < _LIVENESS_INTERVAL_NS:
            return
        self._last_check_ns = now
        seg = self._seg
        alive = writer_alive(seg.get(H.WRITER_PID), seg.get(H.WRITER_START_TIME))
        state = seg.get(H.STATE)
        self._writer_stale = alive and now - seg.get(H.HEARTBEAT_NS) > self._stale_ns
        if (alive and state == SegmentState.RUNNING) or state == SegmentState.INIT:
            return  # INIT: created (e.g. by the supervisor) but no writer has started yet
        if seg.path_inode() not in (0, seg.inode) and self._reopen():
            return
        if self._hw[_TAIL_W] <= self._st[ST_NEXT]:
            self._last_check_ns = 0  # keep checking on every idle poll until a writer returns
            what = "closed" if state == SegmentState.CLOSED else "died"
            raise WriterGone(f"segment {self.name}: writer pid {seg.get(H.WRITER_PID)} {what}")

    def _reopen(self) -> bool:
        try:
            seg = Segment.open(self.name)
        except (SegmentNotFound, ShmError):
            return False
        old_seg, old_bell, old_views = self._seg, self._bell, (self._mem, self._hw)
        self._attach(seg)
        self._reopens += 1
        self._st[ST_DISCONTINUITIES] += 1
        self._st[ST_NEXT] = max(0, self._hw[_TAIL_W] - self.capacity)  # the new writer's data
        for view in old_views:
            view.release()
        if old_bell is not None:
            old_bell.close()
        old_seg.close()
        return True

    # -- introspection ------------------------------------------------------------------
    @property
    def stats(self) -> ReaderStats:
        """Counters since this reader was opened."""
        st = self._state.tolist()
        return ReaderStats(
            delivered=st[ST_DELIVERED], lapped=st[ST_LAPPED], lost=st[ST_LOST],
            invalid=st[ST_INVALID], discontinuities=st[ST_DISCONTINUITIES],
            generation=st[ST_GENERATION], next_seq=st[ST_NEXT], tail=st[ST_TAIL],
            lag=max(0, st[ST_TAIL] - st[ST_NEXT]), parks=self._parks,
            writer_stale=self._writer_stale)

    def latest(self, symbol: int | str) -> np.void | None:
        """Latest record for ``symbol`` (id or exchange-native name) from the ``.latest`` table."""
        if self._latest is None:
            self._latest = LatestReader(self.name + ".latest")
        return self._latest.get(symbol)

    def close(self) -> None:
        """Unmap the segment. Arrays returned by poll() stay valid (they are copies)."""
        if self._closed:
            return
        self._closed = True
        if self._bell is not None:
            self._bell.close()
        if self._latest is not None:
            self._latest.close()
        for view in (self._hw, self._mem):
            view.release()
        self._seg.close()

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def wait_any(readers: Sequence[Reader], timeout_s: float) -> bool:
    """Park until any of ``readers``' rings commits a record they have not read, at most
    ``timeout_s`` (one ``futex_waitv``): how a process that follows many rings sleeps without
    polling them. True if one has something to read (or may have: a wake), False on timeout.

    The protocol is :meth:`Reader._park`'s for each ring (read ``wake_seq``, then set the
    parked bit, then re-check the tail, then sleep), so a commit between the check and the
    sleep changes a word and the sleep returns at once. Closed rings are left out (their
    word no longer changes); a reader without a doorbell slot is seen at the timeout.
    """
    entered: list[Reader] = []
    words: list[tuple[int, int]] = []
    try:
        for r in readers:
            hw = r._hw
            if hw[_STATE_W] == SegmentState.CLOSED or r._bell is None:
                continue
            words.append((r._wake_addr, hw[_WAKE_W] & 0xFFFFFFFF))  # before the parked bit
            r._bell.enter()
            entered.append(r)
        for r in readers:
            if r._hw[_TAIL_W] > r._st[ST_NEXT]:
                return True
        if not words:
            time.sleep(timeout_s)
            return False
        for r in entered:
            r._parks += 1
        return futex_wait_any(words, timeout_s)
    finally:
        for r in entered:
            r._bell.leave()  # type: ignore[union-attr]
