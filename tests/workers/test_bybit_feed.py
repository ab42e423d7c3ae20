"""The Bybit feed on the real linear recording, through the offline replay path (the worker's
exact decode → book → record code): every book record equals an independent reference book,
depth records restate every message, tickers merge like a dict, trades are complete; broken
input resyncs only the affected symbol; synthetic venue frames give LIVE books and liquidations
on the side of their market orders."""

from __future__ import annotations

import heapq
import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
from test_bybit_book import ReferenceBook

from shm import STREAMS
from shm.layout import FLAG_ID_HASHED, FLAG_LAST_IN_MESSAGE, FLAG_NOT_LIVE, BookState, Side
from workers.exchanges.bybit import BybitFeed, BybitUrls
from workers.exchanges.feed import Count, FeedError, Request, SymbolSpec
from workers.exchanges.records import Collector, Emitter
from workers.exchanges.replay import ReplaySink, lines, replay
from workers.venue import SyntheticConfig, generate, open_session

RECORDING = (Path(__file__).resolve().parents[1] / "data" / "recorded" / "bybit"
             / "cryptofeed_linear_v5_20260809.frames.jsonl")
FUNDING_KEYS = ("markPrice", "indexPrice", "fundingRate", "nextFundingTime")
OI_KEYS = ("openInterest", "openInterestValue")


def _expected_from_recording() -> dict[str, Any]:
    """Independently (json + dicts) what the feed must publish, per symbol and in order."""
    refs: dict[str, ReferenceBook] = {}
    out: dict[str, dict[str, list[Any]]] = {}
    tickers: dict[str, dict[str, str]] = {}
    trades: list[tuple[Any, ...]] = []
    for frame in RECORDING.read_bytes().splitlines():
        msg = json.loads(frame)
        topic = msg.get("topic", "")
        channel, _, sym = topic.rpartition(".")
        exp = out.setdefault(sym, {"book": [], "depth": [], "funding": [], "oi": []})
        if channel == "orderbook.200":
            snap, d = msg["type"] == "snapshot", msg["data"]
            ref = refs.setdefault(sym, ReferenceBook())
            ref.apply(snap, d["b"], d["a"])
            exp["book"].append((d["u"], msg["ts"] * 1_000_000,
                                [[p, q] for p, q in heapq.nlargest(20, ref.bids.items())],
                                [[p, q] for p, q in heapq.nsmallest(20, ref.asks.items())]))
            prev = -1 if snap else d["u"] - 1
            exp["depth"] += [("bid", float(p), float(q), d["u"], prev) for p, q in d["b"]]
            exp["depth"] += [("ask", float(p), float(q), d["u"], prev) for p, q in d["a"]]
        elif channel == "tickers":
            raw = msg["data"]
            merged = tickers[sym] = dict(raw) if msg["type"] == "snapshot" else {
                **tickers[sym], **raw}
            ts = msg["ts"] * 1_000_000
            if any(k in raw for k in FUNDING_KEYS):
                exp["funding"].append((ts, float(merged["markPrice"]),
                                       float(merged["indexPrice"]),
                                       float(merged["fundingRate"]),
                                       int(merged["nextFundingTime"]) * 1_000_000))
            if any(k in raw for k in OI_KEYS):
                exp["oi"].append((ts, float(merged["openInterest"]),
                                  float(merged["openInterestValue"])))
        elif channel == "publicTrade":
            trades += [(t["s"], t["T"] * 1_000_000, float(t["p"]), float(t["v"]),
                        "BUY" if t["S"] == "Buy" else "SELL") for t in msg["data"]]
    return {"symbols": out, "trades": trades}


