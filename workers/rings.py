"""The rings a downstream process (detectors, publisher) follows, attached as they appear.

A feed worker may start after its readers, restart, or stop: :class:`RingSet` looks for a ring
that does not exist yet at most every ``retry_s`` (a failed open costs a syscall and an
exception, more than a whole idle step), reports a writer restart (a new generation: records
may be missing) as a discontinuity, and treats a writer that closed as "nothing new" until its
successor appears.

:meth:`RingSet.pending` tells which of many rings have records in one compiled call
(``shm.atomics.pending_kernel``), so a step polls only those: a poll from Python costs ≈ 2 µs
a ring, and the publisher follows about twenty. Every ``sweep_s`` it names them all instead,
so that rings not attached yet, writer restarts and writers gone are still found by a poll.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

import shm
from shm.atomics import address_of, pending_kernel

__all__ = ["ATTACH_RETRY_S", "SWEEP_S", "RingSet"]

ATTACH_RETRY_S = 0.5
SWEEP_S = 0.05
_PENDING = pending_kernel.overloads[  # the compiled function, no dispatcher
    pending_kernel.signatures[0]].entry_point  # type: ignore[attr-defined]


class RingSet:
    """Readers of ``instance``'s rings by ``(owner, stream)`` (owner: an exchange name, or
    ``"detectors"``); ``start`` as for ``shm.Reader.attach``."""

    def __init__(self, instance: str, start: str = "latest",
                 retry_s: float = ATTACH_RETRY_S, sweep_s: float = SWEEP_S,
                 batch_window_us: int = 0) -> None:
        self.instance = instance
        self.batch_window_ns = batch_window_us * 1000
        self._busy = False        # wait(): two commit wake-ups came within the window
        self._commit_woke_ns = 0  # wait(): the last wake-up by a commit
        self._window_ns = 0       # wait(): when the current window started
        self._taken = 0           # records polled since the last wait()
        self.start = start
        self.retry_s = retry_s
        self.sweep_s = sweep_s
        self._next_sweep = 0.0
        # pending(): the attached rings' word addresses, rebuilt when the keys asked about
        # change, a reader is attached or one shows a discontinuity (``_version``): a reader
        # that re-opened its segment (new addresses) always counts one
        self._version = 0
        self._built: tuple[int, int, int] = (0, 0, -1)
        self._attached: list[tuple[str, str]] = []
        self._tails = self._nexts = self._hits = np.zeros(0, np.int64)
        self._addrs = (0, 0, 0)
        self.readers: dict[tuple[str, str], Any] = {}
        self._generations: dict[tuple[str, str], int] = {}
        self._retry_at: dict[tuple[str, str], float] = {}
        self.discontinuities = 0

    def reader(self, owner: str, stream: str) -> Any:
        """The reader of that ring, or None while it does not exist."""
        key = (owner, stream)
        reader = self.readers.get(key)
        if reader is None:
            now = time.monotonic()
            if now < self._retry_at.get(key, 0.0):
                return None
            try:
                reader = shm.Reader.attach(owner, stream, self.instance, start=self.start)
            except (FileNotFoundError, shm.ShmError):
                self._retry_at[key] = now + self.retry_s
                return None
            self.readers[key] = reader
            self._generations[key] = reader.stats.discontinuities
            self._version += 1   # pending() includes it from now on
        return reader

    def pending(self, keys: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """The ``(owner, stream)`` of ``keys`` with records to read now, in ``keys`` order;
        all of ``keys`` every ``sweep_s`` (see the module docstring)."""
        now = time.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + self.sweep_s
            return keys
        if self._built != (id(keys), len(keys), self._version):
            self._rebuild(keys)
        tails, nexts, hits = self._addrs
        n = _PENDING(tails, nexts, len(self._attached), hits)
        if not n:
            return []
        attached = self._attached
        return [attached[i] for i in self._hits[:n].tolist()]

    def _rebuild(self, keys: list[tuple[str, str]]) -> None:
        self._built = (id(keys), len(keys), self._version)
        self._attached = [k for k in keys if k in self.readers]
        words = [self.readers[k].words for k in self._attached]
        size = max(1, len(words))   # never an empty array: its address would be a dummy
        self._tails, self._nexts, self._hits = (np.zeros(size, np.int64) for _ in range(3))
        for i, (tail, nxt) in enumerate(words):
            self._tails[i], self._nexts[i] = tail, nxt
        self._addrs = (address_of(self._tails), address_of(self._nexts),
                       address_of(self._hits))

    def poll(self, owner: str, stream: str, wait_s: float = 0.0) -> tuple[np.ndarray | None, bool]:
        """New records of one ring (None if it does not exist or its writer is gone) and
        whether a discontinuity came before them. ``wait_s > 0`` parks on the ring."""
        reader = self.reader(owner, stream)
        if reader is None:
            return None, False
        try:
            batch = reader.poll(timeout_s=wait_s)
        except shm.WriterGone:   # the writer stopped: keep waiting for its successor
            if wait_s > 0:
                time.sleep(wait_s)   # instead of a park that returns at once
            return None, False
        if batch is not None:
            self._taken += len(batch)
        key = (owner, stream)
        seen = reader.stats.discontinuities
        if seen != self._generations[key]:
            self._generations[key] = seen
            self.discontinuities += 1
            self._version += 1   # maybe a new mapping: pending() must not read the old one
            return batch, True
        return batch, False

    def wait(self, timeout_s: float) -> bool:
        """Park until any followed ring commits (one ``futex_waitv``, see ``shm.wait_any``), at
        most ``timeout_s``; True if something may be new. Rings not attached yet are found
        by the next poll after their retry delay.

        With a batch window: once two commits woke it closer together than
        ``batch_window_us`` and records keep coming, sleep out the rest of the window instead
        of parking, so that frequent commits share one timed wake-up (each wake-up ≈ 30 CPU-µs
        on a VM; the price is up to a window of latency). A window that gathered nothing
        ends it: the next park is a plain one, and only two commit wake-ups closer than the
        window start it again, so traffic slower than the window is never delayed (at most
        one timed wake-up follows an isolated close pair). ``timeout_s`` caps a window's
        sleep (the detectors' config keeps the window ≤ ``idle_wait_us``)."""
        window = self.batch_window_ns
        if window and self._busy and self._taken:
            self._taken = 0
            rest = self._window_ns + window - time.perf_counter_ns()
            if rest > 0:
                time.sleep(min(rest / 1e9, timeout_s))
            self._window_ns = time.perf_counter_ns()   # the next window starts here
            return True
        woke = shm.wait_any(list(self.readers.values()), timeout_s)
        if window:
            # measured between commit wake-ups only: a timed one says nothing about the rate
            now = time.perf_counter_ns()
            self._busy = woke and now - self._commit_woke_ns < window
            if woke:
                self._commit_woke_ns = now
            self._window_ns, self._taken = now, 0
        return woke

    def totals(self) -> tuple[int, int]:
        """``(lost, lag)`` over every reader: records overwritten before they were read (laps),
        and records committed but not yet read (as of each ring's last poll)."""
        lost = lag = 0
        for reader in self.readers.values():
            st = reader.stats
            lost += st.lost
            lag += st.lag
        return lost, lag

    def close(self) -> None:
        """Close every reader."""
        for reader in self.readers.values():
            reader.close()
        self.readers.clear()
