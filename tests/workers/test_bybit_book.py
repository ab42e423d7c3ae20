"""Bybit v5 books and tickers rebuilt from the real recording: every delta continues the ``u``
chain, the book equals an independent reference after every message (200 levels per side, never
crossed: the data README's facts), ticker deltas merge like an independent dict merge; every
frame the synthetic venue produces for Bybit decodes."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from shm import DEPTH
from workers.exchanges.book import Book
from workers.exchanges.book_commit import APPLIED
from workers.exchanges.bybit_sync import (
    BBO,
    FUNDING,
    OPEN_INTEREST,
    BybitBookSync,
    TickerState,
    Verdict,
)
from workers.exchanges.bybit_wire import (
    aggressor_side,
    decode_book,
    decode_envelope,
    decode_liquidations,
    decode_ticker,
    decode_trades,
    levels,
    liquidation_order_side,
    trade_id,
)
from workers.exchanges.records import Collector, Emitter
from workers.venue import SyntheticConfig, generate, open_session

RECORDING = (Path(__file__).resolve().parents[1] / "data" / "recorded" / "bybit"
             / "cryptofeed_linear_v5_20260809.frames.jsonl")
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "DOGEUSDT")
# ticker field -> (TickerState attribute, family bit); nextFundingTime is checked apart (ms -> ns)
TICKER_FIELDS = {
    "lastPrice": ("last", 0), "markPrice": ("mark", FUNDING), "indexPrice": ("index", FUNDING),
    "fundingRate": ("funding_rate", FUNDING), "openInterest": ("open_interest", OPEN_INTEREST),
    "openInterestValue": ("open_interest_value", OPEN_INTEREST), "bid1Price": ("bid1", BBO),
    "bid1Size": ("bid1_size", BBO), "ask1Price": ("ask1", BBO), "ask1Size": ("ask1_size", BBO),
}


def _frames() -> list[bytes]:
    return RECORDING.read_bytes().splitlines()  # every frame, acks included


class ReferenceBook:
    """A dict book following Bybit's rules (snapshot replaces, size 0 deletes), no numpy."""

    def __init__(self) -> None:
        self.bids: dict[float, float] = {}
        self.asks: dict[float, float] = {}

    def apply(self, snapshot: bool, bids: list[list[str]], asks: list[list[str]]) -> None:
        if snapshot:
            self.bids, self.asks = {}, {}
        for side, updates in ((self.bids, bids), (self.asks, asks)):
            for p, q in updates:  # the exchange's strings, parsed here independently
                if float(q) == 0:
                    side.pop(float(p), None)
                else:
                    side[float(p)] = float(q)

    def arrays(self) -> tuple[np.ndarray, ...]:
        b = sorted(self.bids.items(), reverse=True)
        a = sorted(self.asks.items())
        return (np.array([p for p, _ in b]), np.array([q for _, q in b]),
                np.array([p for p, _ in a]), np.array([q for _, q in a]))


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def test_recorded_books_follow_every_message() -> None:
    books = {s: Book(capacity=1024) for s in SYMBOLS}
    committer = Emitter(2, {"depth": Collector(DEPTH)}).books  # the feed's apply path
    refs = {s: ReferenceBook() for s in SYMBOLS}
    syncs = {s: BybitBookSync() for s in SYMBOLS}
    last_u: dict[str, int] = {}
    counts: Counter[str] = Counter()
    for frame in _frames():
        env = decode_envelope(frame)
        if not env.topic.startswith("orderbook."):
            continue
        symbol = env.topic.rpartition(".")[2]
        data = decode_book(env.data)
        raw = json.loads(frame)["data"]
        assert data.s == symbol and env.ts > 0 and env.cts > 0 and data.seq > 0
        if env.type == "delta":  # the chain, checked apart from BybitBookSync
            assert data.u == last_u[symbol] + 1
        last_u[symbol] = data.u
        verdict = syncs[symbol].check(env.type, data.u)
        assert verdict == (Verdict.RESET if env.type == "snapshot" else Verdict.APPLY)
        book = books[symbol]
        if verdict == Verdict.RESET:
            book.clear()
        assert committer.apply(book, data.b, data.a, 0, 1, 0, 0, 0, data.u, -1) == APPLIED
        refs[symbol].apply(env.type == "snapshot", raw["b"], raw["a"])
        for mine, theirs in zip(book.levels(1 << 30), refs[symbol].arrays(), strict=True):
            assert np.array_equal(mine, theirs)
        assert book.n_bids == 200 and book.n_asks == 200
        assert not book.crossed()
        counts[f"{symbol} {env.type}"] += 1
    assert counts == {
        "BTCUSDT snapshot": 1, "BTCUSDT delta": 413, "ETHUSDT snapshot": 1, "ETHUSDT delta": 420,
        "SOLUSDT snapshot": 1, "SOLUSDT delta": 382, "DOGEUSDT snapshot": 1,
        "DOGEUSDT delta": 379}