def test_recorded_replay_equals_independent_reference() -> None:
    feed, sink = replay("bybit", RECORDING)
    expected = _expected_from_recording()
    got: dict[str, dict[str, list[Any]]] = {}
    trades, ids = [], set()
    for line in lines(feed, sink):
        mine = got.setdefault(line["symbol"], {"book": [], "depth": [], "funding": [], "oi": []})
        stream = line["stream"]
        if stream == "book":
            assert line["state"] == "LIVE" and line["epoch"] == 0 and line["flags"] == 0
            mine["book"].append((line["update_id"], line["ts_exchange_ns"], line["bids"],
                                 line["asks"]))
        elif stream == "depth":
            assert line["state"] == "LIVE" and not line["flags"] & FLAG_NOT_LIVE
            mine["depth"].append((line["side"], line["price"], line["qty"], line["update_id"],
                                  line["prev_update_id"]))
        elif stream == "funding":
            assert line["predicted_rate"] is None
            mine["funding"].append((line["ts_exchange_ns"], line["mark_px"], line["index_px"],
                                    line["funding_rate"], line["next_funding_ns"]))
        elif stream == "open_interest":
            mine["oi"].append((line["ts_exchange_ns"], line["open_interest"],
                               line["open_interest_value"]))
        elif stream == "trade":
            assert line["flags"] == FLAG_ID_HASHED  # linear ids are UUIDs
            trades.append((line["symbol"], line["ts_exchange_ns"], line["price"], line["qty"],
                           line["side"]))
            ids.add(line["trade_id"])
        else:
            pytest.fail(f"unexpected stream {stream}")
    symbols = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "DOGEUSDT")
    assert set(got) == set(symbols)
    for sym in symbols:
        assert got[sym] == expected["symbols"][sym], sym
    # the data README: 1 snapshot + these deltas per symbol (test_bybit_book counted them)
    assert {s: len(got[s]["book"]) for s in symbols} == {
        "BTCUSDT": 414, "ETHUSDT": 421, "SOLUSDT": 383, "DOGEUSDT": 380}
    assert sum(len(g["funding"]) for g in got.values()) == 4 + 136
    assert sum(len(g["oi"]) for g in got.values()) == 4 + 101
    assert trades == expected["trades"] and len(trades) == 327 and len(ids) == 327
    for sid, book in feed.books.items():
        assert book.state == BookState.LIVE and book.n_bids == 200 and book.n_asks == 200, sid
    counts = feed.counts
    assert counts[Count.DECODE_ERRORS] == 0 and counts[Count.GAPS] == 0
    assert counts[Count.UNKNOWN_FRAMES] == 71 and counts[Count.CONTROL_FRAMES] == 17  # klines
    assert counts[Count.SNAPSHOTS] == 4 and counts[Count.RESYNCS] == 0
    depth = np.concatenate([c for s, c in sink.chunks if s == "depth"])
    last = (depth["flags"] & FLAG_LAST_IN_MESSAGE) != 0
    assert last.sum() == 1598 and last[-1]  # one flagged record per book message


# -- direct feeds -------------------------------------------------------------------------
def _feed(*specs: SymbolSpec, **options: Any) -> tuple[BybitFeed, dict[str, Collector]]:
    outs = {s: Collector(STREAMS[s]) for s in ("trades", "depth", "book", "bbo", "funding",
                                                 "open_interest", "liquidations")}
    specs = specs or (SymbolSpec("BTCUSDT", "linear", symbol_id=0),
                      SymbolSpec("ETHUSDT", "linear", symbol_id=1))
    return BybitFeed(list(specs), Emitter(2, outs), **options), outs


def _ob(sym: str, kind: str, u: int, bids: list[list[str]], asks: list[list[str]],
        depth: int = 200, ts: int = 1) -> bytes:
    topic = f"orderbook.{depth}.{sym}"
    return msgspec.json.encode({"topic": topic, "type": kind, "ts": ts, "data": {
        "s": sym, "b": bids, "a": asks, "u": u, "seq": 9}, "cts": ts})


def _snap(sym: str, u: int) -> bytes:
    return _ob(sym, "snapshot", u, [["10.0", "1"], ["9.5", "2"]], [["11.0", "1"]])


