"""The publisher's connection setup against a real redis-server: AUTH/SELECT are pipelined
with nothing behind them, so a refused SELECT cannot send data to the wrong database."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import redis

import shm
from engine.config import PublisherConfig
from engine.embedded_redis import EmbeddedRedis
from workers.publisher.publisher import Publisher


def _publisher(instance: str, url: str, **settings: Any) -> tuple[Publisher, shm.Writer]:
    ring = shm.Writer(shm.segment_name(instance, "binance", "trades"), shm.TRADE, 1 << 12)
    cfg = PublisherConfig(redis_url=url, streams=("trades",), latest=("trade",),
                          reconnect_initial_ms=5.0, reconnect_max_ms=20.0, **settings)
    return Publisher(instance, {"binance": ["BTCUSDT"]}, cfg), ring


def _trade(ring: shm.Writer, n: int) -> None:
    rec = np.zeros(1, shm.TRADE)[0]
    rec["exchange"], rec["market"], rec["price"], rec["qty"], rec["side"] = 1, 2, 100.0, 1.0, 1
    rec["trade_id"] = n
    ring.commit(rec)


def _run(pub: Publisher, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pub.step(0.001)


def test_a_refused_select_writes_nothing_and_keeps_the_messages(
        instance: str, redis_server: EmbeddedRedis) -> None:
    # redis-server has 16 databases: SELECT 99 is refused on every connect
    pub, ring = _publisher(instance, f"unix://{redis_server.socket_path}?db=99")
    client = redis.Redis(unix_socket_path=str(redis_server.socket_path))
    try:
        _run(pub, 0.1)   # attach the ring, first connect attempts
        for n in range(20):
            _trade(ring, n)
        _run(pub, 0.5)
        assert pub.link.setup_errors >= 2, "every connect is refused (and retried)"
        assert client.keys("*") == [], "nothing may land in database 0"
        assert int(pub.confirmed.sum()) == 0
        # every record is still queued or counted as dropped (the breaker opens on their age)
        assert sum(pub.queues.depths()) + int(pub.queues.drops.sum()) == 20
    finally:
        pub.close()
        ring.close(unlink=True)
        client.close()


def test_select_then_data_in_that_database(instance: str,
                                           redis_server: EmbeddedRedis) -> None:
    # a queue-age breaker this host's stalls cannot open: the trades must all arrive
    pub, ring = _publisher(instance, f"unix://{redis_server.socket_path}?db=3",
                           breaker_queue_age_ms=10_000.0)
    db0 = redis.Redis(unix_socket_path=str(redis_server.socket_path))
    db3 = redis.Redis(unix_socket_path=str(redis_server.socket_path), db=3)
    try:
        _run(pub, 0.1)
        for n in range(5):
            _trade(ring, n)
        end = time.monotonic() + 10   # until confirmed, not a fixed time: a slow host stalls
        while int(pub.confirmed.sum()) < 5 and time.monotonic() < end:
            pub.step(0.001)
        _run(pub, 0.1)   # nothing more may come
        assert int(pub.confirmed.sum()) == 5
        assert db3.keys("*") == [b"latest:binance:btcusdt:trade"]
        assert db0.keys("*") == []
        assert pub.link.ready and pub.link.setup_errors == 0
    finally:
        pub.close()
        ring.close(unlink=True)
        db0.close()
        db3.close()
