"""Rolling 24 h statistics per symbol: volume, quote volume, high, low, last, open, change.

The window is 1440 one-minute buckets of exchange time: once the newest trade of a symbol is in
minute ``h``, it covers minutes ``h − 1439 .. h``. Each trade updates its minute's bucket in
O(1) (a late trade still counts if its minute is covered; one older is ignored and counted in
``late``); a refresh recomputes the statistics of every symbol touched since the last one from
its buckets (O(1440) per symbol: per batch with :meth:`Stats24hState.update`, per publication
in the detector runner). ``open`` is the
first trade of the oldest non-empty minute in the window; ``last`` the trade with the newest
exchange time (a late trade does not replace it); ``change = last − open``, ``change_pct``
in percent. Because the statistics are a function of the buckets alone, any batching of the
same records gives the same result.
"""

from __future__ import annotations

from typing import Any

import numba as nb
import numpy as np

from .checks import usable_trade

__all__ = ["MINUTES", "Stats24hState", "stats24h_add", "stats24h_refresh"]

MINUTES = 1440
_MIN_NS = 60_000_000_000
# bucket columns (float64): volume, quote volume, high, low, price of the minute's first trade
B_VOL, B_QUOTE, B_HIGH, B_LOW, B_FIRST = range(5)
# output columns
S_VOLUME, S_QUOTE, S_HIGH, S_LOW, S_LAST, S_OPEN, S_CHANGE, S_CHANGE_PCT = range(8)


class Stats24hState:
    """Minute buckets and the derived 24 h statistics of ``symbols`` symbol ids."""

    def __init__(self, symbols: int) -> None:
        if symbols < 1:
            raise ValueError(f"Stats24hState: symbols must be ≥ 1, got {symbols}")
        self.buckets = np.zeros((symbols, MINUTES, 5))
        self.first_ns = np.zeros((symbols, MINUTES), np.int64)  # time of each bucket's first
        self.minute = np.full((symbols, MINUTES), -1, np.int64)  # minute a bucket holds
        self.head = np.full(symbols, -1, np.int64)               # newest minute (-1: none)
        self.last_ns = np.full(symbols, -1, np.int64)            # newest trade's time
        self.stats = np.full((symbols, 8), np.nan)               # S_VOLUME .. S_CHANGE_PCT
        self.late = np.zeros(symbols, np.int64)
        self.skipped = np.zeros(1, np.int64)
        self._touched = np.zeros(symbols, np.int8)

    def update(self, trades: np.ndarray) -> None:
        """Apply one batch of trade records and refresh the touched symbols' statistics."""
        self.add(trades)
        self.refresh()

    def add(self, trades: np.ndarray) -> None:
        """Apply one batch of trade records to the buckets only (O(1) a record); the
        statistics follow on :meth:`refresh` (O(1440) per touched symbol): the detector runner
        refreshes when it publishes, not on every batch."""
        stats24h_add(trades, *self.kernel_args())

    def kernel_args(self) -> tuple[Any, ...]:
        """The arguments of :func:`stats24h_add` after the records."""
        return (self.buckets, self.first_ns, self.minute, self.head, self.last_ns, self.stats,
                self.late, self.skipped, self._touched)

    def refresh(self) -> None:
        """Recompute the statistics of the symbols touched since the last refresh."""
        stats24h_refresh(self.buckets, self.minute, self.head, self.stats, self._touched)

    def reset(self, symbol_id: int) -> None:
        """Forget a symbol (a ring discontinuity)."""
        self.minute[symbol_id] = -1
        self.head[symbol_id] = -1
        self.last_ns[symbol_id] = -1
        self.stats[symbol_id] = np.nan


@nb.njit(cache=True)
def stats24h_add(trades, buckets, first_ns, minute, head, last_ns, stats, late, skipped,
                 touched):  # pragma: no cover - njit
    """Apply a batch of trades to the minute buckets (see the module docstring)."""
    for i in range(len(trades)):
        t = trades[i]
        if not usable_trade(t, len(head)) or t.ts_exchange_ns < 0:
            skipped[0] += 1
            continue
        s = t.symbol_id
        ts = t.ts_exchange_ns
        m = ts // _MIN_NS
        if m > head[s]:
            head[s] = m
        if m <= head[s] - MINUTES:
            late[s] += 1
            continue
        k = m % MINUTES
        b = buckets[s, k]
        px, qty = t.price, t.qty
        if minute[s, k] != m:  # a new minute (or one that left the window): start it
            minute[s, k] = m
            b[B_VOL] = b[B_QUOTE] = 0.0
            b[B_HIGH] = b[B_LOW] = b[B_FIRST] = px
            first_ns[s, k] = ts
        elif ts < first_ns[s, k]:
            b[B_FIRST] = px
            first_ns[s, k] = ts
        b[B_VOL] += qty
        b[B_QUOTE] += px * qty
        b[B_HIGH] = max(b[B_HIGH], px)
        b[B_LOW] = min(b[B_LOW], px)
        if ts >= last_ns[s]:
            last_ns[s] = ts
            stats[s, S_LAST] = px
        touched[s] = 1


@nb.njit(cache=True)
def stats24h_refresh(buckets, minute, head, stats, touched):  # pragma: no cover - njit
    """Recompute the statistics of each touched symbol from its buckets."""
    for s in range(len(head)):
        if not touched[s]:
            continue
        touched[s] = 0
        vol = quote = 0.0
        high, low = -np.inf, np.inf
        oldest = head[s] + 1
        open_px = np.nan
        for k in range(MINUTES):
            m = minute[s, k]
            if m < 0 or m <= head[s] - MINUTES:
                continue  # empty, or a minute that left the window
            b = buckets[s, k]
            vol += b[B_VOL]
            quote += b[B_QUOTE]
            high = max(high, b[B_HIGH])
            low = min(low, b[B_LOW])
            if m < oldest:
                oldest = m
                open_px = b[B_FIRST]
        stats[s, S_VOLUME] = vol
        stats[s, S_QUOTE] = quote
        stats[s, S_HIGH] = high
        stats[s, S_LOW] = low
        stats[s, S_OPEN] = open_px
        stats[s, S_CHANGE] = stats[s, S_LAST] - open_px
        stats[s, S_CHANGE_PCT] = 100.0 * (stats[s, S_LAST] - open_px) / open_px
