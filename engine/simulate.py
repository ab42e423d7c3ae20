"""The one-command demo's surroundings: local synthetic venues and, when needed, a Redis.

``microstream run --simulate`` works on a machine with no internet and no Redis: each exchange
of ``[simulate]`` gets a local venue serving a seeded synthetic market (looped, on a shared
clock, as a live exchange), the exchange sections are pointed at those venues with the
venue's symbols, and the publisher gets the configured Redis if it answers, else a private
``redis-server`` on a Unix socket (:class:`engine.embedded_redis.EmbeddedRedis`). Everything
else in the file applies unchanged.
"""

from __future__ import annotations

import logging
import socket
import tempfile
from pathlib import Path
from typing import Any

import msgspec

from .config import EMBEDDED_REDIS, Config, ExchangeConfig, SymbolConfig
from .embedded_redis import EmbeddedRedis

__all__ = ["Surroundings", "redis_reachable", "venue_urls"]

log = logging.getLogger("microstream.simulate")

# where each feed takes its endpoints (see workers/exchanges/*: urls_type)
_WS = {"binance": ("futures_ws", ""), "bybit": ("linear_ws", "/v5/public/linear"),
       "okx": ("public_ws", "/ws/v5/public")}
_REST = {"binance": "futures_rest", "okx": "rest"}
# what the synthetic venue does not serve: Bybit's book is one depth (orderbook.50), and
# neither Bybit nor OKX has a level-1 topic (BBO comes from the book for them)
_OPTIONS = {"bybit": {"depth_levels": 50}}
_NO_STREAMS = {"bybit": ("bbo",), "okx": ("bbo",)}


def venue_urls(exchange: str, ws_url: str, rest_url: str) -> dict[str, str]:
    """An exchange section's ``urls`` pointing its feed at a local venue's base URLs."""
    key, path = _WS[exchange]
    urls = {key: ws_url + path}
    if exchange in _REST:
        urls[_REST[exchange]] = rest_url
    return urls


def redis_reachable(url: str, timeout_s: float = 0.3) -> bool:
    """True if a server accepts a connection at ``url`` and answers PING with PONG."""
    from workers.publisher.resp import parse_redis_url

    try:
        address = parse_redis_url(url)
    except ValueError:
        return False
    family = socket.AF_UNIX if address.unix_path else socket.AF_INET
    target: Any = address.unix_path or (address.host, address.port)
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout_s)
            sock.connect(target)
            sock.sendall(b"PING\r\n")
            reply = sock.recv(64)
    except OSError:
        return False
    return reply.startswith((b"+PONG", b"-NOAUTH"))


class Surroundings:
    """Starts what a config needs outside the engine: venues (``simulate``) and an embedded
    Redis (``simulate`` without a reachable Redis, or ``redis_url = "embedded"``).

    ``config`` is the config to run, rewritten to point at them; ``stop`` ends them.
    """

    def __init__(self, config: Config, simulate: bool) -> None:
        self.venues: dict[str, Any] = {}
        self.redis: EmbeddedRedis | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self.config = config
        try:
            if simulate:
                self.config = self._simulate(config)
            self.config = self._redis(self.config, simulate)
        except BaseException:
            self.stop()
            raise

    def _simulate(self, config: Config) -> Config:
        from workers.exchanges.records import FEED_STREAMS
        from workers.venue import start_venue
        from workers.venue.synthetic import synthetic_symbols

        sim = config.simulate
        exchanges = {}
        for name in ("binance", "bybit", "okx"):
            cfg: ExchangeConfig = getattr(config.exchanges, name)
            if name not in sim.exchanges:
                exchanges[name] = msgspec.structs.replace(cfg, enabled=False)
                continue
            synthetic: dict[str, Any] = {"symbols": sim.symbols, "rate": sim.rate_hz,
                                         "seconds": sim.timeline_s, "seed": sim.seed}
            if sim.scenarios:
                synthetic["scenarios"] = ",".join(sim.scenarios)
            venue = self.venues[name] = start_venue(name, [], synthetic=synthetic, loop=True,
                                                    shared_clock=True)
            urls = venue_urls(name, venue.ws_url, venue.rest_url)
            streams = tuple(s for s in FEED_STREAMS if s not in _NO_STREAMS.get(name, ()))
            symbols = tuple(SymbolConfig(symbol=s, market="linear", streams=streams)
                            for s in synthetic_symbols(name, sim.symbols))
            exchanges[name] = msgspec.structs.replace(
                cfg, enabled=True, symbols=symbols, urls=urls,
                options={**cfg.options, **_OPTIONS.get(name, {})})
            log.info("simulate: %s venue at %s", name, venue.ws_url)
        detectors = msgspec.structs.replace(
            config.detectors, exchanges=(), symbols={}, whale_min_usd=sim.whale_min_usd,
            whale_burst_usd=sim.whale_burst_usd)
        publisher = msgspec.structs.replace(config.publisher, exchanges=())
        return msgspec.structs.replace(
            config, exchanges=msgspec.structs.replace(config.exchanges, **exchanges),
            detectors=detectors, publisher=publisher)

    def _redis(self, config: Config, simulate: bool) -> Config:
        url = config.publisher.redis_url
        if not config.publisher.enabled:
            return config
        if url != EMBEDDED_REDIS and (not simulate or redis_reachable(url)):
            return config
        if url != EMBEDDED_REDIS:
            log.info("simulate: no Redis answers at %s: starting an embedded one", url)
        self._dir = tempfile.TemporaryDirectory(prefix="microstream-redis-")
        self.redis = EmbeddedRedis(Path(self._dir.name)).start()
        publisher = msgspec.structs.replace(config.publisher, redis_url=self.redis.url)
        return msgspec.structs.replace(config, publisher=publisher)

    def stop(self) -> None:
        """Stop the venues and the embedded Redis (idempotent)."""
        for venue in self.venues.values():
            venue.stop()
        self.venues.clear()
        if self.redis is not None:
            self.redis.stop()
            self.redis = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def __enter__(self) -> Surroundings:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
