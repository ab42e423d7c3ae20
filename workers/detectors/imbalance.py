"""Order-book imbalance from the top-N book records, with depth weighting.

For a LIVE book record, over its best ``levels`` levels per side (fewer if the book has fewer)::

    imbalance = (Σ wᵢ·bidᵢ − Σ wᵢ·askᵢ) / (Σ wᵢ·bidᵢ + Σ wᵢ·askᵢ),   wᵢ = decay^i, i = 0 = best

in −1 .. 1 (+1: all resting size on the bid). ``decay = 1`` weighs every level alike; smaller
values favour the touch. A book with no size on either side gives NaN. Records whose state is not
LIVE are ignored (counted in ``not_live``): their levels may be wrong or empty.

The result is a continuous value per symbol (:class:`ImbalanceState` arrays: imbalance, mid,
spread, and the exchange time and ring seq of the record it came from), for the latest tables.
"""

from __future__ import annotations

from typing import Any

import numba as nb
import numpy as np

from shm.layout import BookState

__all__ = ["ImbalanceState", "imbalance_update"]

_LIVE = int(BookState.LIVE)
V_IMBALANCE, V_MID, V_SPREAD = range(3)


class ImbalanceState:
    """Latest imbalance of ``symbols`` symbol ids over ``levels`` levels, weights ``decay^i``."""

    def __init__(self, symbols: int, levels: int = 10, decay: float = 1.0) -> None:
        if symbols < 1:
            raise ValueError(f"ImbalanceState: symbols must be ≥ 1, got {symbols}")
        if levels < 1:
            raise ValueError(f"ImbalanceState: levels must be ≥ 1, got {levels}")
        if not 0.0 < decay <= 1.0:
            raise ValueError(f"ImbalanceState: decay must be in (0, 1], got {decay}")
        self.weights = decay ** np.arange(levels, dtype=np.float64)
        self.values = np.full((symbols, 3), np.nan)    # V_IMBALANCE, V_MID, V_SPREAD
        self.ts_exchange_ns = np.zeros(symbols, np.int64)
        self.seq = np.full(symbols, -1, np.int64)      # ring seq of the record (-1: none yet)
        self.not_live = np.zeros(1, np.int64)
        self.skipped = np.zeros(1, np.int64)           # unknown symbol ids

    def update(self, books: np.ndarray) -> None:
        """Apply one batch of book records (any top-N depth)."""
        imbalance_update(books, *self.kernel_args())

    def kernel_args(self) -> tuple[Any, ...]:
        """The arguments of :func:`imbalance_update` after the records."""
        return (self.weights, self.values, self.ts_exchange_ns, self.seq, self.not_live,
                self.skipped)

    def reset(self, symbol_id: int) -> None:
        """Forget a symbol (a ring discontinuity)."""
        self.values[symbol_id] = np.nan
        self.seq[symbol_id] = -1


@nb.njit(cache=True)
def imbalance_update(books, weights, values, ts_out, seq_out, not_live,
                     skipped):  # pragma: no cover - njit
    """Apply a batch of book records (see the module docstring)."""
    for i in range(len(books)):
        b = books[i]
        s = b.symbol_id
        if s >= len(seq_out):
            skipped[0] += 1
            continue
        if b.state != _LIVE:
            not_live[0] += 1
            continue
        n = min(len(weights), len(b.bid_px))
        bid = ask = 0.0
        for k in range(min(n, b.n_bids)):
            bid += weights[k] * b.bid_qty[k]
        for k in range(min(n, b.n_asks)):
            ask += weights[k] * b.ask_qty[k]
        total = bid + ask
        values[s, V_IMBALANCE] = (bid - ask) / total if total > 0.0 else np.nan
        if b.n_bids > 0 and b.n_asks > 0:
            values[s, V_MID] = 0.5 * (b.bid_px[0] + b.ask_px[0])
            values[s, V_SPREAD] = b.ask_px[0] - b.bid_px[0]
        else:
            values[s, V_MID] = np.nan
            values[s, V_SPREAD] = np.nan
        ts_out[s] = b.ts_exchange_ns
        seq_out[s] = b.seq
