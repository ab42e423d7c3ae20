"""The detector loop: read the feed rings in batches, run the kernels, commit the events.

:class:`DetectorRunner` follows one bus instance: for each configured exchange it reads the
``trades``, ``book``, ``liquidations`` and ``open_interest`` rings that exist (a missing one is
attached when it appears), runs every kernel that takes that stream once per batch, and
commits the batch's events to the instance's single ``events`` ring
(``microstream.<instance>.detectors.events.v1``). Kernel state is per exchange (symbol ids are
per exchange).

A writer restart (a new generation of a ring: the feed worker restarted) is a discontinuity:
records may be missing, so every kernel fed by that ring forgets the exchange's state, and for
a book ring each symbol whose book was LIVE gets a CRITICAL ``BOOK_STATE`` event (new state
NONE). A writer that closed is waited for; the runner never exits because a feed did.

Thresholds come from ``[detectors]`` (``engine.config.DetectorsConfig``) with per-symbol
overrides. Given each symbol's market, funding is aggregated per base asset across exchanges.
The continuous values go to each exchange's ``analytics`` latest table.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

import shm
from engine.config import DetectorsConfig, SymbolThresholds
from shm.layout import ANALYTICS, BOOK, EVENT, BookState, Exchange, Priority
from shm.layout import STREAMS as STREAM_DTYPES

from ..rings import RingSet
from .book_state import BookStateMonitor, book_state_update
from .candles import CandleState, candle_update
from .compiled import Step, bind, conform
from .cvd import CvdState, cvd_update
from .events import EventBuffer, EventKind, emit
from .funding import A_SPREAD, F_BASIS, F_PREDICTED, F_RATE, FundingState, base_asset
from .heatmap import HeatmapState, heatmap_update
from .iceberg import IcebergState, iceberg_books, iceberg_trades
from .imbalance import ImbalanceState, imbalance_update
from .liquidations import LiquidationState, liquidation_update
from .open_interest import WINDOWS_S as OI_WINDOWS_S
from .open_interest import OpenInterestState, open_interest_update
from .price_moves import I_REGIME, PriceMoveConfig, PriceMoveState, price_move_update
from .spoofing import SpoofState, spoof_books, spoof_trades
from .stats24h import Stats24hState, stats24h_add
from .whale import WhaleState, whale_update

__all__ = ["STATS", "DetectorRunner", "ExchangeDetectors"]

STREAMS = ("trades", "book", "liquidations", "open_interest", "funding")
# microstream.<instance>.detectors.stats.v1.latest, one row refreshed with the analytics
STATS = np.dtype([("seq", np.uint64), ("ts_ns", np.int64), ("records", np.int64),
                  ("events", np.int64), ("events_dropped", np.int64),
                  ("discontinuities", np.int64), ("ring_lost", np.int64),
                  ("ring_lag", np.int64)], align=True)
assert OI_WINDOWS_S[0] == 300 and OI_WINDOWS_S[2] == 3600  # the analytics columns' windows


class ExchangeDetectors:
    """Every kernel's state for one exchange whose symbols are ``names`` (by symbol id, as in
    its latest tables); ``settings`` gives the thresholds and per-symbol overrides. Events go
    to ``events`` (a new buffer if None), which the enabled kernels are bound to."""

    def __init__(self, exchange: str, names: Sequence[str], settings: DetectorsConfig,
                 events: EventBuffer | None = None) -> None:
        symbols = max(1, len(names))
        self.exchange = exchange
        self.exchange_id = int(Exchange[exchange.upper()])
        self.cvd = CvdState(symbols)
        self.candles = CandleState(symbols)
        self.stats24h = Stats24hState(symbols)
        self.whale = WhaleState(symbols, settings.whale_burst_window_s)
        self.liquidations = LiquidationState(symbols, settings.cascade_window_s,
                                             settings.cascade_min_slots)
        self.book_state = BookStateMonitor(symbols)
        self.imbalance = ImbalanceState(symbols, settings.imbalance_levels,
                                        settings.imbalance_decay)
        self.heatmap = HeatmapState(symbols, settings.heatmap_zones, settings.heatmap_zone_bps)
        self.spoofing = SpoofState(symbols, settings.spoof_min_usd, settings.spoof_near_bps,
                                   settings.spoof_size_ratio,
                                   max_life_s=settings.spoof_max_life_s)
        self.iceberg = IcebergState(symbols, settings.iceberg_min_usd,
                                    settings.iceberg_traded_ratio, settings.iceberg_min_refills)
        self.price_moves = PriceMoveState(symbols, PriceMoveConfig())
        self.open_interest = OpenInterestState(symbols)
        for sid, name in enumerate(names):
            over = settings.symbols.get(f"{exchange}:{name}", SymbolThresholds())

            def pick(value: float | None, default: float) -> float:
                return default if value is None else value

            self.whale.set_threshold(sid, pick(over.whale_min_usd, settings.whale_min_usd),
                                     pick(over.whale_burst_usd, settings.whale_burst_usd))
            self.liquidations.set_threshold(
                sid, pick(over.liquidation_min_usd, settings.liquidation_min_usd),
                pick(over.cascade_usd, settings.cascade_usd))
            self.spoofing.min_usd[sid] = pick(over.spoof_min_usd, settings.spoof_min_usd)
            self.iceberg.min_usd[sid] = pick(over.iceberg_min_usd, settings.iceberg_min_usd)
        self.symbols = symbols
        self.funding: FundingState | None = None  # shared across exchanges (set by the runner)
        on = set(settings.kernels)
        self.events = events if events is not None else EventBuffer()
        ev = self.events
        # stream → (kernel name, njit function, its state arguments, takes the time)
        kernels: dict[str, list[tuple[str, Any, tuple[Any, ...], bool]]] = {
            "trades": [("cvd", cvd_update, self.cvd.kernel_args(), False),
                       ("stats24h", stats24h_add, self.stats24h.kernel_args(), False),
                       ("candles", candle_update, self.candles.kernel_args(ev), True),
                       ("whale", whale_update, self.whale.kernel_args(ev), True),
                       ("price_moves", price_move_update, self.price_moves.kernel_args(ev), True),
                       ("spoofing", spoof_trades, self.spoofing.kernel_args(ev), True),
                       ("iceberg", iceberg_trades, self.iceberg.kernel_args(ev), True)],
            "book": [("book_state", book_state_update, self.book_state.kernel_args(ev), True),
                     ("imbalance", imbalance_update, self.imbalance.kernel_args(), False),
                     ("heatmap", heatmap_update, self.heatmap.kernel_args(), False),
                     ("spoofing", spoof_books, self.spoofing.kernel_args(ev), True),
                     ("iceberg", iceberg_books, self.iceberg.kernel_args(ev), True)],
            "liquidations": [("liquidations", liquidation_update,
                              self.liquidations.kernel_args(ev), True)],
            "open_interest": [("open_interest", open_interest_update,
                               self.open_interest.kernel_args(), False)]}
        #: per stream, the enabled kernels bound to their state, in a fixed order
        self.steps: dict[str, list[Step]] = {
            stream: [bind(kernel, STREAM_DTYPES[stream], state, takes_time=takes_time)
                     for name, kernel, state, takes_time in table if name in on]
            for stream, table in kernels.items()}
        # funding state is shared across exchanges and set after construction: looked up
        self.steps["funding"] = [self._funding] if "funding" in on else []

    def _funding(self, records: np.ndarray, ts_detect_ns: int) -> None:
        if self.funding is not None:
            self.funding.update(records)

    def run(self, stream: str, records: np.ndarray, now_ns: int) -> None:
        """Feed one batch of ``stream`` records to the enabled kernels that take it; their
        events go to :attr:`events`."""
        records = conform(records, STREAM_DTYPES[stream], stream)
        for step in self.steps[stream]:
            step(records, now_ns)

    def analytics(self, rows: np.ndarray, now_ns: int) -> None:
        """Fill ``rows`` (``shm.ANALYTICS``, one per symbol id) with the continuous values."""
        n = len(rows)
        self.stats24h.refresh()
        day = self.stats24h.stats[:n]
        rows["ts_exchange_ns"] = np.maximum(self.stats24h.last_ns[:n], 0)
        rows["ts_commit_ns"] = now_ns
        rows["symbol_id"] = np.arange(n)
        rows["exchange"] = self.exchange_id
        for i, name in enumerate(("cvd_1m", "cvd_5m", "cvd_15m")):
            rows[name] = self.cvd.windows[:n, i]
        rows["cvd_session"] = self.cvd.session[:n]
        rows["trade_count"] = self.cvd.trades[:n]
        for i, name in enumerate(("volume_24h", "quote_volume_24h", "high_24h", "low_24h",
                                  "last")):
            rows[name] = day[:, i]
        rows["change_24h_pct"] = day[:, 7]
        for i, name in enumerate(("imbalance", "mid", "spread")):
            rows[name] = self.imbalance.values[:n, i]
        rows["open_interest"] = self.open_interest.latest[:n]
        rows["oi_delta_5m"] = self.open_interest.deltas[:n, 0, 0]   # WINDOWS_S[0] = 300
        rows["oi_delta_1h"] = self.open_interest.deltas[:n, 2, 0]   # WINDOWS_S[2] = 3600
        walls = self.heatmap.walls[:n]
        rows["bid_wall_px"], rows["bid_wall_qty"] = walls[:, 0, 3], walls[:, 0, 1]
        rows["ask_wall_px"], rows["ask_wall_qty"] = walls[:, 1, 3], walls[:, 1, 1]
        rows["bid_wall_since_ns"] = self.heatmap.since_ns[:n, 0]
        rows["ask_wall_since_ns"] = self.heatmap.since_ns[:n, 1]
        rows["regime"] = self.price_moves.ints[:n, I_REGIME]
        if self.funding is not None:
            assets = self.funding.asset_of[self.exchange_id, :n]
            known = assets >= 0
            a = np.where(known, assets, 0)
            latest = self.funding.latest[a, self.exchange_id]
            nan = np.full(n, np.nan)
            rows["funding_rate"] = np.where(known, latest[:, F_RATE], nan)
            rows["basis"] = np.where(known, latest[:, F_BASIS], nan)
            rows["funding_predicted"] = np.where(known, latest[:, F_PREDICTED], nan)
            rows["funding_spread"] = np.where(known, self.funding.summary[a, A_SPREAD], nan)
        else:
            for name in ("funding_rate", "funding_spread", "basis", "funding_predicted"):
                rows[name] = np.nan
        rows["seq"] += 1

    def forget(self, stream: str, now_ns: int) -> None:
        """A discontinuity on ``stream``'s ring: reset what it fed; alert LIVE books."""
        for sid in range(self.symbols):
            if stream == "trades":
                for state in (self.cvd, self.stats24h, self.candles, self.whale,
                              self.price_moves):
                    state.reset(sid)
            elif stream == "book":
                if self.book_state.state[sid] == BookState.LIVE:
                    trigger = np.zeros(1, BOOK)[0]
                    trigger["symbol_id"], trigger["exchange"] = sid, self.exchange_id
                    emit(self.events.records, self.events.state, trigger, int(EventKind.BOOK_STATE),
                         int(Priority.CRITICAL), 0, now_ns, float(BookState.NONE),
                         float(BookState.LIVE), 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
                self.book_state.reset(sid)
                self.imbalance.reset(sid)
                self.heatmap.reset(sid)
                self.spoofing.reset(sid)
                self.iceberg.reset(sid)
            elif stream == "liquidations":
                self.liquidations.reset(sid)
            elif stream == "open_interest":
                self.open_interest.reset(sid)


class DetectorRunner:
    """Runs the kernels over ``instance``'s rings for ``exchanges`` (name → symbol names by
    symbol id, see ``engine.config.configured_names``)."""

    def __init__(self, instance: str, exchanges: Mapping[str, Sequence[str]],
                 settings: DetectorsConfig | None = None, *,
                 markets: Mapping[str, Sequence[str]] | None = None,
                 start: str = "latest", clock: Callable[[], int] = time.perf_counter_ns) -> None:
        self.instance = instance
        self.settings = settings or DetectorsConfig()
        self.start = start
        self.clock = clock
        self.events = EventBuffer(self.settings.events_ring_capacity)
        self.detectors = {ex: ExchangeDetectors(ex, names, self.settings, self.events)
                          for ex, names in exchanges.items()}
        self.funding: FundingState | None = None
        if markets is not None:  # funding: every perpetual aggregated under its base asset
            assets: dict[str, int] = {}
            pairs = [(ex, sid, base_asset(name.split("@")[0], markets[ex][sid]))
                     for ex, names in exchanges.items() for sid, name in enumerate(names)]
            for _, _, asset in pairs:
                if asset is not None:
                    assets.setdefault(asset, len(assets))
            width = max([len(n) for n in exchanges.values()] + [1])
            self.funding = FundingState(max(1, len(assets)), width)
            for ex, sid, asset in pairs:
                if asset is not None:
                    self.funding.map(self.detectors[ex].exchange_id, sid, assets[asset])
            for det in self.detectors.values():
                det.funding = self.funding
        capacity = self.settings.events_ring_capacity
        self.writer = shm.Writer(shm.segment_name(instance, "detectors", "events"), EVENT,
                                 capacity)
        # the analytics latest table of each exchange, refreshed every analytics_interval_ms
        self.tables: dict[str, shm.LatestWriter] = {}
        self.rows: dict[str, np.ndarray] = {}
        for ex, names in exchanges.items():
            table = shm.LatestWriter(shm.segment_name(instance, ex, "analytics", suffix="latest"),
                                     ANALYTICS, max(1, len(names)))
            for sid, name in enumerate(names):
                table.register(sid, name)
            self.tables[ex] = table
            self.rows[ex] = np.zeros(len(names), ANALYTICS)
        self._interval_ns = self.settings.analytics_interval_ms * 1_000_000
        self._next_analytics = 0
        self.rings = RingSet(instance, start, batch_window_us=self.settings.batch_window_us)
        self._ring_keys = [(ex, stream) for ex in self.detectors for stream in STREAMS]
        self.stats = shm.LatestWriter(shm.segment_name(instance, "detectors", "stats",
                                                       suffix="latest"), STATS, 1, replace=True)
        self.events_committed = 0
        self._stats: dict[str, shm.LatestReader] = {}   # feed workers' stats tables
        self._silent: dict[str, int] = {}               # their silent_channels counters
        self.records = 0

    def step(self, wait_s: float = 0.0) -> int:
        """Poll every ring once, run the kernels, commit the events; returns the number of
        records processed. If nothing was new and ``wait_s > 0``, park on every followed
        ring at once for up to ``wait_s`` (any commit wakes us) and poll them all again."""
        done = self._poll_all()
        if not done and wait_s > 0 and self.detectors and self.rings.wait(wait_s):
            done = self._poll_all()
        now = self.clock()
        refresh = now >= self._next_analytics
        if refresh:
            self._next_analytics = now + self._interval_ns
            self.check_feeds(now)
        events = self.events.take()
        if len(events):
            self.writer.commit_batch(events)
            self.events_committed += len(events)
        self.records += done
        if refresh:
            self.publish_analytics(now)
            lost, lag = self.rings.totals()
            self.stats.update(0, (0, time.time_ns(), self.records, self.events_committed,
                                  self.events.dropped, self.rings.discontinuities, lost, lag))
        return done

    def check_feeds(self, now_ns: int) -> None:
        """A CRITICAL ``CHANNEL_SILENT`` event for each exchange whose feed worker flagged new
        silent channels (its stats table's ``silent_channels`` counter went up)."""
        for ex, det in self.detectors.items():
            table = self._stats.get(ex)
            if table is None:
                try:
                    table = self._stats[ex] = shm.LatestReader(
                        shm.segment_name(self.instance, ex, "stats", suffix="latest"))
                except shm.ShmError:
                    continue  # no feed worker (yet)
            row = table.get(0)
            if row is None:
                continue
            silent = int(row["silent_channels"])
            seen = self._silent.get(ex)
            self._silent[ex] = silent
            if seen is not None and silent > seen:
                trigger = np.zeros(1, BOOK)[0]
                trigger["exchange"], trigger["ts_mono_ns"] = det.exchange_id, now_ns
                trigger["ts_recv_ns"] = int(row["ts_ns"])
                emit(self.events.records, self.events.state, trigger,
                     int(EventKind.CHANNEL_SILENT), int(Priority.CRITICAL), 0, now_ns,
                     float(silent - seen), float(silent), float(row["connections_up"]),
                     float(row["connections"]), 0.0, 0.0, 0.0, 0.0)

    def publish_analytics(self, now_ns: int) -> None:
        """Refresh every exchange's analytics latest table (done every
        ``analytics_interval_ms`` by :meth:`step`)."""
        for ex, det in self.detectors.items():
            rows, table = self.rows[ex], self.tables[ex]
            det.analytics(rows, now_ns)
            raw = rows.data.cast("B")
            size = rows.dtype.itemsize
            for sid in range(len(rows)):
                table.update_raw(sid, raw[sid * size:(sid + 1) * size])

    def _poll_all(self) -> int:
        done = 0
        for exchange, stream in self.rings.pending(self._ring_keys):   # one compiled check
            done += self._poll(exchange, self.detectors[exchange], stream, 0.0)
        return done

    def _poll(self, exchange: str, det: ExchangeDetectors, stream: str, wait_s: float) -> int:
        batch, discontinuity = self.rings.poll(exchange, stream, wait_s)
        if discontinuity:
            det.forget(stream, self.clock())
        if batch is None or not len(batch):
            return 0
        det.run(stream, batch, self.clock())
        return len(batch)

    @property
    def discontinuities(self) -> int:
        """Ring discontinuities seen (writer restarts)."""
        return self.rings.discontinuities

    def close(self) -> None:
        """Close the readers and the events ring (marked CLOSED, left for consumers)."""
        self.rings.close()
        for table in self.tables.values():
            table.close()
        for stats in self._stats.values():
            stats.close()
        self.stats.close()
        self.writer.close()