def test_recorded_tickers_merge_like_a_dict() -> None:
    states = {s: TickerState() for s in SYMBOLS}
    merged: dict[str, dict[str, str]] = {}
    counts: Counter[str] = Counter()
    for frame in _frames():
        env = decode_envelope(frame)
        if not env.topic.startswith("tickers."):
            continue
        symbol = env.topic.rpartition(".")[2]
        raw = json.loads(frame)["data"]
        if env.type == "snapshot":
            merged[symbol] = dict(raw)
        else:
            merged[symbol].update(raw)
        ref, state = merged[symbol], states[symbol]
        changed = state.apply(env.type, decode_ticker(env.data))
        for key, (attr, _) in TICKER_FIELDS.items():
            assert _same(getattr(state, attr), float(ref.get(key, "nan"))), key
        assert state.next_funding_ns == int(ref["nextFundingTime"]) * 1_000_000
        expected = 0
        for key in raw:
            expected |= FUNDING if key == "nextFundingTime" else TICKER_FIELDS.get(key, ("", 0))[1]
        assert changed == expected
        counts[f"{symbol} {env.type}"] += 1
        if env.type == "delta":
            for name, bit in (("funding", FUNDING), ("oi", OPEN_INTEREST), ("bbo", BBO)):
                counts[name] += bool(changed & bit)
            counts["none"] += not changed
            counts["fundingRate"] += "fundingRate" in raw
            counts["nextFundingTime"] += "nextFundingTime" in raw
    assert counts == {
        "BTCUSDT snapshot": 1, "BTCUSDT delta": 184, "ETHUSDT snapshot": 1, "ETHUSDT delta": 215,
        "SOLUSDT snapshot": 1, "SOLUSDT delta": 192, "DOGEUSDT snapshot": 1,
        "DOGEUSDT delta": 163, "bbo": 634, "funding": 136, "oi": 101, "none": 18,
        "fundingRate": 2, "nextFundingTime": 0}  # no delta here carries nextFundingTime


def test_recorded_trades_acks_and_klines_decode() -> None:
    counts: Counter[str] = Counter()
    ids: set[int] = set()
    for frame in _frames():
        env = decode_envelope(frame)
        counts["frames"] += 1
        if env.op:
            assert env.op == "subscribe" and env.success and env.ret_msg == "" and env.conn_id
            assert not env.topic
            counts["acks"] += 1
        elif env.topic.startswith("publicTrade."):
            trades = decode_trades(env.data)
            raw = json.loads(frame)["data"]
            for t, r in zip(trades, raw, strict=True):
                assert t.s == env.topic.rpartition(".")[2] and t.seq > 0 and not t.BT
                assert (t.p, t.v, t.T) == (float(r["p"]), float(r["v"]), r["T"])
                assert aggressor_side(t.S) == (1 if r["S"] == "Buy" else -1)
                number, hashed = trade_id(t.i)
                assert hashed and 0 <= number < 1 << 63  # UUIDs on linear
                ids.add(number)
            counts["trade messages"] += 1
            counts["trades"] += len(trades)
        elif env.topic.startswith("kline."):
            counts["klines"] += 1
    assert len(ids) == counts["trades"]  # hashed ids stay distinct
    assert counts == {"frames": 2546, "acks": 17, "trade messages": 102, "trades": 327,
                      "klines": 71}


def test_book_sync_rules_by_hand() -> None:
    sync = BybitBookSync()
    assert sync.check("delta", 10) == Verdict.WAIT        # no snapshot yet
    assert sync.check("snapshot", 100) == Verdict.RESET
    assert sync.check("delta", 101) == Verdict.APPLY
    assert sync.check("delta", 102) == Verdict.APPLY
    assert sync.check("delta", 102) == Verdict.GAP        # a repeat is not u + 1 either
    assert sync.check("delta", 103) == Verdict.WAIT       # after a gap: wait for the snapshot
    assert sync.check("snapshot", 500) == Verdict.RESET   # the resubscribe's snapshot
    assert sync.check("delta", 502) == Verdict.GAP        # skipped 501
    assert sync.check("delta", 1) == Verdict.RESET        # u == 1: the service restarted
    assert sync.check("delta", 2) == Verdict.APPLY
    assert sync.check("snapshot", 7) == Verdict.RESET     # level 1: snapshot after snapshot
    assert sync.check("snapshot", 9) == Verdict.RESET
    sync.reset()
    assert sync.check("delta", 10) == Verdict.WAIT