def test_gap_resyncs_only_that_symbol_and_announces_it() -> None:
    feed, outs = _feed()
    for sym in ("BTCUSDT", "ETHUSDT"):
        feed.on_frame("linear", _snap(sym, 100), 1, 1)
        feed.on_frame("linear", _ob(sym, "delta", 101, [["10.0", "3"]], []), 1, 1)
    assert feed.book_states() == {"linear:BTCUSDT": "LIVE", "linear:ETHUSDT": "LIVE"}
    feed.on_frame("linear", _ob("BTCUSDT", "delta", 103, [], []), 2, 2)  # 102 is missing
    assert feed.book_states() == {"linear:BTCUSDT": "RESYNCING", "linear:ETHUSDT": "LIVE"}
    assert feed.counts[Count.GAPS] == 1 and feed.books[0].epoch == 1
    assert feed.books[1].epoch == 0
    assert list(feed.requests) == [Request("resubscribe", 0)]
    last = outs["book"].array()[-1]
    assert last["symbol_id"] == 0 and last["state"] == BookState.RESYNCING
    assert last["flags"] & FLAG_NOT_LIVE and last["n_bids"] == last["n_asks"] == 0
    assert last["epoch"] == 1
    # deltas still in flight are dropped and counted, nothing is published for them
    n_depth, n_book = len(outs["depth"].array()), len(outs["book"].array())
    for u in (104, 105):
        feed.on_frame("linear", _ob("BTCUSDT", "delta", u, [["10.0", "4"]], []), 3, 3)
    assert feed.counts[Count.DROPPED_NOT_LIVE] == 2
    assert (len(outs["depth"].array()), len(outs["book"].array())) == (n_depth, n_book)
    feed.on_frame("linear", _ob("ETHUSDT", "delta", 102, [["10.0", "5"]], []), 3, 3)
    assert feed.books[1].top()[1] == 5.0  # the other symbol carries on
    # the resubscription's snapshot brings it back, in the new epoch
    feed.on_frame("linear", _snap("BTCUSDT", 500), 4, 4)
    feed.on_frame("linear", _ob("BTCUSDT", "delta", 501, [["10.0", "7"]], []), 5, 5)
    assert feed.books[0].state == BookState.LIVE and feed.books[0].epoch == 1
    assert feed.books[0].top() == (10.0, 7.0, 11.0, 1.0)
    depth = outs["depth"].array()
    snap = depth[depth["update_id"] == 500]
    assert np.all(snap["prev_update_id"] == -1) and len(snap) == 3 and np.all(snap["epoch"] == 1)
    assert depth[-1]["prev_update_id"] == 500 and depth[-1]["flags"] == FLAG_LAST_IN_MESSAGE
    book = outs["book"].array()[-1]
    assert book["state"] == BookState.LIVE and book["epoch"] == 1 and book["update_id"] == 501
    assert feed.counts[Count.SNAPSHOTS] == 3 and feed.counts[Count.RESYNCS] == 1


def test_restart_u1_resets_and_delta_before_snapshot_waits() -> None:
    feed, _ = _feed()
    feed.on_frame("linear", _ob("BTCUSDT", "delta", 7, [["10.0", "1"]], []), 1, 1)
    assert feed.counts[Count.DROPPED_NOT_LIVE] == 1 and feed.books[0].state == BookState.SYNCING
    feed.on_frame("linear", _snap("BTCUSDT", 100), 1, 1)
    feed.on_frame("linear", _ob("BTCUSDT", "delta", 1, [["8.0", "1"]], [["9.0", "1"]]), 1, 1)
    assert feed.books[0].top() == (8.0, 1.0, 9.0, 1.0)  # u == 1 replaced the book
    assert feed.counts[Count.SNAPSHOTS] == 2 and feed.counts[Count.GAPS] == 0


