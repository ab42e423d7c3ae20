"""The Binance feed on the real recordings, through the offline replay path (the worker's exact
decode → book → record code): every book record equals an independent reference book, trades
and BBO are complete, and broken input resyncs only the affected symbol."""

from __future__ import annotations

import heapq
from pathlib import Path

import msgspec
import pytest
from test_binance_book import ReferenceBook

from shm.layout import FLAG_LAST_IN_MESSAGE, FLAG_NOT_LIVE, FLAG_SNAPSHOT, BookState, Side
from workers.exchanges.binance import BinanceFeed
from workers.exchanges.feed import Count, SymbolSpec
from workers.exchanges.records import Collector, Emitter
from workers.exchanges.replay import lines, load_frames, replay

DATA = Path(__file__).resolve().parents[1] / "data" / "recorded" / "binance"


def _check_against_reference(name: str) -> dict[str, int]:
    feed, sink = replay("binance", DATA / f"{name}.frames.jsonl.gz",
                        [DATA / f"{name}.rest_depth_snapshot.json"])
    snapshot = msgspec.json.decode((DATA / f"{name}.rest_depth_snapshot.json").read_bytes())
    ref = ReferenceBook([(float(p), float(q)) for p, q in snapshot["bids"]],
                        [(float(p), float(q)) for p, q in snapshot["asks"]])
    frames = {}
    for _, frame in load_frames(DATA / f"{name}.frames.jsonl.gz"):
        if b"depthUpdate" in frame:
            ev = msgspec.json.decode(frame)["data"]
            frames[ev["u"]] = ev
    counts = {"book": 0, "depth": 0, "trade": 0, "bbo": 0}
    last_trade = None
    for line in lines(feed, sink):
        counts[line["stream"]] += 1
        if line["stream"] == "book":
            ev = frames[line["update_id"]]
            ref.apply([(float(p), float(q)) for p, q in ev["b"]],
                      [(float(p), float(q)) for p, q in ev["a"]])
            assert line["state"] == "LIVE" and line["epoch"] == 0
            assert line["bids"] == [[p, q] for p, q in heapq.nlargest(20, ref.bids.items())]
            assert line["asks"] == [[p, q] for p, q in heapq.nsmallest(20, ref.asks.items())]
        elif line["stream"] == "trade":
            if last_trade is not None:
                assert line["trade_id"] == last_trade + 1  # README: strictly consecutive
            last_trade = line["trade_id"]
            assert line["side"] in ("BUY", "SELL")
    assert feed.counts[Count.DECODE_ERRORS] == 0 and feed.counts[Count.GAPS] == 0
    return counts


def test_usdm_replay_equals_reference_after_every_event() -> None:
    counts = _check_against_reference("hftbacktest_usdm_btcusdt_20240808")
    # README: 6,551 depth events, 4 older than the snapshot; 21,313 trades; 66,089 bookTicker
    assert counts["book"] == 6_547 and counts["trade"] == 21_313 and counts["bbo"] == 66_089


def test_spot_replay_equals_reference_after_every_event() -> None:
    counts = _check_against_reference("hftbacktest_spot_btcusdt_20240808")
    assert counts["book"] == 3_449 and counts["trade"] == 9_757 and counts["bbo"] == 28_040


def test_four_symbols_each_with_its_own_snapshot() -> None:
    name = "cryptofeed_usdm_4sym_20210722"
    snaps = sorted(DATA.glob(f"{name}.rest_depth_*.json"))
    feed, sink = replay("binance", DATA / f"{name}.frames.jsonl", snaps)
    assert set(feed.book_states().values()) == {"LIVE"} and len(feed.books) == 4
    assert feed.counts[Count.GAPS] == 0
    assert feed.counts[Count.UNKNOWN_FRAMES] == 67       # kline_1m: not ours
    assert sink.count("trades") == 91  # aggTrade


def _feed() -> tuple[BinanceFeed, dict[str, Collector]]:
    from shm import STREAMS
    outs = {s: Collector(STREAMS[s]) for s in ("trades", "depth", "book", "bbo")}
    spec = [SymbolSpec("BTCUSDT", "linear", ("trades", "depth", "book", "bbo"), 0),
            SymbolSpec("ETHUSDT", "linear", ("trades", "depth", "book", "bbo"), 1)]
    return BinanceFeed(spec, Emitter(1, outs)), outs


def _depth(sym: str, first: int, last: int, prev: int, bids: list[list[str]],
           asks: list[list[str]]) -> bytes:
    return msgspec.json.encode({"stream": f"{sym.lower()}@depth@100ms", "data": {
        "e": "depthUpdate", "E": 1, "T": 1, "s": sym, "U": first, "u": last, "pu": prev,
        "b": bids, "a": asks}})


