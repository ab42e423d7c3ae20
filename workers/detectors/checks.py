"""Record checks shared by the detector kernels (one definition of a usable record)."""

from __future__ import annotations

import numba as nb
import numpy as np

__all__ = ["usable_trade"]


@nb.njit(cache=True, inline="always")
def usable_trade(t, symbols):  # pragma: no cover - njit
    """A trade or liquidation record a kernel may use: symbol id below ``symbols``, finite
    positive price and quantity, side BUY (1) or SELL (-1). Kernels count the others."""
    return (t.symbol_id < symbols and t.price > 0.0 and t.price < np.inf and t.qty > 0.0
            and t.qty < np.inf and (t.side == 1 or t.side == -1))