def test_crossed_update_resyncs_and_a_crossed_snapshot_asks_again() -> None:
    feed, outs = _feed()
    feed.on_frame("linear", _snap("BTCUSDT", 100), 1, 1)
    feed.on_frame("linear", _ob("BTCUSDT", "delta", 101, [["12.0", "1"]], []), 2, 2)
    assert feed.counts[Count.CROSSED] == 1 and feed.books[0].state == BookState.RESYNCING
    assert not any(r["state"] == BookState.LIVE and r["bid_px"][0] >= r["ask_px"][0]
                   for r in outs["book"].array())
    assert list(feed.requests) == [Request("resubscribe", 0)]
    feed.done(feed.requests.popleft())  # the control plane resubscribed...
    feed.on_frame("linear", _ob("BTCUSDT", "snapshot", 300, [["12.0", "1"]], [["11.0", "1"]]),
                  3, 3)  # ...and the new snapshot is crossed too
    book = feed.books[0]
    assert book.state == BookState.RESYNCING and book.n_bids == 0 and book.epoch == 1
    assert feed.counts[Count.CROSSED] == 2 and list(feed.requests) == [Request("resubscribe", 0)]
    feed.on_frame("linear", _ob("BTCUSDT", "delta", 301, [["10.0", "1"]], []), 4, 4)
    assert feed.counts[Count.DROPPED_NOT_LIVE] == 1 and book.n_bids == 0  # no chain from it


def test_overflow_resyncs() -> None:
    feed, _ = _feed(book_capacity=2)
    feed.on_frame("linear", _ob("BTCUSDT", "snapshot", 5, [["1", "1"], ["2", "1"], ["3", "1"]],
                                []), 1, 1)
    assert feed.counts[Count.OVERFLOWS] == 1 and feed.books[0].state == BookState.RESYNCING


def test_disconnect_and_stale() -> None:
    feed, outs = _feed()
    feed.on_frame("linear", _snap("BTCUSDT", 100), 1, 1)
    feed.on_frame("linear", _ob("ETHUSDT", "delta", 5, [], []), 2, 77)  # dropped, yet seen
    assert feed.book_seen == {0: 1, 1: 77}  # what the liveness watchdog reads
    feed.mark_stale(0, 2, 2)
    assert feed.books[0].state == BookState.STALE
    stale = outs["book"].array()[-1]
    assert stale["state"] == BookState.STALE and stale["flags"] & FLAG_NOT_LIVE
    feed.on_frame("linear", _ob("BTCUSDT", "delta", 101, [], [["11.0", "2"]]), 3, 3)
    assert feed.books[0].state == BookState.LIVE and feed.books[0].epoch == 0
    feed.on_disconnect("linear", 4, 4)
    assert set(feed.book_states().values()) == {"RESYNCING"}
    assert feed.books[0].epoch == 1 and feed.books[1].epoch == 1
    feed.on_frame("linear", _ob("BTCUSDT", "delta", 102, [], []), 5, 5)  # old chain: dropped
    assert feed.counts[Count.DROPPED_NOT_LIVE] == 2 and feed.counts[Count.GAPS] == 0
    feed.on_frame("linear", _snap("BTCUSDT", 900), 6, 6)  # the resubscription on reconnect
    assert feed.book_states() == {"linear:BTCUSDT": "LIVE", "linear:ETHUSDT": "RESYNCING"}


def test_failed_ack_pongs_and_acks() -> None:
    feed, _ = _feed()
    for category in ("linear", "spot"):
        session = open_session("bybit", f"/v5/public/{category}")
        for request in (b'{"op":"subscribe","req_id":"1","args":["tickers.BTCUSDT"]}',
                        b'{"op":"ping","req_id":"2"}',
                        b'{"op":"subscribe","args":["nope.BTCUSDT"]}'):
            for frame in session.on_text(request):
                feed.on_frame(category, frame, 1, 1)
    assert feed.counts[Count.CONTROL_FRAMES] == 4 and feed.counts[Count.EXCHANGE_ERRORS] == 2
    assert b"handler not found" in feed.samples[-1][1]
    assert feed.samples[-1][0] == "exchange_errors"


