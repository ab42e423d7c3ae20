"""Order books in preallocated numpy arrays, updated by ``@njit`` kernels.

Each side is a pair of float64 arrays (price, quantity) kept sorted best first — bids descending,
asks ascending — plus a level count. An update is a binary search and, when a level appears or
disappears, one shift of the tail: no Python objects per level, and the top N levels are simply
the first N entries. Quantity 0 deletes a level (the rule of all three exchanges).

Prices are compared as the floats the decoder produced from the exchange's strings; the same
string always gives the same float, so equality is exact.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from shm import BookState

__all__ = ["Book", "BookOverflow", "apply_levels"]


class BookOverflow(RuntimeError):
    """A side would exceed its preallocated capacity; the symbol must resync."""


@nb.njit(cache=True)
def apply_levels(prices: np.ndarray, qtys: np.ndarray, count: int, new_px: np.ndarray,
                 new_qty: np.ndarray, descending: bool) -> int:
    """Apply ``(new_px[i], new_qty[i])`` in order to one side; returns the new level count,
    or -1 if the side is full (nothing after the failing level is applied)."""
    capacity = len(prices)
    for k in range(len(new_px)):
        price, qty = new_px[k], new_qty[k]
        lo, hi = 0, count  # first index whose price is not better than `price`
        while lo < hi:
            mid = (lo + hi) >> 1
            better = prices[mid] > price if descending else prices[mid] < price
            if better:
                lo = mid + 1
            else:
                hi = mid
        found = lo < count and prices[lo] == price
        if qty == 0.0:
            if found:
                prices[lo:count - 1] = prices[lo + 1:count].copy()
                qtys[lo:count - 1] = qtys[lo + 1:count].copy()
                count -= 1
        elif found:
            qtys[lo] = qty
        else:
            if count == capacity:
                return -1
            prices[lo + 1:count + 1] = prices[lo:count].copy()
            qtys[lo + 1:count + 1] = qtys[lo:count].copy()
            prices[lo] = price
            qtys[lo] = qty
            count += 1
    return count


class Book:
    """One symbol's L2 book: sorted sides, trust state and epoch (+1 on every resync)."""

    def __init__(self, capacity: int = 8192) -> None:
        self.bid_px = np.zeros(capacity)
        self.bid_qty = np.zeros(capacity)
        self.ask_px = np.zeros(capacity)
        self.ask_qty = np.zeros(capacity)
        self.n_bids = self.n_asks = 0
        self.state = BookState.SYNCING
        self.epoch = 0

    def clear(self) -> None:
        """Empty both sides (a snapshot follows)."""
        self.n_bids = self.n_asks = 0

    def apply(self, bid_px: np.ndarray, bid_qty: np.ndarray, ask_px: np.ndarray,
              ask_qty: np.ndarray) -> None:
        """Apply one message's level changes; BookOverflow if a side is full."""
        n = apply_levels(self.bid_px, self.bid_qty, self.n_bids, bid_px, bid_qty, True)
        m = apply_levels(self.ask_px, self.ask_qty, self.n_asks, ask_px, ask_qty, False)
        if n < 0 or m < 0:
            raise BookOverflow(f"book side full ({len(self.bid_px)} levels)")
        self.n_bids, self.n_asks = n, m

    def crossed(self) -> bool:
        """True if the best bid is at or above the best ask (never valid: resync)."""
        return self.n_bids > 0 and self.n_asks > 0 and self.bid_px[0] >= self.ask_px[0]

    def top(self) -> tuple[float, float, float, float]:
        """Best bid price, its quantity, best ask price, its quantity (NaN for an empty side)."""
        nan = float("nan")
        return (self.bid_px[0] if self.n_bids else nan, self.bid_qty[0] if self.n_bids else nan,
                self.ask_px[0] if self.n_asks else nan, self.ask_qty[0] if self.n_asks else nan)

    def levels(self, depth: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Views of the best ``depth`` levels per side (bids, asks), best first."""
        b, a = min(depth, self.n_bids), min(depth, self.n_asks)
        return self.bid_px[:b], self.bid_qty[:b], self.ask_px[:a], self.ask_qty[:a]
