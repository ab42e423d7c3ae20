"""Cumulative volume delta: rolling 1 m / 5 m / 15 m windows, session total and trade count.

Signed volume is the trade's quantity with the aggressor's sign (buy +, sell −). Windows are
aligned to whole seconds of **exchange** time: once the newest trade of a symbol is in second
``h``, the window of ``W`` seconds sums the trades of seconds ``h − W + 1 .. h``. A trade
that arrives late (its second before ``h``) still counts in every window that covers its
second; one older than a window never enters it. Time never runs backwards for a window, so
the result does not depend on how the records were batched: an incremental run and a run over
the whole recording produce the same state (tested).

State lives in preallocated arrays indexed by symbol id (:class:`CvdState`); the kernel
:func:`cvd_update` takes a batch of ``shm.TRADE`` records and is called once per batch. The
windows are kept as running sums over one-second buckets (``HISTORY_S`` of them per symbol):
each record costs O(1), and moving the head by ``k`` seconds costs O(min(k, HISTORY_S)).
Running sums of floats may leave a residue of ~1e-12 where the exact value is 0.
"""

from __future__ import annotations

from typing import Any

import numba as nb
import numpy as np

from .checks import usable_trade

__all__ = ["HISTORY_S", "WINDOWS_S", "CvdState", "cvd_update"]

WINDOWS_S = (60, 300, 900)
HISTORY_S = 900            # the longest window: buckets kept per symbol
_NS = 1_000_000_000
_W = np.array(WINDOWS_S, np.int64)


class CvdState:
    """CVD state of ``symbols`` symbol ids (arrays the kernel updates in place)."""

    def __init__(self, symbols: int) -> None:
        if symbols < 1:
            raise ValueError(f"CvdState: symbols must be ≥ 1, got {symbols}")
        self.buckets = np.zeros((symbols, HISTORY_S))   # signed volume per exchange second
        self.head_s = np.full(symbols, -1, np.int64)    # newest second seen (-1: none yet)
        self.windows = np.zeros((symbols, len(WINDOWS_S)))  # cvd_1m, cvd_5m, cvd_15m
        self.session = np.zeros(symbols)                # since start or the last reset
        self.trades = np.zeros(symbols, np.int64)       # trades counted
        self.skipped = np.zeros(1, np.int64)            # records refused (bad symbol, qty, side)

    def kernel_args(self) -> tuple[Any, ...]:
        """The arguments of :func:`cvd_update` after the records."""
        return (self.buckets, self.head_s, self.windows, self.session, self.trades,
                self.skipped, _W)

    def update(self, trades: np.ndarray) -> None:
        """Add a batch of ``shm.TRADE`` records (in ring order)."""
        cvd_update(trades, *self.kernel_args())

    def reset(self, symbol_id: int) -> None:
        """Forget one symbol (a ring discontinuity: its records may be missing)."""
        self.buckets[symbol_id] = 0.0
        self.head_s[symbol_id] = -1
        self.windows[symbol_id] = 0.0
        self.session[symbol_id] = 0.0
        self.trades[symbol_id] = 0


@nb.njit(cache=True)
def _advance(buckets, windows, s, head, new_head, w_s):  # pragma: no cover - njit
    """Move symbol ``s``'s head second from ``head`` to ``new_head`` (> head)."""
    if new_head - head >= buckets.shape[1]:  # every bucket leaves every window
        buckets[s, :] = 0.0
        windows[s, :] = 0.0
        return
    for n in range(head + 1, new_head + 1):
        for w in range(len(w_s)):  # second n - W leaves the W-second window
            windows[s, w] -= buckets[s, (n - w_s[w]) % buckets.shape[1]]
        buckets[s, n % buckets.shape[1]] = 0.0  # it held second n - HISTORY_S: reuse it


@nb.njit(cache=True)
def cvd_update(trades, buckets, head_s, windows, session, count, skipped,
               w_s):  # pragma: no cover - njit
    """Apply a batch of trade records to the CVD state arrays (see :class:`CvdState`)."""
    history = buckets.shape[1]
    for i in range(len(trades)):
        t = trades[i]
        if not usable_trade(t, len(head_s)):
            skipped[0] += 1
            continue
        s = t.symbol_id
        qty = t.qty
        signed = qty if t.side == 1 else -qty
        session[s] += signed
        count[s] += 1
        sec = t.ts_exchange_ns // _NS
        head = head_s[s]
        if head < 0:
            head_s[s] = head = sec
        elif sec > head:
            _advance(buckets, windows, s, head, sec, w_s)
            head_s[s] = head = sec
        age = head - sec
        if age >= history:
            continue  # older than every window: session only
        buckets[s, sec % history] += signed
        for w in range(len(w_s)):
            if age < w_s[w]:
                windows[s, w] += signed
