"""The rings a downstream process (detectors, publisher) follows, attached as they appear.

A feed worker may start after its readers, restart, or stop: :class:`RingSet` looks for a ring
that does not exist yet at most every ``retry_s`` (a failed open costs a syscall and an
exception, more than a whole idle step), reports a writer restart (a new generation: records
may be missing) as a discontinuity, and treats a writer that closed as "nothing new" until its
successor appears.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

import shm

__all__ = ["ATTACH_RETRY_S", "RingSet"]

ATTACH_RETRY_S = 0.5


class RingSet:
    """Readers of ``instance``'s rings by ``(owner, stream)`` (owner: an exchange name, or
    ``"detectors"``); ``start`` as for ``shm.Reader.attach``."""

    def __init__(self, instance: str, start: str = "latest",
                 retry_s: float = ATTACH_RETRY_S) -> None:
        self.instance = instance
        self.start = start
        self.retry_s = retry_s
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
        return reader

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
        key = (owner, stream)
        seen = reader.stats.discontinuities
        if seen != self._generations[key]:
            self._generations[key] = seen
            self.discontinuities += 1
            return batch, True
        return batch, False

    def wait(self, timeout_s: float) -> bool:
        """Park until any followed ring commits (one ``futex_waitv``, see ``shm.wait_any``), at
        most ``timeout_s``; True if something may be new. Rings not attached yet are found
        by the next poll after their retry delay."""
        return shm.wait_any(list(self.readers.values()), timeout_s)

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
