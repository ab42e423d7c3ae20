"""``config.toml``, decoded with msgspec into frozen structs (unknown keys are errors).

Only what exists is configurable: the bus instance and, until the feed workers arrive, the
``run`` demo. Later issues add the exchange, detector, publisher and service sections.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

__all__ = [
    "Config",
    "ConfigError",
    "ConnectionConfig",
    "DemoConfig",
    "EngineConfig",
    "ExchangeConfig",
    "ExchangesConfig",
    "SymbolConfig",
    "load_config",
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
    return config


def _check_cpus(path: Path, config: Config) -> None:
    import os

    allowed = os.sched_getaffinity(0)
    for name in ExchangesConfig.__struct_fields__:
        ex = getattr(config.exchanges, name)
        if ex.enabled and ex.cpu >= 0 and ex.cpu not in allowed:
            raise ConfigError(f"{path}: cpu {ex.cpu} is not available to this process "
                              f"(allowed: {sorted(allowed)}) - at `$.exchanges.{name}.cpu`")
