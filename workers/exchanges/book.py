"""Order books in preallocated numpy arrays, updated by ``@njit`` kernels.

Each side is a pair of float64 arrays (price, quantity) kept sorted **worst first** (bids
ascending, asks descending) plus a level count, so the best level is the last entry. Most updates
land near the touch, and an insert or delete shifts only the entries after it: storing best first
made every top-of-book change shift the whole side (thousands of levels; measured ~40 µs per
34-level Binance frame). No Python objects per level; quantity 0 deletes a level (the rule of all
three exchanges).

Prices are compared as the floats the decoder produced from the exchange's strings; the same
string always gives the same float, so equality is exact.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from shm import BookState
from shm.atomics import address_of

__all__ = ["Book", "BookOverflow", "apply_levels"]


class BookOverflow(RuntimeError):
    """A side would exceed its preallocated capacity; the symbol must resync."""


@nb.njit(cache=True, inline="always")
def _apply_one(prices: np.ndarray, qtys: np.ndarray, count: int, price: float, qty: float,
               ascending: bool) -> int:  # pragma: no cover - njit
    """Apply one level to a side stored worst first; the new count, or -1 if it is full."""
    lo, hi = 0, count  # first index whose price is not below `price` in storage order
    while lo < hi:
        mid = (lo + hi) >> 1
        if (prices[mid] < price) if ascending else (prices[mid] > price):
            lo = mid + 1
        else:
            hi = mid
    found = lo < count and prices[lo] == price
    # shifts move in place (forward to delete, backward to insert): no allocation
    if qty == 0.0:
        if found:
            for j in range(lo, count - 1):
                prices[j] = prices[j + 1]
                qtys[j] = qtys[j + 1]
            count -= 1
    elif found:
        qtys[lo] = qty
    else:
        if count == len(prices):
            return -1
        for j in range(count, lo, -1):
            prices[j] = prices[j - 1]
            qtys[j] = qtys[j - 1]
        prices[lo] = price
        qtys[lo] = qty
        count += 1
    return count


@nb.njit(cache=True)
def apply_levels(prices: np.ndarray, qtys: np.ndarray, count: int, new_px: np.ndarray,
                 new_qty: np.ndarray, ascending: bool) -> int:
    """Apply ``(new_px[i], new_qty[i])`` in order to one side stored worst first (bids
    ``ascending``, asks not); returns the new level count, or -1 if the side is full (nothing
    after the failing level is applied)."""
    for k in range(len(new_px)):
        count = _apply_one(prices, qtys, count, new_px[k], new_qty[k], ascending)
        if count < 0:
            return -1
    return count


class Book:
    """One symbol's L2 book: sorted sides, trust state and epoch (+1 on every resync)."""

    def __init__(self, capacity: int = 8192) -> None:
        self._use(np.zeros((4, capacity)))
        self.n_bids = self.n_asks = 0
        self.state = BookState.SYNCING
        self.epoch = 0
        self.update_id = -1   # exchange id of the last published state (set by the emitter)

    def _use(self, sides: np.ndarray) -> None:
        """Keep the four sides as rows of one C-contiguous ``(4, capacity)`` float64 array:
        njit callers get them all from :attr:`address` and :attr:`capacity`."""
        assert sides.shape[0] == 4 and sides.dtype == np.float64 and sides.flags.c_contiguous
        self._sides = sides
        self.bid_px, self.bid_qty, self.ask_px, self.ask_qty = sides
        self.capacity = sides.shape[1]
        self.address = address_of(sides)

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
        return (self.n_bids > 0 and self.n_asks > 0
                and self.bid_px[self.n_bids - 1] >= self.ask_px[self.n_asks - 1])

    def top(self) -> tuple[float, float, float, float]:
        """Best bid price, its quantity, best ask price, its quantity (NaN for an empty side)."""
        nan, b, a = float("nan"), self.n_bids - 1, self.n_asks - 1
        return (self.bid_px[b] if b >= 0 else nan, self.bid_qty[b] if b >= 0 else nan,
                self.ask_px[a] if a >= 0 else nan, self.ask_qty[a] if a >= 0 else nan)

    def levels(self, depth: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Views of the best ``depth`` levels per side (bids, asks), best first."""
        nb_, na = self.n_bids, self.n_asks
        b, a = max(0, nb_ - depth), max(0, na - depth)
        return (self.bid_px[b:nb_][::-1], self.bid_qty[b:nb_][::-1],
                self.ask_px[a:na][::-1], self.ask_qty[a:na][::-1])
