"""``config.toml``, decoded with msgspec into frozen structs (unknown keys are errors).

Only what exists is configurable: the bus instance and, until the feed workers arrive, the
``run`` demo. Later issues add the exchange, detector, publisher and service sections.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

__all__ = ["Config", "ConfigError", "DemoConfig", "EngineConfig", "load_config"]


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


class Config(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The whole file."""

    engine: EngineConfig = EngineConfig()
    demo: DemoConfig = DemoConfig()


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
    return config
