"""The public reader of a ring: copy-then-validate, lap accounting, spin/park waiting."""

from __future__ import annotations

import struct
import time
from typing import Literal

import msgspec
import numpy as np

from .atomics import copy_kernel
from .errors import LayoutMismatch, SegmentNotFound, ShmError, WriterGone
from .latest import LatestReader
from .layout import HEADER_SIZE, H, SegmentKind, SegmentState, dtype_from_description, dtype_hash
from .segment import Segment, segment_name, writer_alive
from .wake import Doorbell, check_platform, futex_wait

__all__ = ["Reader", "ReaderStats"]

_TAIL_W = H.TAIL >> 3
_INTENT_W = H.TAIL_INTENT >> 3
_GEN_W = H.GENERATION >> 3
_WAKE_W = H.WAKE_SEQ >> 3
_SEQ = struct.Struct("<Q")
_LIVENESS_INTERVAL_NS = 250_000_000


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

    Waiting (``poll(timeout_s)`` / ``wait``): ``"spin"`` busy-polls; ``"park"`` spins for
    ``spin_us`` then sleeps on the ring's futex until the writer commits (woken only when a
    reader is parked), rechecking at least every ``park_timeout_ms``.

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
        self._wait_mode = wait
        self._spin_ns = int(spin_us * 1000)
        self._park_s = park_timeout_ms / 1000
        self._max_batch = max_batch
        self._lap_margin_arg = lap_margin
        self._want_dtype = dtype
        self._stale_ns = int(stale_after_ms * 1e6)
        self._latest: LatestReader | None = None
        self._into: np.ndarray | None = None
        self._into_addr = 0
        self._count = 0
        self._delivered = self._lapped = self._lost = self._invalid = 0
        self._discontinuities = self._parks = 0
        self._writer_stale = False
        self._last_check_ns = 0
        self._attach(Segment.open(name))
        tail = self._hw[_TAIL_W]
        if start == "latest":
            self._next = tail
        elif start == "oldest":
            self._next = max(0, tail - self.capacity)
        elif isinstance(start, int) and start >= 0:
            self._next = start
        else:
            raise ValueError(f"start must be 'latest', 'oldest' or a seq ≥ 0, not {start!r}")
        self._tail = tail

    @classmethod
    def attach(cls, exchange: str, stream: str, instance: str = "default",
               **options: object) -> Reader:
        """Open ``microstream.<instance>.<exchange>.<stream>.v<layout>`` (see :class:`Reader`)."""
        return cls(segment_name(instance, exchange, stream), **options)  # type: ignore[arg-type]

    def _attach(self, seg: Segment) -> None:
        if seg.get(H.KIND) != SegmentKind.RING:
            seg.close()
            raise LayoutMismatch(f"segment {self.name} is not a ring")
        dtype = dtype_from_description(seg.get_text(H.DESCR, H.DESCR_SIZE))
        if dtype_hash(dtype) != seg.get(H.DTYPE_HASH) or dtype.itemsize != seg.get(H.RECORD_SIZE):
            seg.close()
            raise LayoutMismatch(f"segment {self.name}: header dtype description is inconsistent")
        if self._want_dtype is not None and self._want_dtype != dtype:
            seg.close()
            raise LayoutMismatch(f"segment {self.name}: records are {dtype}, expected "
                                 f"{self._want_dtype}")
        self._seg = seg
        self.dtype = dtype
        self.capacity = seg.get(H.CAPACITY)
        self._size = dtype.itemsize
        self._mask = self.capacity - 1
        self._margin = (self._lap_margin_arg if self._lap_margin_arg is not None
                        else self.capacity // 8)
        # memoryviews: indexing one costs ~60 ns against ~170 ns for a numpy scalar load
        self._mem = seg.memory()
        self._hw = self._mem[:HEADER_SIZE].cast("Q")
        self._ring = self._mem[HEADER_SIZE:HEADER_SIZE + self.capacity * self._size]
        self._ring_addr = seg.base + HEADER_SIZE
        self._words = self._size // 8
        self._wake_addr = seg.base + H.WAKE_SEQ
        self._generation = seg.get(H.GENERATION)
        self._bell = Doorbell.for_reader(self.name + ".wake") if self._wait_mode == "park" else None
        self._empty = np.empty(0, dtype)

    # -- reading ------------------------------------------------------------------------
    def poll(self, timeout_s: float = 0.0) -> np.ndarray:
        """New records since the last call (a private copy), waiting up to ``timeout_s``."""
        start = self._pending(timeout_s, self._max_batch)
        count = self._count
        if not count:
            return self._empty
        size = self._size
        first = (start & self._mask) * size
        end = first + count * size
        ring = self._ring
        if end <= len(ring):
            buf = bytearray(ring[first:end])
        else:
            buf = bytearray(ring[first:])
            buf += ring[:end - len(ring)]
        # After the copy: a slot whose seq is below tail_intent - capacity may have been
        # overwritten while we copied it (loads stay in order on x86-64; see shm.atomics).
        skip = self._hw[_INTENT_W] - self.capacity - start
        skip = 0 if skip < 0 else count if skip > count else skip
        if count - skip <= 8:
            good = skip
            while good < count and _SEQ.unpack_from(buf, good * size)[0] == start + good:
                good += 1
        else:
            seqs = np.frombuffer(buf, np.uint64)[skip * size // 8::size // 8]
            bad = np.flatnonzero(seqs != np.arange(start + skip, start + count, dtype=np.uint64))
            good = skip + int(bad[0]) if len(bad) else count
        if self._account(start, count, skip, good) <= 0:
            return self._empty
        out = np.frombuffer(buf, self.dtype)
        return out if good - skip == count else out[skip:good]

    def poll_into(self, out: np.ndarray, timeout_s: float = 0.0) -> int:
        """Copy new records into ``out[:n]`` without allocating; returns ``n``.

        The hot-path form of :meth:`poll` for a consumer that reuses one buffer (a contiguous,
        writable 1-d array of this ring's dtype): one numba call copies and validates.
        """
        if out is not self._into:
            if out.dtype != self.dtype or out.ndim != 1 or not out.flags.c_contiguous \
                    or not out.flags.writeable or len(out) == 0:
                raise LayoutMismatch(f"segment {self.name}: poll_into needs a writable, "
                                     f"contiguous, non-empty 1-d array of {self.dtype}")
            self._into, self._into_addr = out, int(out.ctypes.data)
        start = self._pending(timeout_s, len(out) if len(out) < self._max_batch
                              else self._max_batch)
        count = self._count
        if not count:
            return 0
        packed = copy_kernel(self._seg.base, self._ring_addr, self._mask, self._words, start,
                             count, self._into_addr)
        skip, good = packed >> 32, packed & 0xFFFFFFFF
        n = self._account(start, count, skip, good)
        if skip and n > 0:
            out[:n] = out[skip:good].copy()
        return n if n > 0 else 0

    def _pending(self, timeout_s: float, limit: int) -> int:
        """Wait if asked, handle laps and restarts; sets ``_count``, returns the first seq."""
        hw = self._hw
        tail = hw[_TAIL_W]
        start = self._next
        if tail == start:
            if timeout_s <= 0 or not self.wait(timeout_s):
                self._count = 0
                self._idle_check()
                return start
            tail = hw[_TAIL_W]
        if hw[_GEN_W] != self._generation:
            self._generation = hw[_GEN_W]
            self._discontinuities += 1
        self._tail = tail
        if tail - start > self.capacity:
            jump = tail - self.capacity + min(self._margin, self.capacity - 1)
            self._lapped += 1
            self._lost += jump - start
            start = jump
        count = tail - start
        self._count = count if count < limit else limit
        return start

    def _account(self, start: int, count: int, skip: int, good: int) -> int:
        """Update counters after a validated copy; returns the number of records delivered."""
        if skip:
            self._lapped += 1
            self._lost += skip
        if good < count:  # a record failed the seq check: drop it, never deliver it
            self._invalid += 1
            good_next = start + good + 1
        else:
            good_next = start + count
        self._next = good_next
        self._delivered += good - skip
        return good - skip

    def wait(self, timeout_s: float) -> bool:
        """Block until a record is available or ``timeout_s`` passes; True if one is available."""
        hw = self._hw
        now = time.perf_counter_ns()
        deadline = now + int(timeout_s * 1e9)
        spin_until = deadline if self._wait_mode == "spin" else min(deadline, now + self._spin_ns)
        while True:
            if hw[_TAIL_W] != self._next:
                return True
            now = time.perf_counter_ns()
            if now >= spin_until:
                break
        bell = self._bell
        while now < deadline:
            wake_seq = hw[_WAKE_W] & 0xFFFFFFFF  # read before setting our parked bit
            if bell is not None:
                bell.enter()
            try:
                if hw[_TAIL_W] != self._next:
                    return True
                if hw[H.STATE >> 3] == SegmentState.CLOSED:
                    return False
                self._parks += 1
                futex_wait(self._wake_addr, wake_seq,
                           min(self._park_s, (deadline - now) / 1e9) if bell else 0.001)
            finally:
                if bell is not None:
                    bell.leave()
            if hw[_TAIL_W] != self._next:
                return True
            self._idle_check()
            now = time.perf_counter_ns()
        return False

    # -- writer liveness ----------------------------------------------------------------
    def _idle_check(self) -> None:
        now = time.monotonic_ns()
        if now - self._last_check_ns < _LIVENESS_INTERVAL_NS:
            return
        self._last_check_ns = now
        seg = self._seg
        alive = writer_alive(seg.get(H.WRITER_PID), seg.get(H.WRITER_START_TIME))
        state = seg.get(H.STATE)
        self._writer_stale = alive and now - seg.get(H.HEARTBEAT_NS) > self._stale_ns
        if alive and state == SegmentState.RUNNING:
            return
        if seg.path_inode() not in (0, seg.inode) and self._reopen():
            return
        if self._hw[_TAIL_W] == self._next:
            self._last_check_ns = 0  # keep checking on every idle poll until a writer returns
            what = "closed" if state == SegmentState.CLOSED else "died"
            raise WriterGone(f"segment {self.name}: writer pid {seg.get(H.WRITER_PID)} {what}")

    def _reopen(self) -> bool:
        try:
            seg = Segment.open(self.name)
        except (SegmentNotFound, ShmError):
            return False
        old_seg, old_bell, old_views = self._seg, self._bell, (self._mem, self._hw, self._ring)
        self._attach(seg)
        self._discontinuities += 1
        self._next = max(0, self._hw[_TAIL_W] - self.capacity)  # all of the new writer's data
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
        return ReaderStats(
            delivered=self._delivered, lapped=self._lapped, lost=self._lost,
            invalid=self._invalid, discontinuities=self._discontinuities,
            generation=self._generation, next_seq=self._next, tail=self._tail,
            lag=max(0, self._tail - self._next), parks=self._parks,
            writer_stale=self._writer_stale)

    def latest(self, symbol: int | str) -> np.void | None:
        """Latest record for ``symbol`` (id or exchange-native name) from the ``.latest`` table."""
        if self._latest is None:
            self._latest = LatestReader(self.name + ".latest")
        return self._latest.get(symbol)

    def close(self) -> None:
        """Unmap the segment. Arrays returned by poll() stay valid (they are copies)."""
        if self._bell is not None:
            self._bell.close()
        if self._latest is not None:
            self._latest.close()
        for view in (self._ring, self._hw, self._mem):
            view.release()
        self._seg.close()

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
