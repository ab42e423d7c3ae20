"""Liquidation monitor and cascade detection, from the liquidations ring.

Every liquidation whose notional (``price × qty``) reaches the symbol's ``min_usd`` is a HIGH
``LIQUIDATION`` event. A **cascade** is a cluster of same-side liquidations: over the last
``window_s`` seconds (exchange time) their notional reaches ``cascade_usd`` and they occupied at
least ``min_slots`` distinct *sampling slots*. Slots account for how venues sample the stream:
Binance pushes at most one liquidation per symbol per second (the largest), Bybit batches every
500 ms, so counting records would understate a burst on one venue and overstate it on another;
the slot length per exchange is ``sample_s`` (Binance 1 s, Bybit 0.5 s, OKX 1 s by default).
A cascade fires one CRITICAL ``LIQUIDATION_CASCADE`` event, then re-arms once the window's
notional falls below half of ``cascade_usd`` (hysteresis: one event per episode).

Side is the liquidation order's: SELL means longs were liquidated. Per symbol and side the window
is a ring of the last ``capacity`` liquidations (oldest dropped first when full, counted in
``overflow``). Records are expected in time order per symbol; an older one is counted at the
newest time seen, so the window never runs backwards.
"""

from __future__ import annotations

from typing import Any

import numba as nb
import numpy as np

from shm.layout import Exchange, Priority

from .checks import usable_trade
from .events import EventBuffer, EventKind, emit

__all__ = ["DEFAULT_SAMPLE_S", "LiquidationState", "liquidation_update"]

DEFAULT_SAMPLE_S = {Exchange.BINANCE: 1.0, Exchange.BYBIT: 0.5, Exchange.OKX: 1.0}
_LIQ = int(EventKind.LIQUIDATION)
_CASCADE = int(EventKind.LIQUIDATION_CASCADE)
_CRITICAL = int(Priority.CRITICAL)
_HIGH = int(Priority.HIGH)
# per (symbol, side) int64 columns: ring head, ring size, distinct slots, cascade in progress,
# newest exchange time seen
I_HEAD, I_SIZE, I_SLOTS, I_ACTIVE, I_NEWEST = range(5)


class LiquidationState:
    """Windows of ``symbols`` symbol ids × 2 sides; thresholds per symbol (0 disables)."""

    def __init__(self, symbols: int, window_s: float = 60.0, min_slots: int = 3,
                 capacity: int = 512,
                 sample_s: dict[Exchange, float] | None = None) -> None:
        if symbols < 1 or capacity < 1 or min_slots < 1:
            raise ValueError(f"LiquidationState: symbols, capacity and min_slots must be ≥ 1, "
                             f"got {symbols}, {capacity}, {min_slots}")
        if not window_s > 0:
            raise ValueError(f"LiquidationState: window_s must be > 0, got {window_s}")
        samples = {**DEFAULT_SAMPLE_S, **(sample_s or {})}
        self.sample_ns = np.full(256, 1_000_000_000, np.int64)  # by exchange id
        for exchange, seconds in samples.items():
            if not seconds > 0:
                raise ValueError(f"LiquidationState: sample_s for {Exchange(exchange).name} "
                                 f"must be > 0, got {seconds}")
            self.sample_ns[int(exchange)] = int(seconds * 1e9)
        self.window_ns = int(window_s * 1e9)
        self.min_slots = min_slots
        self.min_usd = np.zeros(symbols)
        self.cascade_usd = np.zeros(symbols)
        self.ts = np.zeros((symbols, 2, capacity), np.int64)
        self.usd = np.zeros((symbols, 2, capacity))
        self.slot = np.zeros((symbols, 2, capacity), np.int64)
        self.first = np.zeros((symbols, 2, capacity), np.int8)  # first entry of its slot
        self.ints = np.zeros((symbols, 2, 5), np.int64)         # I_HEAD .. I_NEWEST
        self.sums = np.zeros((symbols, 2))                      # window notional
        self.counters = np.zeros(2, np.int64)                   # skipped records, overflow

    def set_threshold(self, symbol_id: int, min_usd: float, cascade_usd: float) -> None:
        """Notional thresholds of one symbol (0 disables; negative or NaN is an error)."""
        for name, value in (("min_usd", min_usd), ("cascade_usd", cascade_usd)):
            if not value >= 0:
                raise ValueError(f"LiquidationState: {name} for symbol {symbol_id} must be "
                                 f"≥ 0, got {value}")
        self.min_usd[symbol_id] = min_usd
        self.cascade_usd[symbol_id] = cascade_usd

    def update(self, liquidations: np.ndarray, events: EventBuffer, ts_detect_ns: int) -> None:
        """Run one batch of liquidation records; events go to ``events``."""
        liquidation_update(liquidations, *(*self.kernel_args(events), ts_detect_ns))

    def kernel_args(self, events: EventBuffer) -> tuple[Any, ...]:
        """The arguments of :func:`liquidation_update` between the records and the time."""
        return (self.min_usd, self.cascade_usd, self.window_ns, self.min_slots, self.sample_ns,
                self.ts, self.usd, self.slot, self.first, self.ints, self.sums, self.counters,
                events.records, events.state)

    def reset(self, symbol_id: int) -> None:
        """Empty a symbol's windows (a ring discontinuity)."""
        self.ints[symbol_id] = 0
        self.sums[symbol_id] = 0.0


