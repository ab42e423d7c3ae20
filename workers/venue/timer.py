"""A precise, non-spinning wake-up for paced replay: a ``timerfd`` on CLOCK_MONOTONIC.

The event loop's own timers have millisecond resolution (libuv and ``selectors`` both round
epoll timeouts to ms), so the replay used to sleep until 1 ms before a frame was due and spin
the rest. On a small host that spin is the load generator eating the CPU of the system under
test: three venues at 1.7 k events/s each took 110 % of a 2-vCPU machine. A ``timerfd`` armed
with an absolute CLOCK_MONOTONIC deadline (``time.perf_counter_ns`` is that clock on Linux)
fires at or after the deadline (never early: the kernel's hrtimer) and wakes the loop through
its reader callback, so a frame leaves within the platform's wake-up latency of its due time
and the venue sleeps in between.

Linux only (``timerfd_create`` through ctypes: Python 3.11 has no ``os.timerfd_*``);
:func:`available` says whether it works here, and the replay falls back to sleep + spin.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import os

__all__ = ["DeadlineTimer", "available"]

_CLOCK_MONOTONIC = 1
_TFD_TIMER_ABSTIME = 1
_TFD_NONBLOCK = os.O_NONBLOCK
_TFD_CLOEXEC = os.O_CLOEXEC


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.timerfd_create.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.timerfd_settime.argtypes = [ctypes.c_int, ctypes.c_int,
                                         ctypes.POINTER(_Itimerspec), ctypes.c_void_p]
        return libc
    except (OSError, AttributeError):
        return None


_LIBC = _libc()


def available() -> bool:
    """True if timerfd works on this platform."""
    if _LIBC is None:
        return False
    fd = _LIBC.timerfd_create(_CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC)
    if fd < 0:
        return False
    os.close(fd)
    return True


class DeadlineTimer:
    """One timerfd registered with the running loop: :meth:`wait_until` an absolute
    ``perf_counter_ns`` deadline; :meth:`wake` ends a wait early (e.g. a new subscription)."""

    def __init__(self) -> None:
        assert _LIBC is not None, "timerfd unavailable (check available() first)"
        fd = _LIBC.timerfd_create(_CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"timerfd_create: {os.strerror(err)}")
        self.fd = fd
        self._loop = asyncio.get_running_loop()
        self._waiter: asyncio.Future[None] | None = None
        self._spec = _Itimerspec()
        self._loop.add_reader(fd, self._fired)

    def _fired(self) -> None:
        try:
            os.read(self.fd, 8)   # the expiration count; reading re-arms readiness
        except BlockingIOError:
            return
        self.wake()

    def wake(self) -> None:
        """End the current wait, if any."""
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait_until(self, deadline_ns: int) -> None:
        """Sleep until ``deadline_ns`` (CLOCK_MONOTONIC) or :meth:`wake`, whichever is first."""
        assert _LIBC is not None
        value = self._spec.it_value
        value.tv_sec, value.tv_nsec = divmod(max(deadline_ns, 1), 1_000_000_000)
        if _LIBC.timerfd_settime(self.fd, _TFD_TIMER_ABSTIME, ctypes.byref(self._spec),
                                 None) < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"timerfd_settime: {os.strerror(err)}")
        self._waiter = waiter = self._loop.create_future()
        try:
            await waiter
        finally:
            if self._waiter is waiter:
                self._waiter = None

    def close(self) -> None:
        """Unregister and close the timerfd (idempotent)."""
        if self.fd >= 0:
            self._loop.remove_reader(self.fd)
            os.close(self.fd)
            self.fd = -1
            self.wake()

