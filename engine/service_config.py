"""``[service]`` and ``[simulate]``: the supervisor's settings and the one-command demo's market.

Kept apart from :mod:`engine.config` (the worker sections) so each module stays one concept;
both structs are fields of :class:`engine.config.Config`.
"""

from __future__ import annotations

import msgspec

__all__ = ["READY_WHEN", "ServiceConfig", "SimulateConfig"]

READY_WHEN = ("connected", "started")


class ServiceConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``[service]``: how ``microstream run`` supervises its children and reports health."""

    http_host: str = "127.0.0.1"           # /metrics, /healthz, /readyz
    http_port: int = 9464                  # 0: any free port (printed at start); -1: no HTTP
    heartbeat_timeout_s: float = 5.0       # a started child silent this long is killed
    startup_timeout_s: float = 180.0       # first heartbeat within this (numba compiles)
    restart_backoff_initial_s: float = 0.5  # restart delay: initial × 2^(failures-1), capped
    restart_backoff_max_s: float = 30.0
    healthy_after_s: float = 30.0          # a child up this long resets its backoff
    crash_loop_restarts: int = 5           # more restarts than this of one child within
    crash_loop_window_s: float = 60.0      # the window: the service stops and exits 1
    stop_timeout_s: float = 10.0           # per shutdown stage, then SIGKILL
    drain_timeout_s: float = 5.0           # the publisher's drain at shutdown
    ready_when: str = "connected"          # "connected": every feed connected, kernels warm,
                                           # Redis connected; "started": every child running
    status_interval_s: float = 5.0         # STATUS= to systemd and the console line

    def __post_init__(self) -> None:
        if self.ready_when not in READY_WHEN:
            raise ValueError(f"ready_when must be one of {', '.join(READY_WHEN)}, "
                             f"got {self.ready_when!r}")
        if not -1 <= self.http_port <= 65535:
            raise ValueError(f"http_port {self.http_port} is not a port, 0 (any) or -1 (off)")
        for name in ("heartbeat_timeout_s", "startup_timeout_s", "restart_backoff_initial_s",
                     "restart_backoff_max_s", "healthy_after_s", "crash_loop_restarts",
                     "crash_loop_window_s", "stop_timeout_s", "drain_timeout_s",
                     "status_interval_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0")
        if self.restart_backoff_max_s < self.restart_backoff_initial_s:
            raise ValueError("restart_backoff_max_s must be ≥ restart_backoff_initial_s")


class SimulateConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``[simulate]``: the synthetic market of ``microstream run --simulate``.

    Each exchange gets a local venue (``microstream venue --synthetic --loop --shared-clock``)
    with ``symbols`` symbols (BTC, ETH, SOL, ... against USDT; OKX as ``-USDT-SWAP``); the
    workers' symbols and URLs are replaced by the venue's, everything else in the file applies.
    """

    exchanges: tuple[str, ...] = ("binance", "bybit", "okx")
    symbols: int = 2                       # per exchange, 1..10
    rate_hz: float = 200.0                 # market events per second per exchange
    timeline_s: float = 120.0              # generated timeline, replayed in a loop
    seed: int = 7
    scenarios: tuple[str, ...] = ("spoof", "iceberg")
    # the synthetic market trades small sizes: alerts at these notionals (USD) instead
    whale_min_usd: float = 20_000.0
    whale_burst_usd: float = 100_000.0

    def __post_init__(self) -> None:
        unknown = set(self.exchanges) - {"binance", "bybit", "okx"}
        if unknown or not self.exchanges:
            raise ValueError(f"exchanges must be a non-empty subset of binance, bybit, okx; "
                             f"unknown: {sorted(unknown)}")
        if not 1 <= self.symbols <= 10:
            raise ValueError(f"symbols must be 1..10, not {self.symbols}")
        for name in ("rate_hz", "timeline_s", "whale_min_usd", "whale_burst_usd"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0")
        bad = set(self.scenarios) - {"spoof", "iceberg"}
        if bad:
            raise ValueError(f"unknown scenarios {sorted(bad)}; known: spoof, iceberg")
