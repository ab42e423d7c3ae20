"""Whale trades and same-side bursts, from the trades ring.

A **whale trade** is one trade whose notional (``price × qty``, quote currency, USD for the
USDT/USD markets) is at least the symbol's ``min_usd``. Its confidence grows with the multiple
of the threshold: 0.5 at 1×, 1.0 at 10× and above (linear in between).

A **burst** is a run of trades of one aggressor side in which every trade comes within
``burst_window_ns`` (exchange time) of the run's first trade; the run's notional reaching
``burst_usd`` fires one event (once per run). A trade of the other side, or one past the
window, starts a new run. Trades that are whales by themselves also count in runs.

State lives in :class:`WhaleState` (arrays by symbol id); :func:`whale_update` takes one batch
of ``shm.TRADE`` records and appends events to an :class:`~.events.EventBuffer`. Events carry
the trade that completed them as their trigger; ``ts_detect_ns`` is the batch's detection time.
"""

from __future__ import annotations

from typing import Any

import numba as nb
import numpy as np

from shm.layout import Priority

from .checks import usable_trade
from .events import EventBuffer, EventKind, emit

__all__ = ["WhaleState", "whale_update"]

_WHALE = int(EventKind.WHALE_TRADE)
_BURST = int(EventKind.WHALE_BURST)
_CRITICAL = int(Priority.CRITICAL)
_HIGH = int(Priority.HIGH)
# run state: int64 columns side, first trade's exchange time (ns), trades, fired;
# float64 columns notional, qty
R_SIDE, R_START, R_COUNT, R_FIRED = range(4)
R_USD, R_QTY = range(2)


class WhaleState:
    """Thresholds and burst runs of ``symbols`` symbol ids.

    ``min_usd``/``burst_usd`` are per symbol (set them with :meth:`set_threshold`);
    ``0`` disables the detection for that symbol.
    """

    def __init__(self, symbols: int, burst_window_s: float = 1.0) -> None:
        if symbols < 1:
            raise ValueError(f"WhaleState: symbols must be ≥ 1, got {symbols}")
        if not burst_window_s > 0:
            raise ValueError(f"WhaleState: burst_window_s must be > 0, got {burst_window_s}")
        self.min_usd = np.zeros(symbols)
        self.burst_usd = np.zeros(symbols)
        self.burst_window_ns = int(burst_window_s * 1e9)
        self.run_i = np.zeros((symbols, 4), np.int64)
        self.run_f = np.zeros((symbols, 2))
        self.skipped = np.zeros(1, np.int64)

    def set_threshold(self, symbol_id: int, min_usd: float, burst_usd: float) -> None:
        """Notional thresholds of one symbol (0 disables; negative or NaN is an error)."""
        for name, value in (("min_usd", min_usd), ("burst_usd", burst_usd)):
            if not value >= 0:
                raise ValueError(f"WhaleState: {name} for symbol {symbol_id} must be ≥ 0, "
                                 f"got {value}")
        self.min_usd[symbol_id] = min_usd
        self.burst_usd[symbol_id] = burst_usd

    def kernel_args(self, events: EventBuffer) -> tuple[Any, ...]:
        """The arguments of :func:`whale_update` between the records and the time."""
        return (self.min_usd, self.burst_usd, self.burst_window_ns, self.run_i, self.run_f,
                self.skipped, events.records, events.state)

    def update(self, trades: np.ndarray, events: EventBuffer, ts_detect_ns: int) -> None:
        """Run one batch of trade records; events go to ``events``."""
        whale_update(trades, *(*self.kernel_args(events), ts_detect_ns))

    def reset(self, symbol_id: int) -> None:
        """Forget a symbol's current run (a ring discontinuity)."""
        self.run_i[symbol_id] = 0
        self.run_f[symbol_id] = 0.0


@nb.njit(cache=True)
def whale_update(trades, min_usd, burst_usd, window_ns, run_i, run_f, skipped, out, out_state,
                 ts_detect_ns):  # pragma: no cover - njit
    """Apply one batch of trades (see the module docstring)."""
    for i in range(len(trades)):
        t = trades[i]
        if not usable_trade(t, len(min_usd)):
            skipped[0] += 1
            continue
        s = t.symbol_id
        usd = t.price * t.qty
        threshold = min_usd[s]
        if threshold > 0.0 and usd >= threshold:
            confidence = min(1.0, 0.5 + 0.5 * (usd / threshold - 1.0) / 9.0)
            emit(out, out_state, t, _WHALE, _CRITICAL, t.side, ts_detect_ns, t.price, t.qty,
                 usd, confidence, usd / threshold, 0.0, 0.0, 0.0)
        if burst_usd[s] <= 0.0:
            continue
        ri, rf = run_i[s], run_f[s]
        ts = t.ts_exchange_ns
        if ri[R_COUNT] == 0 or ri[R_SIDE] != t.side or ts - ri[R_START] > window_ns:
            ri[R_SIDE] = t.side
            ri[R_START] = ts
            ri[R_COUNT] = 0
            ri[R_FIRED] = 0
            rf[R_USD] = 0.0
            rf[R_QTY] = 0.0
        rf[R_USD] += usd
        rf[R_QTY] += t.qty
        ri[R_COUNT] += 1
        if ri[R_FIRED] == 0 and rf[R_USD] >= burst_usd[s]:
            ri[R_FIRED] = 1
            emit(out, out_state, t, _BURST, _HIGH, t.side, ts_detect_ns,
                 rf[R_USD] / rf[R_QTY], rf[R_QTY], rf[R_USD], float(ri[R_COUNT]),
                 (ts - ri[R_START]) / 1e9, rf[R_USD] / burst_usd[s], 0.0, 0.0)
