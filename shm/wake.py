"""Park and wake across unrelated local processes: a futex on the header plus a doorbell file.

The ring's ``wake_seq`` word (in the read-only-mapped segment) is the futex word: FUTEX_WAIT only
reads it, which the kernel allows on a read-only shared mapping. Readers cannot write the ring, so
they announce themselves in a separate 4 KiB *doorbell* file (``<ring>.wake``, mode 0660): each
reader claims one of 64 slots (its pid and start time, by compare-and-swap) and sets its bit in
the ``parked`` bitmap while it sleeps. The writer issues FUTEX_WAKE only when the bitmap is
non-zero (see the ordering contract in :mod:`shm.atomics`), and its heartbeat clears the bits of
readers that died while parked, so a ``kill -9``'d consumer cannot make every commit pay a
syscall. A reader without a slot (no write access, or all 64 taken) still works: it sleeps on the
same futex with a 1 ms timeout instead of being woken.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import time

import numpy as np

from .atomics import compare_exchange_u32, fetch_and, fetch_or, futex_wake
from .claim import lock_file
from .errors import ShmError
from .layout import DOORBELL_MAGIC, PAGE_SIZE, DoorbellOffsets
from .segment import SHM_DIR, Segment, process_start_time, writer_alive

__all__ = ["Doorbell", "check_platform", "futex_wait", "futex_wait_any", "futex_wake"]

_SYS_FUTEX = {"x86_64": 202}
_SYS_FUTEX_WAITV = 449          # x86-64, Linux ≥ 5.16
_FUTEX2_SIZE_U32 = 0x02         # shared (no FUTEX2_PRIVATE): words live in MAP_SHARED files
_CLOCK_MONOTONIC = 1
_FUTEX_WAIT = 0  # shared (no FUTEX_PRIVATE_FLAG): the word lives in a MAP_SHARED file
_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


_REAPING = 0xFFFFFFFF  # slot pid while the writer frees a dead reader's slot


def _s64(value: int) -> int:
    """The u64 bit pattern ``value`` as the int64 the numba kernels take."""
    value &= (1 << 64) - 1
    return value - (1 << 64) if value >> 63 else value


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def check_platform() -> None:
    """Raise ShmError off x86-64 Linux: the ordering argument of the bus assumes TSO."""
    if platform.system() != "Linux" or platform.machine() not in _SYS_FUTEX:
        raise ShmError(f"the microstream bus supports x86-64 Linux only, not "
                       f"{platform.system()}/{platform.machine()}")


def futex_wait(addr: int, expected: int, timeout_s: float) -> bool:
    """Sleep while the u32 at ``addr`` equals ``expected``, at most ``timeout_s``.

    Returns True if woken or the value had already changed, False on timeout.
    """
    sec = int(timeout_s)
    ts = _Timespec(sec, int((timeout_s - sec) * 1e9))
    rc = _syscall(_SYS_FUTEX["x86_64"], ctypes.c_void_p(addr), _FUTEX_WAIT,
                  ctypes.c_uint32(expected), ctypes.byref(ts), None, 0)
    return _woken(rc, "futex wait")


def _woken(rc: int, what: str) -> bool:
    """A futex wait's outcome: True if woken or the value had changed (EAGAIN) or a signal
    came (EINTR), False on timeout; anything else raises."""
    if rc >= 0:
        return True
    err = ctypes.get_errno()
    if err == errno.ETIMEDOUT:
        return False
    if err in (errno.EAGAIN, errno.EINTR):
        return True
    raise OSError(err, f"{what} failed: {os.strerror(err)}")


class _FutexWaitv(ctypes.Structure):
    _fields_ = [("val", ctypes.c_uint64), ("uaddr", ctypes.c_uint64),
                ("flags", ctypes.c_uint32), ("reserved", ctypes.c_uint32)]


_waitv_missing = False
# futex_waitv argument arrays by their words' addresses, reused: a follower waits on the same
# rings every time, and building n ctypes structs per wait cost ≈ 1 µs a ring
_waitv_arrays: dict[tuple[int, ...], tuple[ctypes.Array[_FutexWaitv], np.ndarray]] = {}
_WAITV_CACHE = 64   # distinct ring sets kept (more: the cache starts afresh)


def _waitv_array(addrs: tuple[int, ...]) -> tuple[ctypes.Array[_FutexWaitv], np.ndarray]:
    """The reusable ``futex_waitv`` array over ``addrs`` and a writable view of its ``val``
    column (u64, one per word)."""
    found = _waitv_arrays.get(addrs)
    if found is None:
        if len(_waitv_arrays) >= _WAITV_CACHE:
            _waitv_arrays.clear()
        array = (_FutexWaitv * len(addrs))(*[_FutexWaitv(0, a, _FUTEX2_SIZE_U32, 0)
                                             for a in addrs])
        vals = np.frombuffer(memoryview(array).cast("B"), np.uint64).reshape(len(addrs), 3)[:, 0]
        found = _waitv_arrays[addrs] = (array, vals)
    return found


def futex_wait_any(words: list[tuple[int, int]], timeout_s: float) -> bool:
    """Sleep while every u32 at ``addr`` equals its ``expected`` (``words``: (addr, expected)
    pairs), at most ``timeout_s``: one ``futex_waitv`` call over several rings.

    Returns True if woken or a value had already changed, False on timeout. On a kernel without
    ``futex_waitv`` (before 5.16) it sleeps on the first word only (the others are then seen at
    the timeout at the latest).
    """
    global _waitv_missing
    if not words:
        return False
    if _waitv_missing or len(words) == 1:
        return futex_wait(words[0][0], words[0][1], timeout_s)
    waiters, vals = _waitv_array(tuple([addr for addr, _ in words]))
    vals[:] = [expected for _, expected in words]
    deadline = time.clock_gettime_ns(time.CLOCK_MONOTONIC) + int(timeout_s * 1e9)
    ts = _Timespec(deadline // 1_000_000_000, deadline % 1_000_000_000)  # absolute
    rc = _syscall(_SYS_FUTEX_WAITV, waiters, len(words), 0, ctypes.byref(ts),
                  _CLOCK_MONOTONIC)
    if rc < 0 and ctypes.get_errno() == errno.ENOSYS:
        _waitv_missing = True
        return futex_wait(words[0][0], words[0][1], timeout_s)
    return _woken(rc, "futex_waitv")


class Doorbell:
    """The ``.wake`` companion of a ring: reader slots and the parked bitmap."""

    __slots__ = ("_bit", "_clear", "_lock_fd", "parked_addr", "segment", "slot")

    def __init__(self, segment: Segment, lock_fd: int = -1):
        self.segment = segment
        self.parked_addr = segment.base + DoorbellOffsets.PARKED
        self.slot = -1
        self._bit = self._clear = 0
        self._lock_fd = lock_fd

    # -- writer side ----------------------------------------------------------------------
    @classmethod
    def for_writer(cls, name: str) -> Doorbell:
        """Lock and reuse the doorbell ``name`` (readers parked across a writer restart stay
        wakeable) or create it, writable by the segment's group; then reap dead readers.

        The lock is held until :meth:`close` so that ``gc`` never removes a live doorbell; it is
        taken blocking because ``gc`` only holds it for a moment.
        """
        path = os.path.join(SHM_DIR, name)
        fd, created = lock_file(path, 0o660, blocking=True)
        try:
            if not created and os.fstat(fd).st_size != PAGE_SIZE:
                os.ftruncate(fd, 0)  # not a doorbell page: start it afresh
                created = True
            if created:
                os.ftruncate(fd, PAGE_SIZE)
            bell = cls(Segment.from_fd(name, fd, writable=True), fd)
        except BaseException:
            os.close(fd)
            raise
        if bell.segment.get(DoorbellOffsets.MAGIC) != DOORBELL_MAGIC:
            bell.segment.words[:] = 0
            bell.segment.set(DoorbellOffsets.MAGIC, DOORBELL_MAGIC)
        bell.reap()
        return bell

    def reap(self) -> int:
        """Free the slots (and parked bits) of readers that died; returns how many were freed.

        A slot is taken from its dead owner by compare-and-swap to a sentinel pid first, so a
        reader that claims the slot concurrently can never have its bit or start time cleared.
        """
        freed = 0
        base = self.segment.base
        for slot in range(DoorbellOffsets.SLOT_COUNT):
            off = DoorbellOffsets.SLOTS + slot * DoorbellOffsets.SLOT_SIZE
            pid = self.segment.get(off) & 0xFFFFFFFF
            if pid in (0, _REAPING):
                continue
            start = self.segment.get(off + 8)
            # start 0: the reader is between claiming the slot and writing its start time
            if (writer_alive(pid, start) if start else process_start_time(pid) != 0):
                continue
            if compare_exchange_u32(base + off, pid, _REAPING) != pid:
                continue  # the owner changed since we looked: not ours to free
            fetch_and(self.parked_addr, _s64(~(1 << slot)))
            self.segment.set(off + 8, 0)
            compare_exchange_u32(base + off, _REAPING, 0)
            freed += 1
        return freed

    # -- reader side ----------------------------------------------------------------------
    @classmethod
    def for_reader(cls, name: str) -> Doorbell | None:
        """Open the doorbell and claim a slot, or ``None`` if missing, read-only to us, or full."""
        try:
            bell = cls(Segment.open(name, writable=True, magic=DOORBELL_MAGIC))
        except (OSError, ShmError):
            return None
        pid = os.getpid()
        for slot in range(DoorbellOffsets.SLOT_COUNT):
            off = DoorbellOffsets.SLOTS + slot * DoorbellOffsets.SLOT_SIZE
            if compare_exchange_u32(bell.segment.base + off, 0, pid) == 0:
                bell.segment.set(off + 8, process_start_time(pid))
                bell.slot, bell._bit, bell._clear = slot, _s64(1 << slot), _s64(~(1 << slot))
                return bell
        bell.segment.close()
        return None

    def enter(self) -> None:
        """Mark this reader parked (seq_cst atomic OR: also the full fence the protocol needs)."""
        fetch_or(self.parked_addr, self._bit)

    def leave(self) -> None:
        """Mark this reader awake."""
        fetch_and(self.parked_addr, self._clear)

    def close(self) -> None:
        """Give the slot back (reader) and unmap."""
        if self.slot >= 0:
            self.leave()
            off = DoorbellOffsets.SLOTS + self.slot * DoorbellOffsets.SLOT_SIZE
            self.segment.set(off + 8, 0)
            compare_exchange_u32(self.segment.base + off, os.getpid(), 0)
            self.slot = -1
        self.segment.close()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1
