"""Single-writer ownership of bus files: lock first, then inspect, create or take over.

Every writer holds an exclusive ``flock`` on each file it writes (ring or table, and the ring's
doorbell) for its whole life; the kernel drops it when the process dies, so a held lock means a
live writer. Ownership is decided under that lock only: open (or create) the file, lock it,
check that the path still names the locked file (it may have been replaced or removed in
between), and only then read, initialise or replace it. ``gc`` follows the same rule, so it can
never remove a file that a writer has just claimed.
"""

from __future__ import annotations

import fcntl
import os
import struct
import time

import numpy as np

from .errors import LayoutMismatch, ShmError, WriterBusy
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
from .segment import SHM_DIR, Segment, process_start_time, writer_alive

__all__ = ["claim_segment", "lock_file", "remove_if_dead"]

_ATTEMPTS = 8
_HEAD = struct.Struct("<12Q")  # the first 96 header bytes: magic ... state


def _same_file(fd: int, path: str) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def lock_file(path: str, mode: int, blocking: bool = False) -> tuple[int, bool]:
    """Open or create ``path`` read-write and lock it exclusively; returns ``(fd, created)``.

    ``created`` is True when the file is new or empty (a creator died before sizing it). Raises
    :class:`WriterBusy` if another process holds the lock (unless ``blocking``).
    """
    for _ in range(_ATTEMPTS):
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, mode)
            except FileExistsError:
                continue  # another process created it first: try again to open it
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            head = os.pread(fd, _HEAD.size, 0)
            os.close(fd)
            pid = _HEAD.unpack(head)[H.WRITER_PID >> 3] if len(head) == _HEAD.size else 0
            raise WriterBusy(f"segment {os.path.basename(path)} is written by live pid "
                             f"{pid or '(being created)'}") from None
        if _same_file(fd, path):
            if os.fstat(fd).st_size == 0:
                os.fchmod(fd, mode)  # not subject to the umask
                return fd, True
            return fd, False
        os.close(fd)  # replaced or removed between open and lock
    raise ShmError(f"segment {os.path.basename(path)}: could not lock it, it kept changing")


def _init_header(seg: Segment, dtype: np.dtype, capacity: int, kind: SegmentKind,
                 record_size: int, generation: int) -> None:
    """Write the static header fields of a new segment (magic last)."""
    seg.set(H.LAYOUT_VERSION, LAYOUT_VERSION)
    seg.set(H.DTYPE_HASH, dtype_hash(dtype))
    seg.set(H.RECORD_SIZE, record_size)
    seg.set(H.CAPACITY, capacity)
    seg.set(H.KIND, kind)
    seg.set(H.DATA_OFFSET, HEADER_SIZE)
    seg.set(H.CREATED_NS, time.time_ns())
    seg.set(H.GENERATION, generation)
    seg.set_text(H.NAME, H.NAME_SIZE, seg.name)
    seg.set_text(H.DESCR, H.DESCR_SIZE, describe_dtype(dtype))
    seg.set(H.MAGIC, MAGIC)


def _inspect(name: str, fd: int, dtype: np.dtype, capacity: int, kind: SegmentKind,
             record_size: int) -> Segment | tuple[str, int]:
    """Map an existing file we hold the lock on; on a mismatch unmap it and return
    ``(problem, its generation)`` instead."""
    if os.fstat(fd).st_size < HEADER_SIZE:
        return "smaller than a header (not a microstream segment)", 0
    seg = Segment.from_fd(name, fd, writable=True)
    problem = _problem(seg, dtype, capacity, kind, record_size)
    if not problem:
        return seg
    generation = seg.get(H.GENERATION) if seg.get(H.MAGIC) == MAGIC else 0
    seg.close()
    return problem, generation