@pytest.mark.parametrize("frame", [
    b"", b"{", b"null", b"[]", b"{}", b'"x"', b'{"topic":"',
    b'{"topic":"publicTrade.BTCUSDT"}', b'{"topic":"publicTrade.BTCUSDT","data":{}}',
    b'{"topic":"publicTrade.BTCUSDT","data":[{"T":"x"}]}',
    b'{"topic":"orderbook.200.BTCUSDT","type":"snapshot","data":{"s":"BTCUSDT","b":[["1"]],'
    b'"a":[],"u":1}}',
    b'{"topic":"orderbook.200.BTCUSDT","type":"snapshot","data":{"s":"BTCUSDT","b":[["x","1"]'
    b'],"a":[],"u":1}}',
    b'{"topic":"orderbook.1.BTCUSDT","data":{"s":"BTCUSDT","b":[],"a":[],"u":"u"}}',
    b'{"topic":"tickers.BTCUSDT","type":"snapshot","data":[1]}',
    b'{"topic":"tickers.BTCUSDT","type":"snapshot","data":{"markPrice":"abc"}}',
    b'{"topic":"allLiquidation.BTCUSDT","data":[{"T":1,"s":"BTCUSDT","S":"Buy","v":"1"}]}',
    b'{"topic":"orderbook.50.BTCUSDT","type":"snapshot","data":{}}',
    b'{"topic":"kline.1.BTCUSDT","data":[]}', b'{"type":"x","topic":"nosuch.X","data":1}',
    b'{"op":"subscribe","success":false,"ret_msg":"error:x"}', b'{"op":"pong","args":["1"]}',
    # ints beyond int64 (after ms -> ns) must not reach the njit record kernels
    b'{"topic":"orderbook.200.BTCUSDT","type":"snapshot","ts":9223372036854776,"data":{"s":'
    b'"BTCUSDT","b":[["1","1"]],"a":[],"u":1}}',
    b'{"topic":"orderbook.200.BTCUSDT","type":"snapshot","ts":1,"data":{"s":"BTCUSDT","b":'
    b'[["1","1"]],"a":[],"u":9223372036854775808}}',
    b'{"topic":"publicTrade.BTCUSDT","data":[{"T":9223372036854776,"s":"BTCUSDT","S":"Buy",'
    b'"v":"1","p":"1","i":"x"}]}',
])
def test_bad_frames_are_counted_never_raised(frame: bytes) -> None:
    feed, _ = _feed(SymbolSpec("BTCUSDT", "linear", symbol_id=0))
    feed.on_frame("linear", frame, 1, 1)
    assert feed.counts[Count.FRAMES] == 1
    assert sum(feed.counts[c] for c in (Count.DECODE_ERRORS, Count.UNKNOWN_FRAMES,
                                        Count.EXCHANGE_ERRORS, Count.CONTROL_FRAMES)) == 1