def test_tickers_spot_shape_and_empty_strings() -> None:
    spot = (b'{"symbol":"BTCUSDT","lastPrice":"65000.1","highPrice24h":"65500","lowPrice24h":'
            b'"64000","prevPrice24h":"64800","volume24h":"1000.5","turnover24h":"6.5e7",'
            b'"price24hPcnt":"0.003","usdIndexPrice":""}')
    state = TickerState()
    assert state.apply("snapshot", decode_ticker(spot)) == 0  # no derivatives fields
    assert state.last == 65000.1 and math.isnan(state.mark) and state.next_funding_ns == 0
    blank = decode_ticker(b'{"symbol":"X","markPrice":"","nextFundingTime":"",'
                          b'"fundingRate":"1e-4"}')
    assert state.apply("delta", blank) == FUNDING
    assert math.isnan(state.mark) and state.next_funding_ns == 0 and state.funding_rate == 1e-4
    assert state.last == 65000.1  # a delta keeps what it does not mention
    state.apply("snapshot", decode_ticker(b'{"symbol":"X","openInterest":"5"}'))
    assert math.isnan(state.last) and state.open_interest == 5.0  # a snapshot replaces all


def test_control_frames_in_both_shapes() -> None:
    for category in ("linear", "spot"):
        session = open_session("bybit", f"/v5/public/{category}")
        ack = decode_envelope(session.on_text(b'{"op":"subscribe","args":["tickers.BTCUSDT"]}')[0])
        assert ack.op == "subscribe" and ack.success and ack.conn_id
        pong = decode_envelope(session.on_text(b'{"op":"ping","req_id":"7"}')[0])
        # linear answers op "ping" with ret_msg "pong", spot answers op "pong"
        assert "pong" in (pong.op, pong.ret_msg)
        assert pong.req_id == "7" and not pong.topic
        bad = decode_envelope(session.on_text(b'{"op":"subscribe","args":["nope"]}')[0])
        assert not bad.success and bad.ret_msg.startswith("error:")


def test_trade_ids() -> None:
    assert trade_id("2290000000012345678") == (2290000000012345678, False)  # spot: numeric
    assert trade_id("a9188a0a-82bc-50de-be60-03eedbe3cdd7") == (0x50debe6003eedbe3cdd7
                                                                & ((1 << 63) - 1), True)
    big, hashed = trade_id("99999999999999999999")  # beyond int64: hashed, not wrapped
    assert hashed and 0 <= big < 1 << 63 and trade_id("x-1") == trade_id("x-1")
    assert liquidation_order_side("Buy") == -1 and liquidation_order_side("Sell") == 1


def _synthetic() -> list[tuple[int, str, bytes]]:
    frames, _ = generate(SyntheticConfig(exchange="bybit", symbols=3, rate_hz=1_000, seconds=15))
    return frames


def test_every_synthetic_frame_decodes() -> None:
    books: dict[str, Book] = {}
    syncs: dict[str, BybitBookSync] = {}
    tickers: dict[str, TickerState] = {}
    counts: Counter[str] = Counter()
    for _, topic, frame in _synthetic():
        env = decode_envelope(frame)
        assert env.topic == topic and env.ts > 0
        channel, _, symbol = topic.rpartition(".")
        counts[channel] += 1
        if channel.startswith("orderbook."):
            data = decode_book(env.data)
            verdict = syncs.setdefault(symbol, BybitBookSync()).check(env.type, data.u)
            assert verdict in (Verdict.RESET, Verdict.APPLY)
            book = books.setdefault(symbol, Book(capacity=1024))
            if verdict == Verdict.RESET:
                book.clear()
            book.apply(*levels(data.b), *levels(data.a))
            assert not book.crossed() and book.n_bids > 0 and book.n_asks > 0
        elif channel == "tickers":
            state = tickers.setdefault(symbol, TickerState())
            assert state.apply(env.type, decode_ticker(env.data)) == FUNDING | OPEN_INTEREST | BBO
            assert state.next_funding_ns > 0 and not math.isnan(state.mark)
        elif channel == "publicTrade":
            for t in decode_trades(env.data):
                assert aggressor_side(t.S) != 0 and trade_id(t.i)[1] and t.v > 0
        elif channel == "allLiquidation":
            for liq in decode_liquidations(env.data):
                assert liquidation_order_side(liq.S) != 0 and liq.v > 0 and liq.p > 0
                counts["liquidations"] += 1
        else:
            pytest.fail(f"unexpected synthetic topic {topic}")
    assert counts["orderbook.50"] > 10_000 and counts["publicTrade"] > 1_000
    assert counts["tickers"] == 3 + 3 * 15 and counts["allLiquidation"] > 0


def test_synthetic_liquidation_side_matches_its_market_orders() -> None:
    last_aggressor: dict[str, int] = {}
    checked = 0
    for _, topic, frame in _synthetic():
        env = decode_envelope(frame)
        symbol = topic.rpartition(".")[2]
        if topic.startswith("publicTrade."):
            last_aggressor[symbol] = aggressor_side(decode_trades(env.data)[-1].S)
        elif topic.startswith("allLiquidation."):
            # each liquidation is a market order that just traded: same side as its trades
            for liq in decode_liquidations(env.data):
                assert liquidation_order_side(liq.S) == last_aggressor[symbol]
                checked += 1
    assert checked > 0
