"""The naive pipeline the benchmarks compare the engine against (benchmarks/naive_pipeline.py)
does the same job, correctly: against the three synthetic venues and a real Redis, a plain
redis-py subscriber sees trades, Binance BBOs and top-20 books of every symbol, with the
documented payloads, sorted and never crossed; each Binance book equals the bookTicker the venue
sent for the same update id (both come from the same book state). With injected drops and
corrupt frames the pipeline resyncs and keeps those invariants.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import redis

from benchmarks import harness, naive_pipeline
from engine.embedded_redis import EmbeddedRedis
from workers.venue import VenueProcess, start_venue
from workers.venue.synthetic import synthetic_symbols

EXCHANGES = ("binance", "bybit", "okx")
BASE = {"exchange", "symbol", "event_type", "timestamp", "seq", "ts_recv_ns"}
KEYS = {
    "trade": BASE | {"price", "quantity", "side", "trade_id"},
    "bbo": BASE | {"bid_price", "bid_quantity", "ask_price", "ask_quantity", "update_id"},
    "orderbook": BASE | {"last_update_id", "bids", "asks", "state"},
}
TRADE_ID_TYPE = {"binance": int, "bybit": str, "okx": int}


def start_venues(faults: str = "") -> dict[str, VenueProcess]:
    started: dict[str, VenueProcess] = {}
    try:
        for ex in EXCHANGES:
            started[ex] = start_venue(ex, [], faults=faults, loop=True, shared_clock=True,
                                      synthetic={"symbols": 2, "rate": 300, "seconds": 30,
                                                 "seed": 7})
    except BaseException:
        for venue in started.values():
            venue.stop()
        raise
    return started


class Subscriber(threading.Thread):
    """``PSUBSCRIBE *`` with plain redis-py, keeping ``(channel, payload)`` in arrival order."""

    def __init__(self, server: EmbeddedRedis) -> None:
        super().__init__(daemon=True)
        self.client = redis.Redis(unix_socket_path=str(server.socket_path))
        self.pubsub = self.client.pubsub()
        self.pubsub.psubscribe("*")
        reply = self.pubsub.get_message(timeout=5)
        assert reply is not None and reply["type"] == "psubscribe"
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            msg = self.pubsub.get_message(timeout=0.1)
            if msg is not None and msg["type"] == "pmessage":
                self.messages.append((msg["channel"].decode(), json.loads(msg["data"])))

    def stop(self, expected: int, timeout_s: float = 5.0) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.messages) < expected and time.monotonic() < deadline:
            time.sleep(0.05)
        self.done.set()
        self.join(timeout=5)
        self.pubsub.close()
        self.client.close()


def run_pipeline(venues: dict[str, VenueProcess], server: EmbeddedRedis, seconds: float,
                 symbols: dict[str, list[str]] | None = None,
                 options: dict[str, dict[str, Any]] | None = None
                 ) -> tuple[dict[str, Any], list[tuple[str, dict[str, Any]]]]:
    subscriber = Subscriber(server)
    subscriber.start()
    ready = threading.Event()
    counters: dict[str, Any] = {"published": 0}
    try:
        counters = asyncio.run(naive_pipeline.run(
            {ex: (v.ws_url, v.rest_url) for ex, v in venues.items()},
            symbols or {ex: synthetic_symbols(ex, 2) for ex in venues}, server.url, seconds,
            ready=ready.set, options=options))
    finally:
        subscriber.stop(counters["published"])
    assert ready.is_set()
    return counters, subscriber.messages


def check_messages(messages: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """Every payload has its type's fields, sorted uncrossed books; Binance books equal the
    bookTicker of the same update id. Returns ``by[(exchange, symbol, type)] -> payloads``."""
    by: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for channel, p in messages:
        exchange, symbol, kind = channel.split(":")
        assert (p["exchange"], p["symbol"], p["event_type"]) == (exchange, symbol, kind)
        assert set(p) == KEYS[kind], channel
        assert isinstance(p["timestamp"], int) and isinstance(p["ts_recv_ns"], int)
        by[exchange, symbol, kind].append(p)
    for ex in EXCHANGES:
        for sym in (s.lower() for s in synthetic_symbols(ex, 2)):
            trades, books = by[ex, sym, "trade"], by[ex, sym, "orderbook"]
            assert len(trades) > 20 and len(books) > 50, (ex, sym)
            assert bool(by[ex, sym, "bbo"]) == (ex == "binance"), (ex, sym)
            for t in trades:
                assert t["side"] in ("BUY", "SELL") and t["price"] > 0 and t["quantity"] > 0
                assert isinstance(t["trade_id"], TRADE_ID_TYPE[ex])
            for b in books:
                bids, asks = b["bids"], b["asks"]
                assert b["state"] == "LIVE" and 0 < len(bids) <= 20 and 0 < len(asks) <= 20
                assert [p for p, _ in bids] == sorted((p for p, _ in bids), reverse=True)
                assert [p for p, _ in asks] == sorted(p for p, _ in asks)
                assert len({p for p, _ in bids}) == len(bids) and bids[0][0] < asks[0][0]
                assert all(q > 0 for _, q in bids + asks)
    # the synthetic venue sends each depth event and then a bookTicker of the same book state
    # with the same u: the pipeline's book after that event must have exactly those best levels
    matched = 0
    for sym in (s.lower() for s in synthetic_symbols("binance", 2)):
        tickers = {t["update_id"]: t for t in by["binance", sym, "bbo"]}
        for b in by["binance", sym, "orderbook"]:
            t = tickers.get(b["last_update_id"])
            if t is not None:
                matched += 1
                assert b["bids"][0] == [t["bid_price"], t["bid_quantity"]], (sym, b, t)
                assert b["asks"][0] == [t["ask_price"], t["ask_quantity"]], (sym, b, t)
    assert matched > 100
    return by


def test_naive_pipeline_does_the_job(redis_server: EmbeddedRedis) -> None:
    venues = start_venues()
    try:
        counters, messages = run_pipeline(venues, redis_server, 4.0)
    finally:
        for venue in venues.values():
            venue.stop()
    assert len(messages) == counters["published"]  # every PUBLISH reached the subscriber
    assert counters["resyncs"] == counters["checksum_failures"] == counters["malformed"] == 0
    for ex in EXCHANGES:
        c = counters["per_exchange"][ex]
        assert c["frames"] > 500 and c["trades"] > 50 and c["book_updates"] > 100, (ex, c)
    by = check_messages(messages)
    # one connection per exchange publishes its trades in order: seq counts them without gaps
    for ex in EXCHANGES:
        seqs = [p["seq"] for ch, p in messages if ch.startswith(ex) and ch.endswith(":trade")]
        assert seqs == list(range(1, counters["per_exchange"][ex]["trades"] + 1))
    # Bybit u and OKX seqId only move forward within a run with no resync
    for ex in ("bybit", "okx"):
        for sym in (s.lower() for s in synthetic_symbols(ex, 2)):
            ids = [b["last_update_id"] for b in by[ex, sym, "orderbook"]]
            assert ids == sorted(set(ids))


def test_naive_pipeline_resyncs_after_gaps_and_skips_garbage(tmp_path: Path) -> None:
    venues = start_venues("drop=0.01,corrupt=0.003,seed=3")
    try:
        with EmbeddedRedis(tmp_path / "r") as server:
            counters, messages = run_pipeline(venues, server, 4.0)
    finally:
        for venue in venues.values():
            venue.stop()
    for ex in EXCHANGES:
        c = counters["per_exchange"][ex]
        assert c["resyncs"] > 0 and c["malformed"] > 0, (ex, c)
    check_messages(messages)


def test_naive_pipeline_keeps_the_books_of_the_real_recordings(redis_server: EmbeddedRedis
                                                               ) -> None:
    """The compare suite's recorded market: Binance ``@depth@0ms``, Bybit ``orderbook.200``
    and OKX's 2022 ``books``, which carry no seqId (the checksum alone checks them, as in the
    engine; before, every OKX update was counted malformed and no OKX book was published)."""
    load = harness.Load(3000, 0, recorded=True)
    assert load.options["binance"]["depth_interval_ms"] == 0
    assert load.options["bybit"]["depth_levels"] == 200
    with load:
        counters, messages = run_pipeline(load.venues, redis_server, 4.0, load.symbols,
                                          load.options)
    assert counters["malformed"] == counters["checksum_failures"] == 0, counters
    for ex in EXCHANGES:
        c = counters["per_exchange"][ex]
        assert c["trades"] > 0 and c["book_updates"] > 0, (ex, c)
    books = 0
    for channel, p in messages:
        kind = channel.rsplit(":", 1)[1]
        assert set(p) == KEYS[kind], channel
        if kind == "orderbook":
            books += 1
            bids, asks = [b[0] for b in p["bids"]], [a[0] for a in p["asks"]]
            assert bids == sorted(bids, reverse=True) and asks == sorted(asks), channel
            assert not bids or not asks or bids[0] < asks[0], channel
    assert books == counters["book_updates"]


def test_malformed_frames_are_counted_not_fatal() -> None:
    feed = naive_pipeline.OkxFeed("ws://unused", "", ["BTC-USDT-SWAP"], None)  # type: ignore
    for frame in ("{not json", "[1, 2]", '{"arg": {"channel": "books"}}', "pong",
                  '{"event": "subscribe", "arg": {}}'):
        asyncio.run(feed.on_frame(frame, 0))
    assert feed.stats["frames"] == 5 and feed.stats["malformed"] == 3