def test_trades_bbo_liquidations_tickers() -> None:
    feed, outs = _feed(SymbolSpec("BTCUSDT", "linear", symbol_id=3),
                       SymbolSpec("BTCUSDT", "spot", ("trades", "bbo"), symbol_id=4))
    feed.on_frame("linear", b'{"topic":"publicTrade.BTCUSDT","type":"snapshot","ts":9,"data":'
                  b'[{"T":4,"s":"BTCUSDT","S":"Sell","v":"0.5","p":"65000.1",'
                  b'"i":"a9188a0a-82bc-50de-be60-03eedbe3cdd7","L":"MinusTick","BT":false}]}',
                  11, 22)
    feed.on_frame("spot", b'{"topic":"publicTrade.BTCUSDT","ts":9,"type":"snapshot","data":'
                  b'[{"i":"2290000000012345678","T":5,"p":"65000","v":"1","S":"Buy","s":'
                  b'"BTCUSDT","BT":false}]}', 12, 23)
    t = outs["trades"].array()
    assert t["symbol_id"].tolist() == [3, 4] and t["market"].tolist() == [2, 1]
    assert t["side"].tolist() == [Side.SELL, Side.BUY] and t["exchange"].tolist() == [2, 2]
    assert t["flags"].tolist() == [FLAG_ID_HASHED, 0] and t["trade_id"][1] == 2290000000012345678
    assert t["ts_exchange_ns"].tolist() == [4_000_000, 5_000_000]
    assert (t["ts_recv_ns"][0], t["ts_mono_ns"][0], t["price"][0], t["qty"][0]) == (
        11, 22, 65000.1, 0.5)
    # level 1: every message is the whole top; an empty side is NaN with size 0; the 3 s
    # re-send of an unchanged top (same u) is a duplicate
    for b, a, u in (([["10", "2"]], [["11", "3"]], 7), ([["10", "2"]], [["11", "3"]], 7),
                    ([], [["11", "4"]], 8)):
        feed.on_frame("spot", _ob("BTCUSDT", "snapshot", u, b, a, depth=1, ts=8), 1, 1)
    bbo = outs["bbo"].array()
    assert len(bbo) == 2 and feed.counts[Count.DUPLICATES] == 1
    assert bbo[0][["bid_px", "bid_qty", "ask_px", "ask_qty", "update_id"]].tolist() == (
        10.0, 2.0, 11.0, 3.0, 7)
    assert math.isnan(bbo[1]["bid_px"]) and bbo[1]["bid_qty"] == 0 and bbo[1]["ask_qty"] == 4
    assert bbo[1]["ts_exchange_ns"] == 8_000_000 and bbo[1]["symbol_id"] == 4
    assert feed.counts[Count.SNAPSHOTS] == 0  # the BBO is not a book
    feed.on_frame("linear", b'{"topic":"allLiquidation.BTCUSDT","type":"snapshot","ts":9,'
                  b'"data":[{"T":6,"s":"BTCUSDT","S":"Buy","v":"0.003","p":"64000"},'
                  b'{"T":7,"s":"BTCUSDT","S":"Sell","v":"1","p":"66000"}]}', 1, 1)
    liq = outs["liquidations"].array()
    assert liq["side"].tolist() == [Side.SELL, Side.BUY]  # a long is closed by a sell
    assert liq["price"].tolist() == [64000.0, 66000.0] and liq["qty"].tolist() == [0.003, 1.0]
    assert liq["ts_exchange_ns"].tolist() == [6_000_000, 7_000_000]
    # tickers: a delta before the snapshot is dropped; a lastPrice-only delta emits nothing
    tick = b'{"topic":"tickers.BTCUSDT","type":"%s","ts":%d,"cs":1,"data":%s}'
    feed.on_frame("linear", tick % (b"delta", 1, b'{"symbol":"BTCUSDT","markPrice":"1"}'), 1, 1)
    feed.on_frame("linear", tick % (b"snapshot", 2, b'{"symbol":"BTCUSDT","markPrice":"2",'
                                    b'"indexPrice":"3","fundingRate":"","nextFundingTime":"5",'
                                    b'"openInterest":"6","openInterestValue":"7"}'), 1, 1)
    feed.on_frame("linear", tick % (b"delta", 3, b'{"symbol":"BTCUSDT","lastPrice":"9"}'), 1, 1)
    feed.on_frame("linear", tick % (b"delta", 4, b'{"symbol":"BTCUSDT","openInterest":"8"}'),
                  1, 1)
    assert feed.counts[Count.DROPPED_NOT_LIVE] == 1 and feed.counts[Count.DECODE_ERRORS] == 0
    funding = outs["funding"].array()
    assert len(funding) == 1 and funding[0]["ts_exchange_ns"] == 2_000_000
    assert (funding[0]["mark_px"], funding[0]["index_px"], funding[0]["next_funding_ns"]) == (
        2.0, 3.0, 5_000_000)
    assert math.isnan(funding[0]["funding_rate"]) and math.isnan(funding[0]["predicted_rate"])
    oi = outs["open_interest"].array()
    assert oi[["open_interest", "open_interest_value"]].tolist() == [(6.0, 7.0), (8.0, 7.0)]
    assert oi["ts_exchange_ns"].tolist() == [2_000_000, 4_000_000]