@nb.njit(cache=True, inline="always")
def _evict_one(ts, usd, slot, first, ints, sums, s, k, cap):  # pragma: no cover - njit
    h = ints[s, k, I_HEAD]
    sums[s, k] -= usd[s, k, h]
    if first[s, k, h]:
        nxt = (h + 1) % cap
        if ints[s, k, I_SIZE] > 1 and slot[s, k, nxt] == slot[s, k, h]:
            first[s, k, nxt] = 1  # the slot still has an entry: it moves to the next one
        else:
            ints[s, k, I_SLOTS] -= 1
    ints[s, k, I_HEAD] = (h + 1) % cap
    ints[s, k, I_SIZE] -= 1
    if ints[s, k, I_SIZE] == 0:
        sums[s, k] = 0.0  # no residue from float subtraction in an empty window


@nb.njit(cache=True)
def liquidation_update(liqs, min_usd, cascade_usd, window_ns, min_slots, sample_ns, ts, usd,
                       slot, first, ints, sums, counters, out, out_state,
                       ts_detect_ns):  # pragma: no cover - njit
    """Apply one batch of liquidation records (see the module docstring)."""
    cap = ts.shape[2]
    for i in range(len(liqs)):
        r = liqs[i]
        if not usable_trade(r, len(min_usd)):
            counters[0] += 1
            continue
        s = r.symbol_id
        notional = r.price * r.qty
        if min_usd[s] > 0.0 and notional >= min_usd[s]:
            emit(out, out_state, r, _LIQ, _HIGH, r.side, ts_detect_ns, r.price, r.qty,
                 notional, notional / min_usd[s], 0.0, 0.0, 0.0, 0.0)
        if cascade_usd[s] <= 0.0:
            continue
        k = 0 if r.side == 1 else 1
        now = max(r.ts_exchange_ns, ints[s, k, I_NEWEST])
        ints[s, k, I_NEWEST] = now
        while ints[s, k, I_SIZE] > 0 and ts[s, k, ints[s, k, I_HEAD]] <= now - window_ns:
            _evict_one(ts, usd, slot, first, ints, sums, s, k, cap)
        if ints[s, k, I_SIZE] == cap:
            counters[1] += 1
            _evict_one(ts, usd, slot, first, ints, sums, s, k, cap)
        size = ints[s, k, I_SIZE]
        j = (ints[s, k, I_HEAD] + size) % cap
        this_slot = now // sample_ns[r.exchange]
        is_first = size == 0 or slot[s, k, (j - 1) % cap] != this_slot
        ts[s, k, j] = now
        usd[s, k, j] = notional
        slot[s, k, j] = this_slot
        first[s, k, j] = 1 if is_first else 0
        ints[s, k, I_SIZE] = size + 1
        if is_first:
            ints[s, k, I_SLOTS] += 1
        sums[s, k] += notional
        if ints[s, k, I_ACTIVE] == 0:
            if sums[s, k] >= cascade_usd[s] and ints[s, k, I_SLOTS] >= min_slots:
                ints[s, k, I_ACTIVE] = 1
                oldest = ts[s, k, ints[s, k, I_HEAD]]
                emit(out, out_state, r, _CASCADE, _CRITICAL, r.side, ts_detect_ns, sums[s, k],
                     float(ints[s, k, I_SLOTS]), float(ints[s, k, I_SIZE]),
                     (now - oldest) / 1e9, r.price, sums[s, k] / cascade_usd[s], 0.0, 0.0)
        elif sums[s, k] < 0.5 * cascade_usd[s]:
            ints[s, k, I_ACTIVE] = 0  # the episode is over: armed again
