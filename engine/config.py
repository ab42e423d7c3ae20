"""``config.toml``, decoded with msgspec into frozen structs (unknown keys are errors).

Sections: the bus instance, the bus demo, the exchanges (feed workers), the detectors, the
publisher, and (in :mod:`engine.service_config`) the supervisor and the simulated market.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import msgspec

from .service_config import ServiceConfig, SimulateConfig

__all__ = [
    "EMBEDDED_REDIS",
    "KERNELS",
    "Config",
    "ConfigError",
    "ConnectionConfig",
    "DemoConfig",
    "DetectorsConfig",
    "EngineConfig",
    "ExchangeConfig",
    "ExchangesConfig",
    "PublisherConfig",
    "ServiceConfig",
    "SimulateConfig",
    "SymbolConfig",
    "SymbolThresholds",
    "configured_names",
    "enabled_exchanges",
    "load_config",
    "symbol_names",
]


class ConfigError(Exception):
    """A configuration file is missing, malformed or invalid; the message names file and key."""


class EngineConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``[engine]``: process-wide settings."""

    instance: str = "demo"


class DemoConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``[demo]``: the two-process bus demonstration that ``microstream run`` performs."""

    rate_per_s: int = 10_000
    duration_s: float = 5.0
    ring_capacity: int = 65_536

    def __post_init__(self) -> None:
        if self.rate_per_s <= 0:
            raise ValueError("rate_per_s must be > 0")
        if self.duration_s <= 0:
            raise ValueError("duration_s must be > 0")
        cap = self.ring_capacity
        if cap < 2 or cap & (cap - 1):
            raise ValueError(f"ring_capacity {cap} is not a power of two ≥ 2")


class SymbolConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One instrument: exchange-native name, market and streams (empty: all the market has)."""

    symbol: str
    market: str = "linear"
    streams: tuple[str, ...] = ()
    contract_size: float = 1.0   # base units per contract (OKX ctVal); 1 for linear USDT


class ConnectionConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Reconnect backoff and watchdogs of every connection of an exchange (seconds)."""

    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    stale_after_s: float = 30.0
    handshake_timeout_s: float = 10.0
    overlap_s: float = 2.0
    healthy_after_s: float = 10.0

    def __post_init__(self) -> None:
        for name in self.__struct_fields__:
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0")
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError("backoff_max_s must be ≥ backoff_initial_s")


class ExchangeConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``[exchanges.<name>]``: one feed worker process."""

    enabled: bool = False
    cpu: int = -1                       # CPU to pin the worker to; -1: no pinning
    symbols: tuple[SymbolConfig, ...] = ()
    urls: dict[str, str] = {}           # endpoint overrides (the venue in tests and demos)
    options: dict[str, int | float | str] = {}  # exchange-specific feed options
    ring_capacity: int = 65_536         # records per ring (power of two)
    book_depth: int = 20                # levels per side in book records
    book_capacity: int = 8_192          # preallocated levels per book side
    full_snapshot_interval_s: float = 1.0   # full-depth snapshot for recovering consumers
    open_interest_poll_s: float = 5.0   # Binance USD-M REST poll
    rest_weight_per_min: int = 1_200    # REST weight budget (Binance reports usage)
    silent_after_s: float = 10.0        # a LIVE book with no message this long turns STALE
    # channel name -> seconds without a frame before it is flagged silent (0: never); names:
    # book, bbo, trades, mark, funding, ticker, open_interest, liquidations
    channel_silence_s: dict[str, float] = {}
    resync_retry_s: float = 30.0        # a book still resyncing after this asks again
    connection: ConnectionConfig = ConnectionConfig()

    def __post_init__(self) -> None:
        cap = self.ring_capacity
        if cap < 1024 or cap & (cap - 1):
            raise ValueError(f"ring_capacity {cap} is not a power of two ≥ 1024")
        if cap < 2 * self.book_capacity:
            raise ValueError(f"ring_capacity {cap} must hold a full-depth snapshot: at least "
                             f"2 × book_capacity = {2 * self.book_capacity}")
        if not 1 <= self.book_depth <= 255:
            raise ValueError("book_depth must be in 1..255")
        for name in ("full_snapshot_interval_s", "open_interest_poll_s", "silent_after_s",
                     "rest_weight_per_min", "book_capacity", "resync_retry_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0")
        if self.cpu < -1:
            raise ValueError("cpu must be -1 (no pinning) or a CPU number")
        names = [(s.market, s.symbol) for s in self.symbols]
        if len(set(names)) != len(names):
            raise ValueError("a symbol is listed twice for the same market")
        if self.enabled and not self.symbols:
            raise ValueError("an enabled exchange needs at least one symbol")


