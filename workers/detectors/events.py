"""Detector events: kinds, the njit append kernel, and a preallocated per-batch buffer.

Every detection is one ``shm.EVENT`` record: the common prefix (exchange, market, symbol id,
``ts_exchange_ns``/``ts_recv_ns``/``ts_mono_ns`` copied from the record that triggered it),
``kind``, ``priority`` (``shm.Priority``), ``side``, the trigger's ``seq`` and
``ts_commit_ns`` (``trigger_seq``/``trigger_commit_ns``: ring commit → event commit latency is
one subtraction), ``ts_detect_ns`` and eight ``values`` whose meaning per kind is the table in
the README ("Detector events"). Kernels append with :func:`emit`, into an :class:`EventBuffer`
they are given as arrays; the runner commits the buffer once per batch.
"""

from __future__ import annotations

from enum import IntEnum

import numba as nb
import numpy as np

from shm.layout import EVENT, EVENT_VALUES

__all__ = ["ST_COUNT", "ST_DROPPED", "VALUE_NAMES", "EventBuffer", "EventKind", "emit",
           "keep_trigger"]


class EventKind(IntEnum):
    """``kind`` of an event record (numbers are part of the bus format: never reuse one)."""

    WHALE_TRADE = 1      # one trade at or above the symbol's notional threshold
    WHALE_BURST = 2      # same-side trades within a window summing above the burst threshold
    CANDLE = 3           # an OHLCV candle closed (analytics, MEDIUM)
    BOOK_STATE = 4       # a book left LIVE (CRITICAL) or came back to LIVE (HIGH)
    BOOK_CROSSED = 5     # a LIVE book record with best bid ≥ best ask
    LIQUIDATION = 6      # one liquidation at or above the symbol's notional threshold
    LIQUIDATION_CASCADE = 7  # same-side liquidations clustering in notional and rate
    MOMENTUM = 8         # a price move beyond k·σ over a short window, with volume
    VOLATILITY = 9       # short-window realized volatility a multiple of the long window's
    MEAN_REVERSION = 10  # price deviating from VWAP by a z-score beyond the threshold
    REGIME = 11          # the market regime changed (quiet, ranging, trending, volatile)
    SPOOF = 12           # large size placed near the touch and pulled, not traded
    ICEBERG = 13         # a touch price refilling while trades take far more than it shows
    CHANNEL_SILENT = 14  # a feed worker flagged subscribed channels as silent (exchange level)


# what values[0..] mean per kind (the README's "Detector events" table; unnamed slots are 0)
VALUE_NAMES: dict[EventKind, tuple[str, ...]] = {
    EventKind.WHALE_TRADE: ("price", "qty", "usd_value", "confidence", "threshold_multiple"),
    EventKind.WHALE_BURST: ("vwap", "qty", "usd_value", "trades", "duration_s",
                            "threshold_multiple"),
    EventKind.CANDLE: ("open", "high", "low", "close", "volume", "buy_volume", "vwap",
                       "timeframe_s"),
    EventKind.BOOK_STATE: ("state", "previous_state", "epoch", "update_id", "bid_levels",
                           "ask_levels"),
    EventKind.BOOK_CROSSED: ("best_bid", "best_ask", "epoch", "update_id"),
    EventKind.LIQUIDATION: ("price", "qty", "usd_value", "threshold_multiple"),
    EventKind.LIQUIDATION_CASCADE: ("usd_value", "slots", "liquidations", "duration_s",
                                    "last_price", "threshold_multiple"),
    EventKind.MOMENTUM: ("log_move", "sigma_multiple", "volume", "volume_ratio", "price",
                         "price_before", "window_s"),
    EventKind.VOLATILITY: ("sigma_short", "sigma_base", "ratio", "short_s", "long_s", "price"),
    EventKind.MEAN_REVERSION: ("z", "price", "vwap", "sigma_price", "window_s"),
    EventKind.REGIME: ("regime", "previous_regime", "trend_t", "sigma_ratio", "sigma",
                       "sigma_baseline"),
    EventKind.SPOOF: ("price", "size", "pulled", "traded", "lifetime_s", "usd_value",
                      "distance_bps"),
    EventKind.ICEBERG: ("price", "traded", "largest_shown", "refills", "traded_ratio",
                        "duration_s", "usd_value"),
    EventKind.CHANNEL_SILENT: ("new_silent", "silent_total", "connections_up", "connections"),
}
assert set(VALUE_NAMES) == set(EventKind) and max(map(len, VALUE_NAMES.values())) <= 8

ST_COUNT, ST_DROPPED = 0, 1   # EventBuffer.state: events appended, events lost to a full buffer


@nb.njit(cache=True, inline="always")
def emit(out, state, trigger, kind, priority, side, ts_detect_ns, v0, v1, v2, v3, v4, v5, v6,
         v7):  # pragma: no cover - njit
    """Append one event caused by record ``trigger`` (any bus record) to ``out``; a full
    buffer counts it in ``state[ST_DROPPED]`` instead."""
    n = state[ST_COUNT]
    if n >= len(out):
        state[ST_DROPPED] += 1
        return
    e = out[n]
    e.ts_exchange_ns = trigger.ts_exchange_ns
    e.ts_recv_ns = trigger.ts_recv_ns
    e.ts_mono_ns = trigger.ts_mono_ns
    e.symbol_id = trigger.symbol_id
    e.exchange = trigger.exchange
    e.market = trigger.market
    e.flags = 0
    e.kind = kind
    e.priority = priority
    e.side = side
    e.trigger_seq = trigger.seq
    e.trigger_commit_ns = trigger.ts_commit_ns
    e.ts_detect_ns = ts_detect_ns
    e.values[0] = v0
    e.values[1] = v1
    e.values[2] = v2
    e.values[3] = v3
    e.values[4] = v4
    e.values[5] = v5
    e.values[6] = v6
    e.values[7] = v7
    state[ST_COUNT] = n + 1


assert EVENT_VALUES == 8  # emit writes eight values


@nb.njit(cache=True, inline="always")
def keep_trigger(dst, src):  # pragma: no cover - njit
    """Copy the common prefix of record ``src`` into ``dst`` (a kept trigger: a kernel that
    decides later emits the event with the record that caused it)."""
    dst.seq = src.seq
    dst.ts_exchange_ns = src.ts_exchange_ns
    dst.ts_recv_ns = src.ts_recv_ns
    dst.ts_mono_ns = src.ts_mono_ns
    dst.ts_commit_ns = src.ts_commit_ns
    dst.symbol_id = src.symbol_id
    dst.exchange = src.exchange
    dst.market = src.market


class EventBuffer:
    """Preallocated events of one batch: kernels get :attr:`records` and :attr:`state`."""

    def __init__(self, capacity: int = 4096) -> None:
        if capacity < 1:
            raise ValueError(f"EventBuffer: capacity must be ≥ 1, got {capacity}")
        self.records = np.zeros(capacity, EVENT)
        self.state = np.zeros(2, np.int64)

    def take(self) -> np.ndarray:
        """The events appended since the last take (a view, valid until the next batch), and
        reset for the next batch. Dropped events stay counted in ``state[ST_DROPPED]``."""
        n = int(self.state[ST_COUNT])
        self.state[ST_COUNT] = 0
        return self.records[:n]

    @property
    def dropped(self) -> int:
        """Events lost because the buffer was full (cumulative)."""
        return int(self.state[ST_DROPPED])
