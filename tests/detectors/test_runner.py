"""The detector runner over real rings: events reach the events ring with their trigger's seq
and commit stamp, a ring that appears late is picked up, and a feed writer restart resets the
exchange's state and alerts the books that were LIVE."""

from __future__ import annotations

import threading
import time

import numpy as np

import shm
from engine.config import DetectorsConfig, SymbolThresholds
from workers.detectors.events import EventKind
from workers.detectors.runner import DetectorRunner


def _trade(px: float, qty: float, sid: int = 0) -> np.ndarray:
    r = np.zeros(1, shm.TRADE)
    r["price"], r["qty"], r["side"], r["symbol_id"], r["exchange"] = px, qty, 1, sid, 1
    r["ts_exchange_ns"] = 1_700_000_000 * 10**9
    return r


def _book(sid: int, state: int) -> np.ndarray:
    r = np.zeros(1, shm.BOOK)
    r["symbol_id"], r["state"], r["exchange"], r["n_bids"], r["n_asks"] = sid, state, 1, 1, 1
    r["bid_px"], r["ask_px"], r["bid_qty"], r["ask_qty"] = 99.0, 101.0, 1.0, 1.0
    return r


def test_events_ring_trigger_stamps_late_rings_and_restarts(instance: str) -> None:
    settings = DetectorsConfig(whale_min_usd=1_000_000.0, whale_burst_usd=0.0, symbols={
        "binance:BTCUSDT": SymbolThresholds(whale_min_usd=1_000.0)})
    runner = DetectorRunner(instance, {"binance": ["BTCUSDT", "ETHUSDT"]}, settings,
                            start="oldest")
    trades = shm.Writer(shm.segment_name(instance, "binance", "trades"), shm.TRADE, 1024)
    events = shm.Reader(shm.segment_name(instance, "detectors", "events"), start="oldest")
    try:
        trades.commit(_trade(50_000.0, 0.01)[0])   # 500: below BTCUSDT's threshold
        trades.commit(_trade(50_000.0, 0.1, sid=1)[0])  # ETHUSDT: the 1 M default applies
        seq = trades.commit(_trade(50_000.0, 0.1)[0])  # 5 000: a whale for BTCUSDT
        assert runner.step() == 3
        got = events.poll(timeout_s=1.0)
        assert got["kind"].tolist() == [EventKind.WHALE_TRADE]
        assert got[0]["trigger_seq"] == seq and got[0]["trigger_commit_ns"] > 0
        assert got[0]["ts_commit_ns"] >= got[0]["trigger_commit_ns"]  # ring → event latency
        table = shm.LatestReader(shm.segment_name(instance, "binance", "analytics",
                                                  suffix="latest"))
        btc, eth = table.get("BTCUSDT"), table.get("ETHUSDT")
        table.close()
        assert btc is not None and eth is not None
        assert (btc["trade_count"], eth["trade_count"]) == (2, 1)
        assert btc["cvd_session"] == 0.01 + 0.1 and btc["last"] == 50_000.0
        assert btc["exchange"] == shm.Exchange.BINANCE and np.isnan(btc["imbalance"])

        # the book ring appears after the runner started: picked up on a later step
        name = shm.segment_name(instance, "binance", "book")
        book = shm.Writer(name, shm.BOOK, 1024)
        book.commit(_book(0, shm.BookState.LIVE)[0])
        book.commit(_book(1, shm.BookState.RESYNCING)[0])
        time.sleep(0.6)  # missing rings are looked for every ATTACH_RETRY_S
        assert runner.step() == 2 and len(events.poll()) == 0
        assert runner.detectors["binance"].imbalance.values[0, 0] == 0.0

        # the feed worker restarts: the book writer closes, a new one takes the ring over
        book.close()
        runner.step()
        book = shm.Writer(name, shm.BOOK, 1024)
        book.commit(_book(1, shm.BookState.LIVE)[0])
        runner.step()
        alerts = events.poll(timeout_s=1.0)
        assert runner.discontinuities == 1
        assert alerts["kind"].tolist() == [EventKind.BOOK_STATE]
        assert alerts[0]["symbol_id"] == 0 and alerts[0]["priority"] == shm.Priority.CRITICAL
        assert alerts[0]["values"][:2].tolist() == [shm.BookState.NONE, shm.BookState.LIVE]
        assert np.isnan(runner.detectors["binance"].imbalance.values[0, 0])  # forgotten
        book.close()
    finally:
        events.close()
        trades.close()
        runner.close()


