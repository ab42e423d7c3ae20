"""Order-book heatmap and walls from LIVE top-N book records.

Prices are binned into **zones** on a fixed grid per symbol: ``zone_bps`` basis points of the
symbol's first LIVE mid price (fixed thereafter, so a zone is a price range that does not move
with the market). For every LIVE book record the kernel sums the resting quantity per zone on
each side into ``heat[s, side, k]``, ``k`` counting zones outward from the mid's zone
(``k = 0`` holds the touch), ``zones`` of them per side: liquidity by distance from mid.

The **wall** of a side is its zone holding the most quantity. A wall keeps its ``since``
(exchange time it became that side's wall) while the same zone stays the largest; another zone
taking over restarts it, so ``now − since`` says how long it has stood. Walls report the
zone's quantity, its notional and its quantity-weighted price. Records not LIVE are ignored.
"""

from __future__ import annotations

import math
from typing import Any

import numba as nb
import numpy as np

from shm.layout import BookState

__all__ = ["HeatmapState", "heatmap_update"]

_LIVE = int(BookState.LIVE)
# wall columns (float64): zone index, quantity, notional, weighted price
W_ZONE, W_QTY, W_USD, W_PRICE = range(4)


class HeatmapState:
    """Heatmaps and walls of ``symbols`` symbol ids (``zones`` per side of ``zone_bps``)."""

    def __init__(self, symbols: int, zones: int = 20, zone_bps: float = 5.0) -> None:
        if symbols < 1 or zones < 1:
            raise ValueError(f"HeatmapState: symbols and zones must be ≥ 1, got {symbols}, "
                             f"{zones}")
        if not zone_bps > 0:
            raise ValueError(f"HeatmapState: zone_bps must be > 0, got {zone_bps}")
        self.zone_frac = zone_bps / 1e4
        self.width = np.zeros(symbols)                    # zone width in price (0: not set)
        self.heat = np.zeros((symbols, 2, zones))         # side 0 bids, 1 asks
        self.walls = np.full((symbols, 2, 4), np.nan)     # W_ZONE .. W_PRICE
        self.since_ns = np.zeros((symbols, 2), np.int64)
        self.ts_ns = np.zeros(symbols, np.int64)          # the record the values come from
        self.counters = np.zeros(2, np.int64)             # not LIVE, unknown symbol
        self._zone_qty = np.zeros(256)                    # scratch: quantity per level zone
        self._zone_usd = np.zeros(256)
        self._zone_id = np.zeros(256, np.int64)

    def update(self, books: np.ndarray) -> None:
        """Apply one batch of book records."""
        heatmap_update(books, *self.kernel_args())

    def kernel_args(self) -> tuple[Any, ...]:
        """The arguments of :func:`heatmap_update` after the records."""
        return (self.zone_frac, self.width, self.heat, self.walls, self.since_ns, self.ts_ns,
                self.counters, self._zone_qty, self._zone_usd, self._zone_id)

    def reset(self, symbol_id: int) -> None:
        """Forget a symbol's heatmap and walls (its zone grid is kept)."""
        self.heat[symbol_id] = 0.0
        self.walls[symbol_id] = np.nan


@nb.njit(cache=True)
def _side(b, side, s, mid, width, heat, walls, since_ns, zq, zu, zid):  # pragma: no cover
    n = b.n_bids if side == 0 else b.n_asks
    zones = heat.shape[2]
    mid_zone = math.floor(mid / width)
    m = 0  # distinct zones of this record's levels (levels are sorted: zones are contiguous)
    for i in range(n):
        p = b.bid_px[i] if side == 0 else b.ask_px[i]
        q = b.bid_qty[i] if side == 0 else b.ask_qty[i]
        z = math.floor(p / width)
        k = (mid_zone - z) if side == 0 else (z - mid_zone)
        if 0 <= k < zones:
            heat[s, side, k] += q
        if m == 0 or zid[m - 1] != z:
            zid[m] = z
            zq[m] = 0.0
            zu[m] = 0.0
            m += 1
        zq[m - 1] += q
        zu[m - 1] += p * q
    best = -1
    for j in range(m):
        if best < 0 or zq[j] > zq[best]:
            best = j
    w = walls[s, side]
    if best < 0:
        w[:] = np.nan
        return
    if w[W_ZONE] != zid[best]:
        since_ns[s, side] = b.ts_exchange_ns
    w[W_ZONE] = zid[best]
    w[W_QTY] = zq[best]
    w[W_USD] = zu[best]
    w[W_PRICE] = zu[best] / zq[best] if zq[best] > 0 else np.nan


@nb.njit(cache=True)
def heatmap_update(books, zone_frac, width, heat, walls, since_ns, ts_ns, counters, zq, zu,
                   zid):  # pragma: no cover - njit
    """Apply a batch of book records (see the module docstring)."""
    for i in range(len(books)):
        b = books[i]
        s = b.symbol_id
        if s >= len(width):
            counters[1] += 1
            continue
        if b.state != _LIVE or b.n_bids == 0 or b.n_asks == 0:
            counters[0] += 1
            continue
        mid = 0.5 * (b.bid_px[0] + b.ask_px[0])
        if not mid > 0.0:
            counters[0] += 1
            continue
        if width[s] == 0.0:
            width[s] = mid * zone_frac  # the grid is fixed from the first LIVE mid
        heat[s, :, :] = 0.0
        for side in range(2):
            _side(b, side, s, mid, width[s], heat, walls, since_ns, zq, zu, zid)
        ts_ns[s] = b.ts_exchange_ns
