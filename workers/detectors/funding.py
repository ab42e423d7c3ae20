"""Funding rates aggregated across exchanges per asset, and mark/index basis.

Each exchange's funding ring carries mark, index, funding rate and predicted rate (NaN where a
venue does not publish one). ``asset_of[exchange, symbol_id]`` maps each perpetual to an asset
index (``-1``: not aggregated), for example BTC for ``binance:BTCUSDT``, ``bybit:BTCUSDT`` and
``okx:BTC-USDT-SWAP``. Per asset and exchange the latest values are kept; per asset, after every
batch, the funding rates that are known give the cross-exchange minimum, maximum, spread
(max − min) and mean, and the exchange count. The basis per asset and exchange is
``(mark − index) / index`` (NaN without an index).
"""

from __future__ import annotations

import numba as nb
import numpy as np

__all__ = ["FundingState", "base_asset", "funding_update"]

_QUOTES = ("USDT", "USDC", "USD", "BUSD")


def base_asset(symbol: str, market: str) -> str | None:
    """The asset a perpetual or future is aggregated under (``BTC`` for ``BTCUSDT``,
    ``BTC-USDT-SWAP``, ``BTCUSD_PERP``), or None for spot and options (no funding)."""
    if market not in ("linear", "inverse"):
        return None
    head = symbol.split("-")[0] if "-" in symbol else symbol.split("_")[0]
    for quote in _QUOTES:
        if head.endswith(quote) and len(head) > len(quote):
            return head[:-len(quote)]
    return head

# per (asset, exchange) columns
F_RATE, F_PREDICTED, F_MARK, F_INDEX, F_BASIS, F_TS = range(6)
# per asset columns
A_MIN, A_MAX, A_SPREAD, A_MEAN, A_COUNT = range(5)
_EXCHANGES = 4  # ids 0..3 (shm.Exchange)


class FundingState:
    """Latest funding per asset and exchange; ``assets`` assets, symbol ids up to ``symbols``."""

    def __init__(self, assets: int, symbols: int) -> None:
        if assets < 1 or symbols < 1:
            raise ValueError(f"FundingState: assets and symbols must be ≥ 1, got {assets}, "
                             f"{symbols}")
        self.asset_of = np.full((_EXCHANGES, symbols), -1, np.int64)
        self.latest = np.full((assets, _EXCHANGES, 6), np.nan)
        self.summary = np.full((assets, 5), np.nan)
        self.skipped = np.zeros(1, np.int64)
        self._touched = np.zeros(assets, np.int8)

    def map(self, exchange: int, symbol_id: int, asset: int) -> None:
        """Aggregate ``exchange``'s symbol ``symbol_id`` under ``asset``."""
        if not 0 <= asset < len(self.latest):
            raise ValueError(f"FundingState: asset {asset} outside 0..{len(self.latest) - 1}")
        self.asset_of[exchange, symbol_id] = asset

    def update(self, records: np.ndarray) -> None:
        """Apply one batch of funding records (any exchange) and refresh touched assets."""
        funding_update(records, self.asset_of, self.latest, self.summary, self.skipped,
                       self._touched)


@nb.njit(cache=True)
def funding_update(recs, asset_of, latest, summary, skipped,
                   touched):  # pragma: no cover - njit
    """Apply a batch of funding records (see the module docstring)."""
    for i in range(len(recs)):
        r = recs[i]
        e, s = r.exchange, r.symbol_id
        if e >= asset_of.shape[0] or s >= asset_of.shape[1] or asset_of[e, s] < 0:
            skipped[0] += 1
            continue
        a = asset_of[e, s]
        row = latest[a, e]
        if not np.isnan(row[F_TS]) and r.ts_exchange_ns < row[F_TS]:
            continue  # older than what we hold
        row[F_RATE] = r.funding_rate
        row[F_PREDICTED] = r.predicted_rate
        row[F_MARK] = r.mark_px
        row[F_INDEX] = r.index_px
        row[F_BASIS] = (r.mark_px - r.index_px) / r.index_px if r.index_px > 0.0 else np.nan
        row[F_TS] = r.ts_exchange_ns
        touched[a] = 1
    for a in range(len(touched)):
        if not touched[a]:
            continue
        touched[a] = 0
        lo, hi, total, n = np.inf, -np.inf, 0.0, 0
        for e in range(latest.shape[1]):
            rate = latest[a, e, F_RATE]
            if not np.isnan(rate):
                lo = min(lo, rate)
                hi = max(hi, rate)
                total += rate
                n += 1
        if n:
            summary[a, A_MIN] = lo
            summary[a, A_MAX] = hi
            summary[a, A_SPREAD] = hi - lo
            summary[a, A_MEAN] = total / n
        summary[a, A_COUNT] = n
