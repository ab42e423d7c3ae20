"""OHLCV candles for 14 timeframes (1 s .. 1 d) with buy volume and VWAP, from the trades ring.

Candles are aligned to exchange time (``ts - ts % timeframe``, UTC). Each symbol and timeframe
has one open candle; the first trade of a later interval closes it and emits one
``CANDLE`` event (trigger: that trade) carrying open, high, low, close, volume, buy volume
(aggressor buys), VWAP and the timeframe in seconds. An interval without trades makes no candle.
A trade older than a timeframe's open candle (late: its candle closed already) is not applied
to that timeframe, and is counted once in ``late``; a closed candle is never changed. The same
trade still counts in the longer timeframes whose open candle covers it.

State lives in :class:`CandleState` (arrays by symbol id and timeframe); :func:`candle_update`
runs one batch of ``shm.TRADE`` records.
"""

from __future__ import annotations

from typing import Any

import numba as nb
import numpy as np

from shm.layout import Priority

from .checks import usable_trade
from .events import EventBuffer, EventKind, emit

__all__ = ["TIMEFRAMES_S", "CandleState", "candle_update"]

TIMEFRAMES_S = (1, 5, 15, 60, 180, 300, 900, 1800, 3600, 7200, 14400, 21600, 43200, 86400)
_TF_NS = np.array(TIMEFRAMES_S, np.int64) * 1_000_000_000
_CANDLE = int(EventKind.CANDLE)
_MEDIUM = int(Priority.MEDIUM)
# float columns of an open candle
C_OPEN, C_HIGH, C_LOW, C_CLOSE, C_VOLUME, C_BUY, C_NOTIONAL = range(7)


class CandleState:
    """Open candles of ``symbols`` symbol ids for every timeframe in :data:`TIMEFRAMES_S`."""

    def __init__(self, symbols: int) -> None:
        if symbols < 1:
            raise ValueError(f"CandleState: symbols must be ≥ 1, got {symbols}")
        n = len(TIMEFRAMES_S)
        self.start_ns = np.full((symbols, n), -1, np.int64)  # open candle's interval (-1: none)
        self.trades = np.zeros((symbols, n), np.int64)       # trades in the open candle
        self.values = np.zeros((symbols, n, 7))              # C_OPEN .. C_NOTIONAL
        self.late = np.zeros(symbols, np.int64)              # trades too late for any candle
        self.skipped = np.zeros(1, np.int64)                 # records refused

    def kernel_args(self, events: EventBuffer) -> tuple[Any, ...]:
        """The arguments of :func:`candle_update` between the records and the time."""
        return (_TF_NS, self.start_ns, self.trades, self.values, self.late, self.skipped,
                events.records, events.state)

    def update(self, trades: np.ndarray, events: EventBuffer, ts_detect_ns: int) -> None:
        """Run one batch of trade records; closed candles go to ``events``."""
        candle_update(trades, *(*self.kernel_args(events), ts_detect_ns))

    def reset(self, symbol_id: int) -> None:
        """Drop a symbol's open candles without emitting them (a ring discontinuity)."""
        self.start_ns[symbol_id] = -1
        self.trades[symbol_id] = 0
        self.values[symbol_id] = 0.0


@nb.njit(cache=True)
def candle_update(trades, tf_ns, start_ns, count, values, late, skipped, out, out_state,
                  ts_detect_ns):  # pragma: no cover - njit
    """Apply one batch of trades to every timeframe's open candle (module docstring)."""
    for i in range(len(trades)):
        t = trades[i]
        if not usable_trade(t, len(late)) or t.ts_exchange_ns < 0:
            skipped[0] += 1
            continue
        s = t.symbol_id
        px, qty = t.price, t.qty
        ts = t.ts_exchange_ns
        was_late = False
        for k in range(len(tf_ns)):
            start = ts - ts % tf_ns[k]
            v = values[s, k]
            if start < start_ns[s, k]:
                was_late = True  # its candle closed already
                continue
            if start > start_ns[s, k]:
                if count[s, k] > 0:
                    emit(out, out_state, t, _CANDLE, _MEDIUM, 0, ts_detect_ns, v[C_OPEN],
                         v[C_HIGH], v[C_LOW], v[C_CLOSE], v[C_VOLUME], v[C_BUY],
                         v[C_NOTIONAL] / v[C_VOLUME], tf_ns[k] / 1e9)
                start_ns[s, k] = start
                count[s, k] = 0
                v[C_OPEN] = v[C_HIGH] = v[C_LOW] = px
                v[C_VOLUME] = v[C_BUY] = v[C_NOTIONAL] = 0.0
            v[C_HIGH] = max(v[C_HIGH], px)
            v[C_LOW] = min(v[C_LOW], px)
            v[C_CLOSE] = px
            v[C_VOLUME] += qty
            v[C_NOTIONAL] += px * qty
            if t.side == 1:
                v[C_BUY] += qty
            count[s, k] += 1
        if was_late:
            late[s] += 1