def _problem(seg: Segment, dtype: np.dtype, capacity: int, kind: SegmentKind,
             record_size: int) -> str:
    if seg.get(H.MAGIC) != MAGIC:
        return "not a microstream segment (bad magic)"
    if seg.get(H.LAYOUT_VERSION) != LAYOUT_VERSION:
        return f"layout v{seg.get(H.LAYOUT_VERSION)}, this build writes v{LAYOUT_VERSION}"
    if seg.get(H.KIND) != kind:
        return f"kind {seg.get(H.KIND)} is not {kind.name}"
    if seg.get(H.DTYPE_HASH) != dtype_hash(dtype):
        return "record dtype differs from the existing segment's"
    if seg.get(H.CAPACITY) != capacity or seg.get(H.RECORD_SIZE) != record_size:
        return (f"capacity {seg.get(H.CAPACITY)}×{seg.get(H.RECORD_SIZE)} B differs from "
                f"requested {capacity}×{record_size} B")
    return ""


def claim_segment(name: str, dtype: np.dtype, capacity: int, kind: SegmentKind,
                  record_size: int, replace: bool) -> tuple[Segment, int]:
    """Create segment ``name`` or take it over from a writer that is gone.

    Returns the mapped segment and the fd whose lock the caller holds until it closes. A segment
    of another layout raises :class:`LayoutMismatch`, or with ``replace`` is removed and created
    anew (its generation carried over, so readers see a restart). On takeover the generation is
    bumped and ``tail_intent`` is left as the dead writer left it: slots it may have been
    overwriting stay below ``tail_intent - capacity``, so readers count them as lost instead of
    trusting a half-written record.
    """
    path = os.path.join(SHM_DIR, name)
    size = (HEADER_SIZE + capacity * record_size + PAGE_SIZE - 1) // PAGE_SIZE * PAGE_SIZE
    generation = 0
    for _ in range(_ATTEMPTS):
        fd, created = lock_file(path, 0o640)
        try:
            if created:
                os.ftruncate(fd, size)
                seg = Segment.from_fd(name, fd, writable=True)
                _init_header(seg, dtype, capacity, kind, record_size, generation)
            else:
                found = _inspect(name, fd, dtype, capacity, kind, record_size)
                if isinstance(found, tuple):
                    problem, generation = found
                    if not replace:
                        raise LayoutMismatch(f"segment {name}: {problem}")
                    os.unlink(path)  # under our lock: no writer can be using it
                    os.close(fd)
                    continue
                seg = found
        except BaseException:
            os.close(fd)
            raise
        pid = os.getpid()
        seg.set(H.WRITER_PID, pid)
        seg.set(H.WRITER_START_TIME, process_start_time(pid))
        seg.set(H.TAIL_INTENT, max(seg.get(H.TAIL_INTENT), seg.get(H.TAIL)))
        seg.set(H.GENERATION, seg.get(H.GENERATION) + 1)
        seg.heartbeat()
        seg.set(H.STATE, SegmentState.RUNNING)
        return seg, fd
    raise ShmError(f"segment {name}: could not claim it, it kept changing")


def remove_if_dead(name: str, ring_name: str = "") -> bool:
    """Unlink ``name`` if, under its lock, it is closed or its writer died; True if removed.

    A doorbell (``ring_name`` given) goes only when its ring no longer exists.
    """
    path = os.path.join(SHM_DIR, name)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # a live writer holds it
        if not _same_file(fd, path):
            return False
        if ring_name:
            dead = not os.path.exists(os.path.join(SHM_DIR, ring_name))
        else:
            head = os.pread(fd, _HEAD.size, 0)
            if len(head) < _HEAD.size or _HEAD.unpack(head)[0] != MAGIC:
                return False  # not ours, or being created: leave it alone
            fields = _HEAD.unpack(head)
            state = fields[H.STATE >> 3]
            alive = writer_alive(fields[H.WRITER_PID >> 3], fields[H.WRITER_START_TIME >> 3])
            dead = state == SegmentState.CLOSED or (state == SegmentState.RUNNING and not alive)
        if dead:
            os.unlink(path)
        return dead
    finally:
        os.close(fd)
