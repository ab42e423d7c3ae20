"""``microstream publish`` against a real redis-server, each its own process; this test
process writes the bus rings (as feed workers and detectors would) and subscribes with plain
redis-py.

Covered: channel names and payloads of each surface (PUBLISH, latest keys with their TTL,
XADD streams), keys expiring once publishing stops, the breaker opening on a stalled Redis
(SIGSTOP) with LOW/MEDIUM shed and counted while CRITICAL still arrives, and a Redis killed
and restarted under load (reconnect, CRITICAL delivered, no crash)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
import redis

import shm
from engine.embedded_redis import EmbeddedRedis
from shm.layout import Priority
from workers.detectors.events import EventKind

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workers"))
from feed_live import wait_for

CONFIG = """
[engine]
instance = "{instance}"

[exchanges.binance]
enabled = true
symbols = [{{ symbol = "BTCUSDT", market = "linear" }}, {{ symbol = "ETHUSDT", market = "linear" }}]

[publisher]
enabled = true
redis_url = "{url}"
latest_ttl_ms = {ttl}
latency_samples_file = "{samples}"
breaker_queue_age_ms = 50.0
breaker_rtt_p99_ms = 20.0
breaker_cooldown_ms = 300
breaker_probe_messages = 10
reconnect_initial_ms = 20.0
reconnect_max_ms = 200.0
"""


class Bus:
    """The rings a feed worker and the detectors would write, written by this process."""

    def __init__(self, instance: str) -> None:
        def ring(owner: str, stream: str, dtype: np.dtype) -> shm.Writer:
            return shm.Writer(shm.segment_name(instance, owner, stream), dtype, 1 << 16)

        self.trades = ring("binance", "trades", shm.TRADE)
        self.book = ring("binance", "book", shm.BOOK)
        self.events = ring("detectors", "events", shm.EVENT)
        self.n = 0

    def trade(self, sid: int = 0) -> float:
        """Commit one trade; returns how long the commit took (s)."""
        rec = np.zeros(1, shm.TRADE)[0]
        rec["symbol_id"], rec["exchange"], rec["market"] = sid, 1, 2
        rec["price"], rec["qty"], rec["side"], rec["trade_id"] = 60_000.5, 0.25, -1, self.n
        rec["ts_exchange_ns"] = 1_722_000_000_000_000_000 + self.n * 1_000_000
        rec["ts_recv_ns"] = 42
        self.n += 1
        t0 = time.perf_counter()
        self.trades.commit(rec)
        return time.perf_counter() - t0

    def book_row(self, sid: int = 0) -> None:
        rec = np.zeros(1, shm.BOOK)[0]
        rec["symbol_id"], rec["exchange"], rec["market"], rec["state"] = sid, 1, 2, 2
        rec["n_bids"], rec["n_asks"], rec["update_id"] = 2, 1, 99
        rec["bid_px"][:2], rec["bid_qty"][:2] = [100.0, 99.5], [1.0, 2.0]
        rec["ask_px"][:1], rec["ask_qty"][:1] = [100.5], [3.0]
        rec["ts_exchange_ns"] = 1_722_000_000_000_000_000
        self.book.commit(rec)

    def whale(self, n: int, sid: int = 0) -> None:
        rec = np.zeros(1, shm.EVENT)[0]
        rec["symbol_id"], rec["exchange"], rec["market"] = sid, 1, 2
        rec["kind"], rec["priority"], rec["side"] = EventKind.WHALE_TRADE, Priority.CRITICAL, 1
        rec["trigger_seq"], rec["ts_exchange_ns"] = n, 1_722_000_000_000_000_000
        rec["values"][:4] = [60_000.0, 20.0, 1_200_000.0, 0.9]
        self.events.commit(rec)

    def close(self) -> None:
        for w in (self.trades, self.book, self.events):
            w.close(unlink=True)


@pytest.fixture
def bus(instance: str) -> Iterator[Bus]:
    b = Bus(instance)
    yield b
    b.close()


def start_publisher(tmp_path: Path, instance: str, url: str,
                    ttl_ms: int = 5_000) -> subprocess.Popen[bytes]:
    cfg = tmp_path / "config.toml"
    cfg.write_text(CONFIG.format(instance=instance, url=url, ttl=ttl_ms,
                                 samples=tmp_path / "latency.npy"))
    return subprocess.Popen([sys.executable, "-m", "engine", "publish", "-c", str(cfg)],
                            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "pub.log", "wb"))


def stop(proc: subprocess.Popen[bytes], tmp_path: Path) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0, (tmp_path / "pub.log").read_text()[-3000:]


def stats(instance: str) -> np.void | None:
    try:
        table = shm.LatestReader(shm.segment_name(instance, "publisher", "stats",
                                                  suffix="latest"))
    except shm.ShmError:
        return None
    try:
        return table.get(0)
    finally:
        table.close()


def wait_connected(instance: str) -> None:
    wait_for(lambda: (s := stats(instance)) is not None and s["connected"] == 1, 30,
             "the publisher to connect")


def test_channels_payloads_latest_keys_streams_and_expiry(
        tmp_path: Path, instance: str, bus: Bus, redis_server: EmbeddedRedis) -> None:
    client = redis.Redis(unix_socket_path=str(redis_server.socket_path))
    sub = client.pubsub()
    sub.psubscribe("binance:*")
    assert sub.get_message(timeout=2)["type"] == "psubscribe"   # type: ignore[index]
    started_ns = time.perf_counter_ns()
    pub = start_publisher(tmp_path, instance, redis_server.url, ttl_ms=2_000)
    try:
        wait_connected(instance)
        bus.trade(0)
        bus.trade(1)
        bus.book_row(0)
        bus.whale(7, sid=1)
        got: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + 10
        while len(got) < 4 and time.monotonic() < deadline:
            m = sub.get_message(timeout=0.5)
            if m and m["type"] == "pmessage":
                got[m["channel"].decode()] = msgspec.json.decode(m["data"])
        assert set(got) == {"binance:btcusdt:trade", "binance:ethusdt:trade",
                            "binance:btcusdt:orderbook", "binance:ethusdt:whale_alert"}
        trade = got["binance:btcusdt:trade"]
        assert {k: trade[k] for k in ("exchange", "symbol", "event_type", "price", "quantity",
                                      "side", "timestamp", "trade_id", "ts_recv_ns")} == {
            "exchange": "binance", "symbol": "btcusdt", "event_type": "trade",
            "price": 60_000.5, "quantity": 0.25, "side": "SELL",
            "timestamp": 1_722_000_000_000, "trade_id": 0, "ts_recv_ns": 42}
        assert isinstance(trade["seq"], int)
        book = got["binance:btcusdt:orderbook"]
        assert book["bids"] == [[100.0, 1.0], [99.5, 2.0]] and book["asks"] == [[100.5, 3.0]]
        assert book["state"] == "LIVE" and book["last_update_id"] == 99
        whale = got["binance:ethusdt:whale_alert"]
        assert (whale["price"], whale["quantity"], whale["usd_value"], whale["side"],
                whale["confidence"]) == (60_000.0, 20.0, 1_200_000.0, "BUY", 0.9)
        # latest keys (trade, orderbook by default) with their TTL; whale alerts in a stream
        latest = client.get("latest:binance:btcusdt:orderbook")
        assert latest is not None and msgspec.json.decode(latest)["last_update_id"] == 99
        assert 0 < client.pttl("latest:binance:btcusdt:trade") <= 2_000
        entries = client.xrange("stream:binance:ethusdt:whale_alert")
        assert len(entries) == 1
        assert msgspec.json.decode(entries[0][1][b"data"])["trigger_seq"] == 7
        # publishing stops: the latest keys expire (the staleness contract)
        wait_for(lambda: client.get("latest:binance:btcusdt:trade") is None, 10,
                 "the latest key to expire")
        row = stats(instance)
        assert row is not None and row["confirmed_critical"] == 1 and row["confirmed_high"] == 2
        assert row["confirmed_low"] == 1 and row["breaker_state"] == 0
    finally:
        stop(pub, tmp_path)
        sub.close()
    # latency_samples_file: written at exit, (confirmed at, commit → reply, class, commit →
    # taken, written → reply) per message; the two trades may have gone as one message, the
    # book and the whale never with them
    samples = np.load(tmp_path / "latency.npy")
    assert samples.dtype == np.int64 and samples.shape[1] == 5 and 3 <= len(samples) <= 4
    # the parts are positive and fit in the whole
    assert np.all((samples[:, 3] > 0) & (samples[:, 4] > 0))
    assert np.all(samples[:, 3] + samples[:, 4] <= samples[:, 1])
    assert sorted(set(samples[:, 2].tolist())) == [Priority.CRITICAL, Priority.HIGH,
                                                   Priority.LOW]
    assert np.all(np.diff(samples[:, 0]) >= 0)   # oldest first
    assert np.all((samples[:, 0] > started_ns) & (samples[:, 0] < time.perf_counter_ns()))
    assert np.all((samples[:, 1] > 0) & (samples[:, 1] < 10_000_000_000))


def test_a_stalled_redis_opens_the_breaker_sheds_low_keeps_critical(
        tmp_path: Path, instance: str, bus: Bus, redis_server: EmbeddedRedis) -> None:
    client = redis.Redis(unix_socket_path=str(redis_server.socket_path))
    pub = start_publisher(tmp_path, instance, redis_server.url)
    try:
        wait_connected(instance)
        redis_server.pause()
        commits: list[float] = []
        try:
            t_end = time.monotonic() + 1.5
            n = 0
            # trades and books for 1.5 s, and at least 2 000 steps: all 20 whales go in while
            # Redis is paused, however slow the host
            while time.monotonic() < t_end or n < 2000:
                commits.append(bus.trade(n % 2))
                bus.book_row(n % 2)
                if n % 100 == 0 and n // 100 < 20:
                    bus.whale(n // 100)
                n += 1
                time.sleep(0.0005)
            row = wait_for(lambda: (s := stats(instance)) is not None and
                           s["breaker_to_open"] >= 1 and s, 5, "the breaker to open")
            assert row["breaker_state"] in (1, 2)   # OPEN (or already probing)
        finally:
            redis_server.resume()
        # the rings never waited for Redis: a commit stays a few microseconds (the bounds leave
        # room for a busy host's preemptions; one that waited would take the whole pause)
        assert np.percentile(commits, 99) < 0.001 and max(commits) < 0.25, max(commits)
        row = wait_for(lambda: (s := stats(instance)) is not None and
                       s["breaker_state"] == 0 and s["confirmed_critical"] >= 20 and s,
                       15, "the breaker to close and every CRITICAL to be confirmed")
        dropped_low = sum(row[f"dropped_low_{r}"] for r in ("breaker_open", "shed",
                                                            "conflated"))
        dropped_high = row["dropped_high_breaker_open"] + row["dropped_high_overflow"]
        assert dropped_low > 0 and dropped_high > 0
        assert row["dropped_critical_overflow"] == 0 and row["dropped_critical_breaker_open"] == 0
        whales = {msgspec.json.decode(e[1][b"data"])["trigger_seq"]
                  for e in client.xrange("stream:binance:btcusdt:whale_alert")}
        assert whales == set(range(20))
        assert row["breaker_to_half_open"] >= 1 and row["breaker_to_closed"] >= 1
        # healthy again: new trades flow
        before = int(row["confirmed_high"])
        bus.trade(0)
        wait_for(lambda: (s := stats(instance)) is not None and s["confirmed_high"] > before,
                 5, "a trade after recovery")
    finally:
        stop(pub, tmp_path)


def test_redis_killed_and_restarted_under_load(tmp_path: Path, instance: str, bus: Bus,
                                               redis_server: EmbeddedRedis) -> None:
    pub = start_publisher(tmp_path, instance, redis_server.url)
    try:
        wait_connected(instance)
        for i in range(200):
            bus.trade(i % 2)
        wait_for(lambda: (s := stats(instance)) is not None and s["confirmed_high"] >= 200, 10,
                 "the first trades to be confirmed")
        assert redis_server.process is not None
        redis_server.process.kill()   # SIGKILL: no goodbye
        redis_server.process.wait()
        for i in range(30):           # CRITICAL while Redis is gone
            bus.whale(1000 + i)
            bus.trade(i % 2)
            time.sleep(0.01)
        time.sleep(0.3)
        assert pub.poll() is None, "the publisher must survive a lost Redis"
        redis_server.process = None
        redis_server.start()          # a new server on the same socket
        client = redis.Redis(unix_socket_path=str(redis_server.socket_path))
        wait_for(lambda: len(client.xrange("stream:binance:btcusdt:whale_alert")) >= 30, 15,
                 "the CRITICAL messages to arrive after the restart")
        seqs = [msgspec.json.decode(e[1][b"data"])["trigger_seq"]
                for e in client.xrange("stream:binance:btcusdt:whale_alert")]
        assert set(seqs) == set(range(1000, 1030))   # each at least once
        row = wait_for(lambda: (s := stats(instance)) is not None and s["connected"] == 1 and
                       s["reconnects"] >= 1 and s, 10, "the reconnect to be counted")
        assert row["connect_failures"] >= 1
        assert row["dropped_critical_overflow"] == 0
    finally:
        stop(pub, tmp_path)