class SymbolThresholds(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Per-symbol overrides of ``[detectors]`` notional thresholds (unset: the default)."""

    whale_min_usd: float | None = None
    whale_burst_usd: float | None = None
    liquidation_min_usd: float | None = None
    cascade_usd: float | None = None
    spoof_min_usd: float | None = None
    iceberg_min_usd: float | None = None

    def __post_init__(self) -> None:
        for name in self.__struct_fields__:
            value = getattr(self, name)
            if value is not None and not value >= 0:
                raise ValueError(f"{name} must be ≥ 0 (0 disables)")


KERNELS = ("cvd", "candles", "stats24h", "whale", "price_moves", "spoofing", "iceberg",
           "book_state", "imbalance", "heatmap", "liquidations", "open_interest", "funding")


class DetectorsConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``[detectors]``: the detector process (notional thresholds in quote currency)."""

    enabled: bool = False
    kernels: tuple[str, ...] = KERNELS     # which kernels run (names: engine.config.KERNELS)
    exchanges: tuple[str, ...] = ()        # whose rings to read (empty: every enabled one)
    cpu: int = -1                          # CPU to pin the process to; -1: no pinning
    events_ring_capacity: int = 65_536     # records in the events ring (power of two)
    idle_wait_us: int = 1_000              # idle: park on every ring at once this long
    batch_window_us: int = 0               # busy: one wake-up per window, not per commit
    analytics_interval_ms: int = 100       # refresh of the analytics latest tables
    whale_min_usd: float = 1_000_000.0     # one trade at least this: WHALE_TRADE (0: off)
    whale_burst_usd: float = 5_000_000.0   # same-side run reaching this: WHALE_BURST (0: off)
    whale_burst_window_s: float = 1.0
    liquidation_min_usd: float = 100_000.0
    cascade_usd: float = 2_000_000.0
    cascade_window_s: float = 60.0
    cascade_min_slots: int = 3
    imbalance_levels: int = 10
    imbalance_decay: float = 1.0
    heatmap_zones: int = 20                # heatmap zones per side, outward from the mid
    heatmap_zone_bps: float = 5.0          # zone width: bps of the symbol's first mid
    spoof_min_usd: float = 250_000.0       # a level this large near the touch, pulled: SPOOF
    spoof_near_bps: float = 10.0           # "near": within this of its side's best price
    spoof_size_ratio: float = 5.0          # and this many times the side's mean level size
    spoof_max_life_s: float = 5.0          # pulled within this long of appearing
    iceberg_min_usd: float = 250_000.0     # traded at a refilling touch price: ICEBERG
    iceberg_traded_ratio: float = 5.0      # traded ≥ this × the largest size it showed
    iceberg_min_refills: int = 3           # and the shown size went back up this often
    # "exchange:SYMBOL" (the latest-table name, SYMBOL@market if listed twice) -> overrides
    symbols: dict[str, SymbolThresholds] = {}

    def __post_init__(self) -> None:
        cap = self.events_ring_capacity
        if cap < 1024 or cap & (cap - 1):
            raise ValueError(f"events_ring_capacity {cap} is not a power of two ≥ 1024")
        for name in ("whale_min_usd", "whale_burst_usd", "liquidation_min_usd", "cascade_usd",
                     "idle_wait_us", "batch_window_us", "spoof_min_usd", "iceberg_min_usd"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be ≥ 0")
        if self.batch_window_us > self.idle_wait_us:
            raise ValueError(f"batch_window_us {self.batch_window_us} exceeds idle_wait_us "
                             f"{self.idle_wait_us} (a window's sleep ends at idle_wait_us)")
        for name in ("analytics_interval_ms", "whale_burst_window_s", "cascade_window_s",
                     "cascade_min_slots",
                     "imbalance_levels", "heatmap_zones", "heatmap_zone_bps", "spoof_near_bps",
                     "spoof_size_ratio", "spoof_max_life_s", "iceberg_min_refills"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0")
        if not self.iceberg_traded_ratio > 1:
            raise ValueError("iceberg_traded_ratio must be > 1")
        if not 0 < self.imbalance_decay <= 1:
            raise ValueError("imbalance_decay must be in (0, 1]")
        if self.cpu < -1:
            raise ValueError("cpu must be -1 (no pinning) or a CPU number")
        unknown = set(self.kernels) - set(KERNELS)
        if unknown:
            raise ValueError(f"unknown kernels {sorted(unknown)}; known: {', '.join(KERNELS)}")


PUBLISHED_STREAMS = ("trades", "bbo", "book", "liquidations", "funding", "open_interest",
                     "events", "analytics")
PRIORITY_NAMES = ("CRITICAL", "HIGH", "MEDIUM", "LOW")
EMBEDDED_REDIS = "embedded"   # redis_url: `microstream run` starts a private redis-server


class PublisherConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``[publisher]``: the process that drains the bus into Redis (README "Publisher")."""

    enabled: bool = False
    cpu: int = -1                          # CPU to pin the process to; -1: no pinning
    redis_url: str = "redis://127.0.0.1:6379/0"   # or unix:///path/to/redis.sock[?db=N],
                                                  # or "embedded" (a private redis-server)
    encoding: str = "json"                 # payloads: "json" or "msgpack"
    exchanges: tuple[str, ...] = ()        # whose rings to drain (empty: every enabled one)
    streams: tuple[str, ...] = PUBLISHED_STREAMS   # which bus streams go to Redis
    # surfaces, by event type ("*": every type): PUBLISH, latest:* keys, XADD streams
    publish: tuple[str, ...] = ("*",)
    latest: tuple[str, ...] = ("trade", "bbo", "orderbook", "funding", "open_interest", "cvd",
                               "stats_24h", "imbalance", "walls", "open_interest_delta",
                               "funding_summary", "book_state", "regime")
    xadd: tuple[str, ...] = ("whale_alert", "whale_burst", "liquidation_cascade",
                             "liquidation_alert", "book_state", "book_crossed",
                             "channel_silent", "spoof", "iceberg")
    latest_ttl_ms: int = 5_000             # PX of latest:* keys (the staleness contract)
    xadd_maxlen: int = 10_000              # MAXLEN ~ of the streams
    priorities: dict[str, str] = {}        # event type → CRITICAL/HIGH/MEDIUM/LOW overrides
    critical_buffer: int = 100_000         # queue capacities (messages) per class
    high_queue: int = 50_000
    medium_queue: int = 20_000
    low_queue: int = 10_000
    conflate_fraction: float = 0.5         # MEDIUM/LOW conflate from this fill on
    batch_max: int = 512                   # messages written per pipeline batch
    max_inflight: int = 20_000             # unconfirmed messages before writing pauses
    retry_initial_ms: float = 10.0         # an error reply: retried with capped backoff
    retry_max_ms: float = 1_000.0
    retry_attempts: int = 5
    reconnect_initial_ms: float = 50.0     # lost connection: capped backoff with jitter
    reconnect_max_ms: float = 2_000.0
    connect_timeout_ms: float = 500.0
    breaker_window_ms: int = 1_000         # sliding window of round-trip times
    breaker_rtt_p99_ms: float = 5.0        # open when the window's p99 exceeds this
    breaker_queue_age_ms: float = 200.0    # or the oldest queued/unconfirmed is this old
    breaker_cooldown_ms: int = 1_000       # open → half-open after this
    breaker_probe_messages: int = 50       # half-open: this many confirmed in time → closed
    breaker_open_critical_per_s: float = 2_000.0   # CRITICAL rate while open
    analytics_interval_ms: int = 100       # analytics tables are read this often
    spin_us: int = 0                       # idle: keep polling this long, then park (a spin
                                           # only pays with a CPU of its own: README)
    idle_wait_us: int = 1_000              # idle: park on every ring at once this long
    # at exit, save the newest 1 M messages' latency samples here as .npy (benchmarks; "":
    # never; columns: Publisher.latency_samples)
    latency_samples_file: str = ""

    def __post_init__(self) -> None:
        if self.encoding not in ("json", "msgpack"):
            raise ValueError(f"encoding must be 'json' or 'msgpack', got {self.encoding!r}")
        unknown = set(self.streams) - set(PUBLISHED_STREAMS)
        if unknown:
            raise ValueError(f"unknown streams {sorted(unknown)}; known: "
                             f"{', '.join(PUBLISHED_STREAMS)}")
        for name, value in self.priorities.items():
            if value not in PRIORITY_NAMES:
                raise ValueError(f"priority of {name!r} must be one of "
                                 f"{', '.join(PRIORITY_NAMES)}, got {value!r}")
        for name in ("latest_ttl_ms", "xadd_maxlen", "critical_buffer", "high_queue",
                     "medium_queue", "low_queue", "batch_max", "max_inflight",
                     "retry_initial_ms", "retry_max_ms", "retry_attempts",
                     "reconnect_initial_ms", "reconnect_max_ms", "connect_timeout_ms",
                     "breaker_window_ms", "breaker_rtt_p99_ms", "breaker_queue_age_ms",
                     "breaker_cooldown_ms", "breaker_probe_messages",
                     "breaker_open_critical_per_s", "analytics_interval_ms", "idle_wait_us"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0")
        if not 0 < self.conflate_fraction <= 1:
            raise ValueError("conflate_fraction must be in (0, 1]")
        if self.spin_us < 0:
            raise ValueError("spin_us must be ≥ 0")
        if self.cpu < -1:
            raise ValueError("cpu must be -1 (no pinning) or a CPU number")
        if self.latency_samples_file:
            import os.path

            folder = os.path.dirname(self.latency_samples_file)
            if not os.path.isabs(self.latency_samples_file) or not os.path.isdir(folder):
                raise ValueError(f"latency_samples_file must be an absolute path in an "
                                 f"existing directory, got {self.latency_samples_file!r}")
        if self.redis_url != EMBEDDED_REDIS:
            from workers.publisher.resp import parse_redis_url

            parse_redis_url(self.redis_url)


class ExchangesConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``[exchanges]``: one section per exchange."""

    binance: ExchangeConfig = ExchangeConfig()
    bybit: ExchangeConfig = ExchangeConfig()
    okx: ExchangeConfig = ExchangeConfig()


class Config(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The whole file."""

    engine: EngineConfig = EngineConfig()
    demo: DemoConfig = DemoConfig()
    exchanges: ExchangesConfig = ExchangesConfig()
    detectors: DetectorsConfig = DetectorsConfig()
    publisher: PublisherConfig = PublisherConfig()
    service: ServiceConfig = ServiceConfig()
    simulate: SimulateConfig = SimulateConfig()


def load_config(path: str | Path) -> Config:
    """Read and validate ``path``; raises :class:`ConfigError` naming the file and key path."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        config = msgspec.toml.decode(raw, type=Config)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except msgspec.DecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    from shm import segment_name

    try:
        segment_name(config.engine.instance, "x", "x")
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc} - at `$.engine.instance`") from None
    _check_cpus(path, config)
    _check_exchange_refs(path, config)
    return config


def symbol_names(symbols: Sequence[tuple[str, str]]) -> list[str]:
    """The latest-table name of each ``(symbol, market)`` in order (symbol ids follow the
    config's order): the exchange-native symbol, or ``SYMBOL@market`` for one listed in two
    markets (BTCUSDT spot and USD-M would be ambiguous)."""
    count: dict[str, int] = {}
    for symbol, _ in symbols:
        count[symbol] = count.get(symbol, 0) + 1
    return [symbol if count[symbol] == 1 else f"{symbol}@{market}" for symbol, market in symbols]


def configured_names(cfg: ExchangeConfig) -> list[str]:
    """:func:`symbol_names` of an exchange section, by symbol id."""
    return symbol_names([(s.symbol, s.market) for s in cfg.symbols])


def enabled_exchanges(config: Config, only: Sequence[str] = ()) -> dict[str, list[str]]:
    """The enabled exchanges (those in ``only``, if given) → their symbol names by symbol id
    (what a detector or publisher process follows)."""
    return {name: configured_names(getattr(config.exchanges, name))
            for name in ExchangesConfig.__struct_fields__
            if getattr(config.exchanges, name).enabled and (not only or name in only)}


def _check_exchange_refs(path: Path, config: Config) -> None:
    for where, names in (("detectors", config.detectors.exchanges),
                         ("publisher", config.publisher.exchanges)):
        _check_enabled(path, config, where, names)
    for key in config.detectors.symbols:
        exchange, _, name = key.partition(":")
        cfg = getattr(config.exchanges, exchange, None) if exchange in \
            ExchangesConfig.__struct_fields__ else None
        if cfg is None or name not in configured_names(cfg):
            known = [f"{ex}:{n}" for ex in ExchangesConfig.__struct_fields__
                     for n in configured_names(getattr(config.exchanges, ex))]
            raise ConfigError(f"{path}: unknown symbol {key!r} (known: {', '.join(known)}) - "
                              f"at `$.detectors.symbols`")


def _check_enabled(path: Path, config: Config, where: str, names: Sequence[str]) -> None:
    for name in names:
        section = getattr(config.exchanges, name, None) if name in \
            ExchangesConfig.__struct_fields__ else None
        if section is None or not section.enabled:
            enabled = [n for n in ExchangesConfig.__struct_fields__
                       if getattr(config.exchanges, n).enabled]
            raise ConfigError(f"{path}: exchange {name!r} is not an enabled exchange (enabled: "
                              f"{', '.join(enabled) or 'none'}) - at `$.{where}.exchanges`")


def _check_cpus(path: Path, config: Config) -> None:
    import os

    allowed = os.sched_getaffinity(0)
    sections = [(f"exchanges.{name}", getattr(config.exchanges, name))
                for name in ExchangesConfig.__struct_fields__]
    for where, section in [*sections, ("detectors", config.detectors),
                           ("publisher", config.publisher)]:
        if section.enabled and section.cpu >= 0 and section.cpu not in allowed:
            raise ConfigError(f"{path}: cpu {section.cpu} is not available to this process "
                              f"(allowed: {sorted(allowed)}) - at `$.{where}.cpu`")