def test_topic_not_first_is_still_routed() -> None:
    feed, outs = _feed()
    feed.on_frame("linear", b'{"type":"snapshot","ts":1,"topic":"orderbook.200.ETHUSDT",'
                  b'"data":{"s":"ETHUSDT","b":[["1","1"]],"a":[["2","1"]],"u":5}}', 1, 1)
    assert feed.books[1].state == BookState.LIVE and len(outs["book"].array()) == 1


def test_configuration_errors_name_the_value() -> None:
    with pytest.raises(FeedError, match="inverse"):
        _feed(SymbolSpec("BTCUSD", "inverse", symbol_id=0))
    with pytest.raises(FeedError, match="depth_levels 25 "):
        _feed(depth_levels=25)
    with pytest.raises(FeedError, match=r"depth_levels 500 .*\(spot\)"):
        _feed(SymbolSpec("BTCUSDT", "spot", ("book",), symbol_id=0), depth_levels=500)
    with pytest.raises(FeedError, match="spot has no"):
        _feed(SymbolSpec("BTCUSDT", "spot", ("trades", "funding"), symbol_id=0))
    feed, _ = _feed(depth_levels=500)
    assert feed.resubscribe_frames(0)[1][1] == (
        b'{"op":"subscribe","req_id":"resync-0","args":["orderbook.500.BTCUSDT"]}')


def test_connections_and_resubscribe_frames() -> None:
    linear = [SymbolSpec(s, "linear", symbol_id=i) for i, s in enumerate(
        ("BTCUSDT", "ETHUSDT", "SOLUSDT", "DOGEUSDT"))]  # 5 topics each: 20 over 2 frames
    spot = [SymbolSpec("BTCUSDT", "spot", ("trades", "bbo"), symbol_id=10),
            SymbolSpec("ETHUSDT", "spot", ("book", "trades"), symbol_id=11)]
    urls = BybitUrls(linear_ws="ws://127.0.0.1:1/v5/public/linear",
                     spot_ws="ws://127.0.0.1:1/v5/public/spot")
    feed, _ = _feed(*linear, *spot, urls=urls, depth_levels=50)
    assert BybitFeed.urls_type is BybitUrls  # the worker builds urls from config with it
    conns = {c.key: c for c in feed.connections()}
    assert set(conns) == {"linear", "spot"}
    lin, spo = conns["linear"], conns["spot"]
    assert (lin.url, spo.url) == (urls.linear_ws, urls.spot_ws)
    assert lin.symbol_ids == (0, 1, 2, 3) and spo.symbol_ids == (11,)
    for c in (lin, spo):
        assert c.ping == b'{"op":"ping"}' and c.ping_interval_s == 20 and c.max_lifetime_s == 0
    frames = [msgspec.json.decode(f) for f in lin.subscribe]
    assert [len(f["args"]) for f in frames] == [10, 10]
    assert [f["req_id"] for f in frames] == ["linear-0", "linear-1"]
    args = [a for f in frames for a in f["args"]]
    assert len(set(args)) == 20 and {f["op"] for f in frames} == {"subscribe"}
    assert Counter(a.rpartition(".")[0] for a in args) == {
        "orderbook.50": 4, "orderbook.1": 4, "publicTrade": 4, "tickers": 4,
        "allLiquidation": 4}
    assert [msgspec.json.decode(f)["args"] for f in spo.subscribe] == [[
        "orderbook.1.BTCUSDT", "publicTrade.BTCUSDT", "orderbook.50.ETHUSDT",
        "publicTrade.ETHUSDT"]]
    # the venue (Bybit's protocol) accepts every frame: its replies are all acks and pongs
    for key, conn in conns.items():
        session = open_session("bybit", f"/v5/public/{key}")
        for frame in (*conn.subscribe, conn.ping or b""):
            for reply in session.on_text(frame):
                feed.on_frame(key, reply, 1, 1)
    assert feed.counts[Count.CONTROL_FRAMES] == 5 and feed.counts[Count.EXCHANGE_ERRORS] == 0
    assert feed.resubscribe_frames(11) == ("spot", [
        b'{"op":"unsubscribe","req_id":"resync-11","args":["orderbook.50.ETHUSDT"]}',
        b'{"op":"subscribe","req_id":"resync-11","args":["orderbook.50.ETHUSDT"]}'])
    session = open_session("bybit", "/v5/public/spot")
    for frame in feed.resubscribe_frames(11)[1]:
        assert msgspec.json.decode(session.on_text(frame)[0])["success"]
    with pytest.raises(FeedError, match="no book"):
        feed.resubscribe_frames(10)


