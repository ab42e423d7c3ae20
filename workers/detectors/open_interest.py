"""Open-interest deltas over windows, in base-asset units, from the open_interest ring.

The feed workers already normalize open interest to base units (OKX contracts × ``ctVal``,
Binance's poll, Bybit's tickers). Per symbol this keeps the samples of the longest window in a
ring; for each window ``W`` the delta is ``latest − reference``, the reference being the newest
sample at or before ``latest time − W`` (the oldest kept sample while history is shorter: the
delta then covers less than ``W``, and ``span`` says how much). Samples are taken in exchange
time; one older than the newest of its symbol is ignored (counted in ``late``). Percent
deltas are relative to the reference.

State: :class:`OpenInterestState` (values per symbol and window), recomputed per sample.
"""

from __future__ import annotations

from typing import Any

import numba as nb
import numpy as np

__all__ = ["WINDOWS_S", "OpenInterestState", "open_interest_update"]

WINDOWS_S = (300, 900, 3600, 14400)
# per-window output columns
D_DELTA, D_PCT, D_SPAN_S = range(3)


class OpenInterestState:
    """Samples and deltas of ``symbols`` symbol ids (``capacity`` samples each)."""

    def __init__(self, symbols: int, capacity: int = 8192,
                 windows_s: tuple[int, ...] = WINDOWS_S) -> None:
        if symbols < 1 or capacity < 2:
            raise ValueError(f"OpenInterestState: symbols ≥ 1 and capacity ≥ 2 required, got "
                             f"{symbols}, {capacity}")
        if not windows_s or min(windows_s) <= 0:
            raise ValueError(f"OpenInterestState: windows must be > 0 s, got {windows_s}")
        self.windows_ns = np.array(windows_s, np.int64) * 1_000_000_000
        self.ts = np.zeros((symbols, capacity), np.int64)
        self.oi = np.zeros((symbols, capacity))
        self.ring = np.zeros((symbols, 2), np.int64)          # head (oldest), size
        self.latest = np.full(symbols, np.nan)
        self.deltas = np.full((symbols, len(windows_s), 3), np.nan)
        self.late = np.zeros(symbols, np.int64)
        self.skipped = np.zeros(1, np.int64)

    def update(self, records: np.ndarray) -> None:
        """Apply one batch of open-interest records."""
        open_interest_update(records, *self.kernel_args())

    def kernel_args(self) -> tuple[Any, ...]:
        """The arguments of :func:`open_interest_update` after the records."""
        return (self.windows_ns, self.ts, self.oi, self.ring, self.latest, self.deltas,
                self.late, self.skipped)

    def reset(self, symbol_id: int) -> None:
        """Forget a symbol's samples (a ring discontinuity)."""
        self.ring[symbol_id] = 0
        self.latest[symbol_id] = np.nan
        self.deltas[symbol_id] = np.nan


@nb.njit(cache=True)
def open_interest_update(recs, windows_ns, ts, oi, ring, latest, deltas, late,
                         skipped):  # pragma: no cover - njit
    """Apply a batch of open-interest records (see the module docstring)."""
    cap = ts.shape[1]
    longest = windows_ns.max()
    for i in range(len(recs)):
        r = recs[i]
        s = r.symbol_id
        value = r.open_interest
        if s >= len(latest) or not (value >= 0.0 and value < np.inf):
            skipped[0] += 1
            continue
        head, size = ring[s, 0], ring[s, 1]
        now = r.ts_exchange_ns
        if size > 0 and now < ts[s, (head + size - 1) % cap]:
            late[s] += 1
            continue
        # keep one sample at or before now - longest: the reference of the longest window
        while size >= 2 and ts[s, (head + 1) % cap] <= now - longest:
            head = (head + 1) % cap
            size -= 1
        if size == cap:  # full: the oldest goes (the longest window then spans less)
            head = (head + 1) % cap
            size -= 1
        j = (head + size) % cap
        ts[s, j] = now
        oi[s, j] = value
        size += 1
        ring[s, 0], ring[s, 1] = head, size
        latest[s] = value
        for w in range(len(windows_ns)):
            # newest sample at or before now - W; the oldest kept one if none is that old
            lo, hi = 0, size - 1  # binary search over the ring's logical positions
            target = now - windows_ns[w]
            ref = 0
            while lo <= hi:
                mid = (lo + hi) >> 1
                if ts[s, (head + mid) % cap] <= target:
                    ref = mid
                    lo = mid + 1
                else:
                    hi = mid - 1
            k = (head + ref) % cap
            base = oi[s, k]
            deltas[s, w, D_DELTA] = value - base
            deltas[s, w, D_PCT] = 100.0 * (value - base) / base if base > 0.0 else np.nan
            deltas[s, w, D_SPAN_S] = (now - ts[s, k]) / 1e9
