"""Bounded priority queues with conflation, shedding and a count of every drop.

Four classes, CRITICAL first (``shm.Priority``). Each is a FIFO with a capacity:

* CRITICAL is never conflated. When even its buffer is full the oldest message is dropped
  and counted as ``overflow``.
* HIGH (trades, BBO, detections) is never conflated either; full → oldest dropped,
  ``overflow``.
* MEDIUM and LOW (analytics, book snapshots: values where only the newest matters) are
  *conflated under pressure*: once a queue holds ``conflate_fraction`` of its capacity, a new
  message whose key (``exchange:symbol:event_type``) is already queued replaces that one's
  payload in place (``conflated``); when the queue is full, the oldest is shed (``shed``).

Every drop is counted in ``drops[priority, reason]`` (reasons: :data:`DROP_REASONS`).
"""

from __future__ import annotations

from collections import deque

import numpy as np

from shm.layout import Priority

__all__ = ["DROP_REASONS", "Drop", "Message", "PriorityQueues"]

CLASSES = len(Priority)
_MEDIUM = int(Priority.MEDIUM)   # a plain int: comparing with an IntEnum member costs more


class Drop:
    """Indices of :data:`DROP_REASONS`."""

    CONFLATED = 0          # replaced in the queue by a newer message of the same key
    SHED = 1               # MEDIUM/LOW queue full: the oldest made room
    OVERFLOW = 2           # CRITICAL/HIGH queue full: the oldest made room
    BREAKER_OPEN = 3       # not CRITICAL while the breaker was open
    RETRIES_EXHAUSTED = 4  # Redis answered with an error every time it was sent


DROP_REASONS = ("conflated", "shed", "overflow", "breaker_open", "retries_exhausted")


class Message:
    """One write for Redis: ``data`` holds ``replies`` complete RESP commands (PUBLISH and
    maybe SET/XADD) of ``count`` records; the stamps are the bus's clock (ns).

    A MEDIUM/LOW message is one record of one ``key`` (conflation replaces it whole). A
    CRITICAL/HIGH message may carry a run of up to 64 records of one ring batch (any keys):
    one queue entry, one write and one confirmation instead of 64; ``commit_ns`` is then its
    oldest record's, so its latency is the run's worst."""

    __slots__ = ("attempts", "commit_ns", "count", "data", "due_ns", "enqueued_ns", "key",
                 "priority", "replies", "taken_ns")

    def __init__(self, key: str, data: bytes, replies: int, priority: int, commit_ns: int,
                 enqueued_ns: int, count: int = 1) -> None:
        self.key = key
        self.data = data
        self.replies = replies
        self.priority = priority
        self.commit_ns = commit_ns       # the (oldest) record's ring commit, for latency
        self.enqueued_ns = enqueued_ns
        self.taken_ns = enqueued_ns      # taken off the ring (a retry does not move it)
        self.count = count
        self.attempts = 0
        self.due_ns = 0                  # a retry waits until then


class PriorityQueues:
    """The four class queues; ``capacities`` in records per class (CRITICAL, HIGH, MEDIUM,
    LOW); drops are counted in records."""

    def __init__(self, capacities: tuple[int, int, int, int],
                 conflate_fraction: float = 0.5) -> None:
        if len(capacities) != CLASSES or min(capacities) < 1:
            raise ValueError(f"PriorityQueues: four capacities ≥ 1 needed, got {capacities}")
        if not 0 < conflate_fraction <= 1:
            raise ValueError(f"PriorityQueues: conflate_fraction must be in (0, 1], got "
                             f"{conflate_fraction}")
        self.capacities = capacities
        self.conflate_at = tuple(max(1, int(c * conflate_fraction)) for c in capacities)
        self.queues: tuple[deque[Message], ...] = tuple(deque() for _ in range(CLASSES))
        # MEDIUM/LOW: the queued message of each key (conflation finds it here)
        self._by_key: tuple[dict[str, Message], ...] = tuple({} for _ in range(CLASSES))
        self.drops = np.zeros((CLASSES, len(DROP_REASONS)), np.int64)
        self.enqueued = np.zeros(CLASSES, np.int64)
        self.sizes = [0] * CLASSES   # records queued per class

    def __len__(self) -> int:
        return sum(self.sizes)

    def depths(self) -> list[int]:
        """Records queued per class."""
        return list(self.sizes)

    def push(self, msg: Message) -> None:
        """Queue ``msg`` in its class (conflating or dropping as the module docstring says)."""
        p = msg.priority
        queue, sizes = self.queues[p], self.sizes
        self.enqueued[p] += msg.count
        if p >= _MEDIUM:
            by_key = self._by_key[p]
            if sizes[p] >= self.conflate_at[p]:
                queued = by_key.get(msg.key)
                if queued is not None:   # keep its place (and age), take the new payload
                    queued.data, queued.replies = msg.data, msg.replies
                    queued.commit_ns, queued.taken_ns = msg.commit_ns, msg.taken_ns
                    self.drops[p, Drop.CONFLATED] += 1
                    return
            while queue and sizes[p] + msg.count > self.capacities[p]:
                old = queue.popleft()
                self._forget(p, old)
                sizes[p] -= old.count
                self.drops[p, Drop.SHED] += old.count
            by_key[msg.key] = msg
        else:
            while queue and sizes[p] + msg.count > self.capacities[p]:
                old = queue.popleft()
                sizes[p] -= old.count
                self.drops[p, Drop.OVERFLOW] += old.count
        queue.append(msg)
        sizes[p] += msg.count

    def push_front(self, msg: Message) -> None:
        """Put back a message that was written but not confirmed (sent again first). Never
        dropped here: a re-send may exceed the capacity until the queue drains."""
        p = msg.priority
        if p >= _MEDIUM:
            queued = self._by_key[p].get(msg.key)
            if queued is not None:   # a newer value of the key is already waiting
                self.drops[p, Drop.CONFLATED] += 1
                return
            self._by_key[p][msg.key] = msg
        self.queues[p].appendleft(msg)
        self.sizes[p] += msg.count

    def pop(self, priority: int) -> Message | None:
        """The oldest message of class ``priority`` (None if empty)."""
        queue = self.queues[priority]
        if not queue:
            return None
        msg = queue.popleft()
        self.sizes[priority] -= msg.count
        if priority >= _MEDIUM:
            self._forget(priority, msg)
        return msg

    def peek(self, priority: int) -> Message | None:
        """The oldest message of class ``priority`` without taking it."""
        queue = self.queues[priority]
        return queue[0] if queue else None

    def drop_class(self, priority: int, reason: int) -> int:
        """Drop every message of one class, counted under ``reason``; returns the records."""
        n = self.sizes[priority]
        self.queues[priority].clear()
        self._by_key[priority].clear()
        self.sizes[priority] = 0
        self.drops[priority, reason] += n
        return n

    def oldest_enqueued_ns(self) -> int:
        """Enqueue time of the oldest message in any class (0 if all are empty)."""
        stamps = [q[0].enqueued_ns for q in self.queues if q]
        return min(stamps) if stamps else 0

    def _forget(self, priority: int, msg: Message) -> None:
        by_key = self._by_key[priority]
        if by_key.get(msg.key) is msg:
            del by_key[msg.key]
