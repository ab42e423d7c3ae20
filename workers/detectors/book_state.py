"""Book-state alerts from the book ring: a book leaving or regaining LIVE, a crossed book.

The feed workers publish every state change of a book as a book record (RESYNCING with an
empty book and ``epoch + 1``, STALE when its channel falls silent, LIVE again after a good
message). This kernel turns changes into events: leaving LIVE is CRITICAL (consumers must stop
trusting the book: state, previous state, epoch, update id), regaining LIVE is HIGH. A LIVE
record whose best bid is at or above its best ask (never valid; the workers resync on it, so
this guards consumers against a bug) is a CRITICAL ``BOOK_CROSSED``.

The first record of a symbol only sets its state (no event); after a ring discontinuity the
runner calls :meth:`BookStateMonitor.reset` and emits its own alert.
"""

from __future__ import annotations

from typing import Any

import numba as nb
import numpy as np

from shm.layout import BookState, Priority

from .events import EventBuffer, EventKind, emit

__all__ = ["BookStateMonitor", "book_state_update"]

_LIVE = int(BookState.LIVE)
_STATE = int(EventKind.BOOK_STATE)
_CROSSED = int(EventKind.BOOK_CROSSED)
_CRITICAL = int(Priority.CRITICAL)
_HIGH = int(Priority.HIGH)


class BookStateMonitor:
    """Last seen book state per symbol id (-1: none yet)."""

    def __init__(self, symbols: int) -> None:
        if symbols < 1:
            raise ValueError(f"BookStateMonitor: symbols must be ≥ 1, got {symbols}")
        self.state = np.full(symbols, -1, np.int64)
        self.skipped = np.zeros(1, np.int64)

    def update(self, books: np.ndarray, events: EventBuffer, ts_detect_ns: int) -> None:
        """Run one batch of book records; alerts go to ``events``."""
        book_state_update(books, *(*self.kernel_args(events), ts_detect_ns))

    def kernel_args(self, events: EventBuffer) -> tuple[Any, ...]:
        """The arguments of :func:`book_state_update` between the records and the time."""
        return (self.state, self.skipped, events.records, events.state)

    def reset(self, symbol_id: int) -> None:
        """Forget a symbol's state (a ring discontinuity)."""
        self.state[symbol_id] = -1


@nb.njit(cache=True)
def book_state_update(books, last, skipped, out, out_state,
                      ts_detect_ns):  # pragma: no cover - njit
    """Apply a batch of book records (see the module docstring)."""
    for i in range(len(books)):
        b = books[i]
        s = b.symbol_id
        if s >= len(last):
            skipped[0] += 1
            continue
        state = np.int64(b.state)
        prev = last[s]
        if prev != state and prev >= 0 and (prev == _LIVE or state == _LIVE):
            emit(out, out_state, b, _STATE, _HIGH if state == _LIVE else _CRITICAL, 0,
                 ts_detect_ns, float(state), float(prev), float(b.epoch), float(b.update_id),
                 float(b.n_bids), float(b.n_asks), 0.0, 0.0)
        last[s] = state
        if state == _LIVE and b.n_bids > 0 and b.n_asks > 0 and b.bid_px[0] >= b.ask_px[0]:
            emit(out, out_state, b, _CROSSED, _CRITICAL, 0, ts_detect_ns, b.bid_px[0],
                 b.ask_px[0], float(b.epoch), float(b.update_id), 0.0, 0.0, 0.0, 0.0)