def test_idle_step_parks_on_the_trades_ring_and_wakes_on_commit(instance: str) -> None:
    runner = DetectorRunner(instance, {"binance": ["BTCUSDT"]},
                            DetectorsConfig(whale_min_usd=1.0, whale_burst_usd=0.0))
    trades = shm.Writer(shm.segment_name(instance, "binance", "trades"), shm.TRADE, 1024)
    try:
        assert runner.step() == 0  # attaches (start="latest")
        timer = threading.Timer(0.3, lambda: trades.commit(_trade(100.0, 1.0)[0]))
        timer.start()
        t0 = time.monotonic()
        assert runner.step(wait_s=5.0) == 1
        waited = time.monotonic() - t0
        assert 0.2 < waited < 2.0  # woken by the commit, not by the 5 s limit
        t0 = time.monotonic()
        assert runner.step(wait_s=0.2) == 0 and time.monotonic() - t0 >= 0.15  # it did wait
        timer.join()
    finally:
        trades.close()
        runner.close()


def test_only_the_configured_kernels_run(instance: str) -> None:
    settings = DetectorsConfig(kernels=("cvd",), whale_min_usd=1.0, whale_burst_usd=0.0)
    runner = DetectorRunner(instance, {"binance": ["BTCUSDT"]}, settings, start="oldest")
    trades = shm.Writer(shm.segment_name(instance, "binance", "trades"), shm.TRADE, 1024)
    events = shm.Reader(shm.segment_name(instance, "detectors", "events"), start="oldest")
    try:
        trades.commit(_trade(50_000.0, 1.0)[0])
        assert runner.step() == 1
        assert len(events.poll(timeout_s=0.2)) == 0  # no whale kernel, no event
        det = runner.detectors["binance"]
        assert det.cvd.session[0] == 1.0 and det.stats24h.head[0] == -1  # only CVD ran
    finally:
        events.close()
        trades.close()
        runner.close()


def test_silent_channels_of_a_feed_worker_raise_an_alert(instance: str) -> None:
    from workers.exchanges.worker import STATS

    ticks = iter(range(0, 10**12, 200_000_000))  # every step is 200 ms later: a refresh
    runner = DetectorRunner(instance, {"binance": ["BTCUSDT"]}, clock=lambda: next(ticks))
    stats = shm.LatestWriter(shm.segment_name(instance, "binance", "stats", suffix="latest"),
                             STATS, 1)
    events = shm.Reader(shm.segment_name(instance, "detectors", "events"), start="oldest")
    try:
        row = np.zeros(1, STATS)
        row["connections"], row["connections_up"] = 2, 2
        stats.update(0, row[0])
        runner.step()                      # the counter's first value: no alert
        assert len(events.poll(timeout_s=0.1)) == 0
        row["silent_channels"] = 2
        stats.update(0, row[0])
        runner.step()
        got = events.poll(timeout_s=1.0)
        assert got["kind"].tolist() == [EventKind.CHANNEL_SILENT]
        assert got[0]["values"][:4].tolist() == [2.0, 2.0, 2.0, 2.0]
        assert got[0]["priority"] == shm.Priority.CRITICAL
        runner.step()                      # unchanged: quiet
        assert len(events.poll(timeout_s=0.1)) == 0
    finally:
        events.close()
        stats.close()
        runner.close()