def test_discover_from_topics() -> None:
    frames = [_ob("BTCUSDT", "snapshot", 1, [], [], depth=1), _snap("ETHUSDT", 1),
              b'{"topic":"publicTrade.ETHUSDT","data":[]}', b'{"topic":"tickers.ETHUSDT"}',
              b'{"topic":"allLiquidation.SOLUSDT"}', b'{"topic":"kline.1.XRPUSDT"}',
              b'{"success":true,"op":"subscribe"}']
    symbols, options = BybitFeed.discover(frames)
    assert options == {"depth_levels": 200}
    assert [(s.symbol, s.market, s.streams, s.symbol_id) for s in symbols] == [
        ("BTCUSDT", "linear", ("bbo",), 0),
        ("ETHUSDT", "linear", ("book", "depth", "funding", "open_interest", "trades"), 1),
        ("SOLUSDT", "linear", ("liquidations",), 2)]
    spot, _ = BybitFeed.discover(frames, "spot")  # no derivatives streams on spot
    assert [(s.symbol, s.streams) for s in spot] == [("BTCUSDT", ("bbo",)),
                                                     ("ETHUSDT", ("book", "depth", "trades"))]


def test_synthetic_venue_frames() -> None:
    frames, _ = generate(SyntheticConfig(exchange="bybit", symbols=3, rate_hz=1_000,
                                         seconds=15))
    sink = ReplaySink()
    symbols, options = BybitFeed.discover([f for _, _, f in frames])
    assert options == {"depth_levels": 50} and len(symbols) == 3
    feed = BybitFeed(symbols, Emitter(2, sink.outputs), **options)
    for ns, _, frame in frames:
        feed.on_frame("linear", frame, ns, ns)
    counts = feed.counts
    assert counts[Count.DECODE_ERRORS] == counts[Count.UNKNOWN_FRAMES] == 0
    assert counts[Count.GAPS] == counts[Count.CROSSED] == counts[Count.RESYNCS] == 0
    assert set(feed.book_states().values()) == {"LIVE"}
    last_aggressor: dict[str, str] = {}
    seen: Counter[str] = Counter()
    for line in lines(feed, sink):
        seen[line["stream"]] += 1
        if line["stream"] == "book":
            assert line["state"] == "LIVE" and line["bids"] and line["asks"]
            assert line["bids"][0][0] < line["asks"][0][0]
        elif line["stream"] == "trade":
            last_aggressor[line["symbol"]] = line["side"]
        elif line["stream"] == "liquidation":
            # the burst's trades are the liquidation orders' own market orders
            assert line["side"] == last_aggressor[line["symbol"]]
    assert seen["liquidation"] > 0 and seen["trade"] > 1_000 and seen["book"] > 10_000
    assert seen["funding"] == seen["open_interest"] == 3 + 3 * 15