def test_gap_resyncs_only_that_symbol_and_announces_it() -> None:
    feed, outs = _feed()
    snap = b'{"lastUpdateId":100,"bids":[["10.0","1"]],"asks":[["11.0","1"]]}'
    for sid, sym in ((0, "BTCUSDT"), (1, "ETHUSDT")):
        feed.on_frame("public", _depth(sym, 99, 101, 98, [["10.0", "2"]], []), 1, 1)
        assert feed.requests[-1].kind == "snapshot" and feed.requests[-1].symbol_id == sid
        assert feed.on_snapshot(sid, snap, 1, 1)
    assert feed.book_states() == {"linear:BTCUSDT": "LIVE", "linear:ETHUSDT": "LIVE"}
    feed.on_frame("public", _depth("BTCUSDT", 105, 107, 104, [], []), 2, 2)  # pu != 101
    assert feed.book_states() == {"linear:BTCUSDT": "RESYNCING", "linear:ETHUSDT": "LIVE"}
    assert feed.counts[Count.GAPS] == 1 and feed.books[0].epoch == 1
    book = outs["book"].array()
    last = book[-1]
    assert last["state"] == BookState.RESYNCING and last["flags"] & FLAG_NOT_LIVE
    assert last["n_bids"] == 0 and last["epoch"] == 1
    # the next event is buffered for the new snapshot; nothing is published as LIVE
    before = len(outs["depth"].array())
    feed.on_frame("public", _depth("BTCUSDT", 108, 109, 107, [["10.0", "3"]], []), 3, 3)
    assert len(outs["depth"].array()) == before and feed.counts[Count.BUFFERED] == 3
    assert feed.on_snapshot(0, b'{"lastUpdateId":108,"bids":[["10.0","1"]],"asks":[["11.0",'
                               b'"1"]]}', 4, 4)
    assert feed.books[0].state == BookState.LIVE and feed.books[0].top()[1] == 3.0
    depth = outs["depth"].array()
    assert depth[-1]["epoch"] == 1 and depth[-1]["flags"] & FLAG_LAST_IN_MESSAGE
    # the bridging event publishes the whole book, flagged as a snapshot, not a diff
    snap = depth[(depth["flags"] & FLAG_SNAPSHOT) != 0]
    snap = snap[snap["epoch"] == 1]
    levels = sorted(zip(snap["price"].tolist(), snap["qty"].tolist(), strict=True))
    assert levels == [(10.0, 3.0), (11.0, 1.0)]


def test_crossed_book_resyncs() -> None:
    feed, outs = _feed()
    feed.on_snapshot(0, b'{"lastUpdateId":100,"bids":[["10.0","1"]],"asks":[["11.0","1"]]}',
                     1, 1)
    feed.on_frame("public", _depth("BTCUSDT", 100, 101, 99, [["12.0", "1"]], []), 2, 2)
    assert feed.counts[Count.CROSSED] == 1 and feed.books[0].state == BookState.RESYNCING
    assert not any(r["state"] == BookState.LIVE and r["n_bids"] and r["bid_px"][0] >= 11.0
                   for r in outs["book"].array())


@pytest.mark.parametrize("frame", [
    b"", b"{", b"null", b"[]", b'{"stream":"btcusdt@trade","data":{}}',
    b'{"stream":"btcusdt@trade","data":{"E":"x","s":"BTCUSDT"}}',
    b'{"stream":"nosuch@trade","data":{}}', b'{"stream":"btcusdt@depth@100ms","data":[1]}',
    b'{"error":{"code":2,"msg":"Invalid request"},"id":3}', b'{"result":null,"id":1}',
    # NaN, infinite or negative levels would corrupt a sorted book without crossing it
    b'{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":1,"s":"BTCUSDT","U":1,'
    b'"u":2,"pu":0,"b":[["10.0","nan"]],"a":[]}}',
    b'{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":1,"s":"BTCUSDT","U":1,'
    b'"u":2,"pu":0,"b":[],"a":[["inf","1"]]}}',
    b'{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":1,"s":"BTCUSDT","U":1,'
    b'"u":2,"pu":0,"b":[["10.0","-3"]],"a":[]}}',
])
def test_bad_frames_are_counted_never_raised(frame: bytes) -> None:
    feed, _ = _feed()
    feed.on_frame("public", frame, 1, 1)
    assert feed.counts[Count.FRAMES] == 1
    assert sum(feed.counts[c] for c in (Count.DECODE_ERRORS, Count.UNKNOWN_FRAMES,
                                        Count.EXCHANGE_ERRORS, Count.CONTROL_FRAMES)) == 1


def test_trade_side_and_stamps() -> None:
    feed, outs = _feed()
    feed.on_frame("public", b'{"stream":"btcusdt@trade","data":{"e":"trade","E":5,"T":4,'
                            b'"s":"BTCUSDT","t":7,"p":"1.5","q":"2","m":true}}', 11, 22)
    rec = outs["trades"].array()[0]
    assert (rec["price"], rec["qty"], rec["trade_id"], rec["side"]) == (1.5, 2.0, 7, Side.SELL)
    assert (rec["ts_exchange_ns"], rec["ts_recv_ns"], rec["ts_mono_ns"]) == (4_000_000, 11, 22)


def test_latest_table_names_are_unambiguous() -> None:
    from workers.exchanges.worker import latest_names
    specs = [SymbolSpec("BTCUSDT", "linear", symbol_id=0), SymbolSpec("ETHUSDT", "linear",
                                                                      symbol_id=1),
             SymbolSpec("BTCUSDT", "spot", ("trades",), 2)]
    assert latest_names(specs) == {0: "BTCUSDT@linear", 1: "ETHUSDT", 2: "BTCUSDT@spot"}


def test_depth_stream_names_follow_each_market() -> None:
    spot = [SymbolSpec("BTCUSDT", "spot", ("depth",), 0)]
    fut = [SymbolSpec("BTCUSDT", "linear", ("depth",), 0)]
    assert "btcusdt@depth/" in BinanceFeed(spot, Emitter(1, {}), depth_interval_ms=1000
                                           ).connections()[0].url + "/"
    assert "btcusdt@depth@500ms" in BinanceFeed(fut, Emitter(1, {}), depth_interval_ms=500
                                                ).connections()[0].url
    with pytest.raises(Exception, match="not offered for spot"):
        BinanceFeed(spot, Emitter(1, {}), depth_interval_ms=0)
