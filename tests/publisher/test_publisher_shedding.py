"""The publisher loop in this process while its breaker is OPEN: a feed ring's records of a
refused class are dropped and counted before they are encoded (the CPU goes to CRITICAL),
and a class configured CRITICAL is still encoded and queued. No Redis is needed: the loop
ingests whether or not its link is up."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import shm
from engine.config import PublisherConfig
from shm.layout import Priority
from workers.publisher.breaker import BreakerState
from workers.publisher.publisher import Publisher
from workers.publisher.queues import Drop

H, L, C = int(Priority.HIGH), int(Priority.LOW), int(Priority.CRITICAL)


@pytest.fixture
def rings(instance: str) -> Iterator[tuple[shm.Writer, shm.Writer]]:
    trades = shm.Writer(shm.segment_name(instance, "binance", "trades"), shm.TRADE, 1 << 10)
    book = shm.Writer(shm.segment_name(instance, "binance", "book"), shm.BOOK, 1 << 10)
    yield trades, book
    trades.close(unlink=True)
    book.close(unlink=True)


def _publisher(instance: str, tmp_path: Path, **overrides: object) -> Publisher:
    cfg = PublisherConfig(redis_url=f"unix://{tmp_path / 'no-redis.sock'}",
                          streams=("trades", "book"), **overrides)  # type: ignore[arg-type]
    return Publisher(instance, {"binance": ["BTCUSDT"]}, cfg, start="oldest")


def _commit(trades: shm.Writer, book: shm.Writer, n_trades: int, n_books: int) -> None:
    for i in range(n_trades):
        rec = np.zeros(1, shm.TRADE)[0]
        rec["exchange"], rec["market"], rec["price"], rec["qty"], rec["side"] = 1, 2, 100.0, 1.0, 1
        rec["trade_id"] = i
        trades.commit(rec)
    for i in range(n_books):
        rec = np.zeros(1, shm.BOOK)[0]
        rec["exchange"], rec["market"], rec["state"], rec["update_id"] = 1, 2, 2, i
        rec["n_bids"], rec["bid_px"][0], rec["bid_qty"][0] = 1, 99.5, 2.0
        book.commit(rec)


def _open(pub: Publisher) -> None:
    """Open the breaker through its own rule: the oldest queued message is too old."""
    state = pub.breaker.tick(pub.clock(), queue_age_ns=10**12, inflight_age_ns=0)
    assert state == BreakerState.OPEN


def _ingest_all(pub: Publisher, expected: int) -> None:
    taken = 0
    for _ in range(20):   # a ring not attached yet is found after its retry delay
        taken += pub.ingest()
        if taken == expected:
            return
        pub.rings.wait(0.05)
    assert taken == expected


def test_open_breaker_drops_refused_rings_unencoded_and_counts_them(
        instance: str, tmp_path: Path, rings: tuple[shm.Writer, shm.Writer],
        monkeypatch: pytest.MonkeyPatch) -> None:
    pub = _publisher(instance, tmp_path)
    try:
        encoded: list[str] = []
        real = pub.encoders["binance"].records

        def spy(stream: str, records: np.ndarray):  # type: ignore[no-untyped-def]
            encoded.append(stream)
            return real(stream, records)

        monkeypatch.setattr(pub.encoders["binance"], "records", spy)
        _open(pub)
        _commit(*rings, n_trades=10, n_books=5)
        _ingest_all(pub, 15)
        assert encoded == []
        assert len(pub.queues) == 0
        drops = pub.queues.drops[:, Drop.BREAKER_OPEN]
        assert (drops[H], drops[L], drops[C]) == (10, 5, 0)
        assert pub.counts["records"] == 15
    finally:
        pub.close()


def test_open_breaker_still_encodes_and_queues_a_class_configured_critical(
        instance: str, tmp_path: Path, rings: tuple[shm.Writer, shm.Writer]) -> None:
    pub = _publisher(instance, tmp_path, priorities={"trade": "CRITICAL"})
    try:
        _open(pub)
        _commit(*rings, n_trades=10, n_books=5)
        _ingest_all(pub, 15)
        queued = pub.queues.peek(C)
        assert queued is not None and queued.count == 10
        assert queued.data.count(b"PUBLISH") == 10 and b'"price":100.0' in queued.data
        drops = pub.queues.drops[:, Drop.BREAKER_OPEN]
        assert (drops[C], drops[H], drops[L]) == (0, 0, 5)
    finally:
        pub.close()


def test_closed_breaker_encodes_every_record(
        instance: str, tmp_path: Path, rings: tuple[shm.Writer, shm.Writer]) -> None:
    pub = _publisher(instance, tmp_path)
    try:
        _commit(*rings, n_trades=10, n_books=5)
        _ingest_all(pub, 15)
        assert pub.queues.drops.sum() == 0
        high = pub.queues.peek(H)
        assert high is not None and high.count == 10
        assert len(pub.queues) == 15   # in records: one run of 10 trades, five books
    finally:
        pub.close()
