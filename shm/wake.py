"""Park and wake across unrelated local processes: a futex on the header plus a doorbell file.

The ring's ``wake_seq`` word (in the read-only-mapped segment) is the futex word: FUTEX_WAIT only
reads it, which the kernel allows on a read-only shared mapping. Readers cannot write the ring,
so they announce themselves in a separate 4 KiB *doorbell* file (``<ring>.wake``, mode 0660) by
atomically incrementing its waiter count; the writer issues FUTEX_WAKE only when that count is
non-zero (see the ordering contract in :mod:`shm.atomics`). A reader that may not write the
doorbell still works: it sleeps with the same futex and a short timeout, without being woken.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform

from .atomics import fetch_add_u32
from .errors import ShmError
from .layout import DOORBELL_MAGIC, PAGE_SIZE, DoorbellOffsets
from .segment import SHM_DIR, Segment

__all__ = ["Doorbell", "check_platform", "futex_wait", "futex_wake"]

_SYS_FUTEX = {"x86_64": 202}
_FUTEX_WAIT = 0  # shared (no FUTEX_PRIVATE_FLAG): the word lives in a MAP_SHARED file
_FUTEX_WAKE = 1
_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


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
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err == errno.ETIMEDOUT:
        return False
    if err in (errno.EAGAIN, errno.EINTR):
        return True
    raise OSError(err, f"futex wait failed: {os.strerror(err)}")


def futex_wake(addr: int, count: int = 0x7FFFFFFF) -> int:
    """Wake up to ``count`` processes sleeping on the u32 at ``addr``; returns how many woke."""
    return int(_syscall(_SYS_FUTEX["x86_64"], ctypes.c_void_p(addr), _FUTEX_WAKE,
                        ctypes.c_int(count), None, None, 0))


class Doorbell:
    """The ``.wake`` companion of a ring: one u32 count of parked readers."""

    __slots__ = ("segment", "waiters_addr")

    def __init__(self, segment: Segment):
        self.segment = segment
        self.waiters_addr = segment.base + DoorbellOffsets.WAITERS

    @classmethod
    def create(cls, name: str) -> Doorbell:
        """Create (or replace) the doorbell ``name``, writable by the segment's group."""
        try:
            os.unlink(os.path.join(SHM_DIR, name))
        except FileNotFoundError:
            pass
        seg = Segment.create(name, PAGE_SIZE, mode=0o660)
        seg.set(DoorbellOffsets.MAGIC, DOORBELL_MAGIC)
        return cls(seg)

    @classmethod
    def open(cls, name: str) -> Doorbell | None:
        """Open the doorbell for parking, or ``None`` if it is missing or not writable to us."""
        try:
            return cls(Segment.open(name, writable=True, magic=DOORBELL_MAGIC))
        except (OSError, ShmError):
            return None

    def waiters(self) -> int:
        """Number of readers parked right now."""
        return int(self.segment.words[DoorbellOffsets.WAITERS >> 3]) & 0xFFFFFFFF

    def enter(self) -> None:
        """Register as a parked reader (seq_cst atomic add: also a full fence)."""
        fetch_add_u32(self.waiters_addr, 1)

    def leave(self) -> None:
        """Unregister after waking."""
        fetch_add_u32(self.waiters_addr, -1)

    def close(self) -> None:
        """Unmap the doorbell."""
        self.segment.close()

