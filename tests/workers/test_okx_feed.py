"""The OKX feed on the real recordings, through the offline replay path (the worker's exact
decode → book → record code): every book record is checksum-verified, LIVE and equal to an
independent dict reference; a corrupted message, a seqId gap or a failed snapshot resyncs only
that instrument; synthetic venue frames give LIVE books, funding, open interest and liquidations
in base units (contracts × ctVal); the subscriptions are ones the venue's protocol accepts."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import pytest
from test_okx_book import ReferenceBook

from shm.layout import (
    FLAG_CHECKSUM_OK,
    FLAG_LAST_IN_MESSAGE,
    FLAG_NOT_LIVE,
    FLAG_SNAPSHOT,
    BookState,
    Side,
)
from workers.exchanges.feed import Count, FeedError, Request, SymbolSpec
from workers.exchanges.okx import OkxFeed, OkxUrls, inst_type, market_of
from workers.exchanges.records import FEED_STREAMS, Emitter
from workers.exchanges.replay import ReplaySink, lines, load_frames, make_feed, replay
from workers.venue import SyntheticConfig, generate, open_session

DATA = Path(__file__).resolve().parents[1] / "data" / "recorded" / "okx"
BOOKS_3INST = "cryptofeed_books_3inst_20220513"
TBT_10INST = "cryptofeed_books-l2-tbt_10inst_20210722_conn1"
INVERSE = {"BTC-USD-220527", "UNI-USD-SWAP"}  # coin-margined: a contract is worth USD
SWAP = "BTC-USDT-SWAP"


def _frames(name: str) -> list[bytes]:
    return [f for _, f in load_frames(DATA / f"{name}.frames.jsonl")]


def _base(inst: str, px: str, sz: str, contract: float = 1.0) -> float:
    """The documented size rule: contracts × contract size, ÷ price for inverse contracts."""
    return float(sz) * contract / float(px) if inst in INVERSE else float(sz) * contract


def _expected(name: str) -> dict[str, dict[str, list[Any]]]:
    """Independently (json + dicts): per instrument, each book message's top 20 and levels."""
    refs: dict[str, ReferenceBook] = {}
    out: dict[str, dict[str, list[Any]]] = {}
    for frame in _frames(name):
        msg = json.loads(frame)
        if "event" in msg or not msg["arg"]["channel"].startswith("books"):
            continue
        inst = msg["arg"]["instId"]
        exp = out.setdefault(inst, {"book": [], "depth": []})
        for d in msg["data"]:
            snap = msg["action"] == "snapshot"
            ref = refs[inst] = ReferenceBook() if snap else refs[inst]
            ref.apply(d["bids"], d["asks"])
            assert ref.checksum() == d["checksum"]
            bids, asks = ref.best_first()
            exp["book"].append((int(d["ts"]), [[float(p), _base(inst, p, s)] for p, s in bids[:20]],
                                [[float(p), _base(inst, p, s)] for p, s in asks[:20]]))
            flags = FLAG_CHECKSUM_OK | (FLAG_SNAPSHOT if snap else 0)
            exp["depth"] += [(side, float(lv[0]), _base(inst, lv[0], lv[1]), int(d["ts"]), flags)
                             for side, levels in (("bid", d["bids"]), ("ask", d["asks"]))
                             for lv in levels]
    return out


@pytest.mark.parametrize(("name", "messages", "trades", "tickers"), [
    (BOOKS_3INST, 290, 74, 28), (TBT_10INST, 1_504, 36, 46)])
def test_recorded_replay_equals_independent_reference(name: str, messages: int, trades: int,
                                                      tickers: int) -> None:
    feed, sink = replay("okx", DATA / f"{name}.frames.jsonl")
    expected = _expected(name)
    got: dict[str, dict[str, list[Any]]] = {i: {"book": [], "depth": []} for i in expected}
    seen: Counter[str] = Counter()
    for line in lines(feed, sink):
        seen[line["stream"]] += 1
        if line["stream"] == "book":
            assert line["checksum_ok"] is True and line["state"] == "LIVE" and line["epoch"] == 0
            assert line["update_id"] * 1_000_000 == line["ts_exchange_ns"]  # no seqId: ts
            got[line["symbol"]]["book"].append((line["update_id"], line["bids"], line["asks"]))
        elif line["stream"] == "depth":
            assert line["prev_update_id"] == -1 and line["state"] == "LIVE"
            got[line["symbol"]]["depth"].append((line["side"], line["price"], line["qty"],
                                                 line["update_id"],
                                                 line["flags"] & ~FLAG_LAST_IN_MESSAGE))
        elif line["stream"] == "trade":
            assert line["price"] > 0 and line["qty"] > 0 and line["side"] in ("BUY", "SELL")
    assert got == expected
    assert seen == {"book": messages, "depth": sum(len(e["depth"]) for e in expected.values()),
                    "trade": trades}
    counts = feed.counts
    assert counts[Count.CHECKSUM_FAILURES] == counts[Count.GAPS] == 0
    assert counts[Count.DECODE_ERRORS] == counts[Count.RESYNCS] == 0
    assert counts[Count.UNKNOWN_FRAMES] == tickers  # subscribed by the recorder, not by us
    assert counts[Count.SNAPSHOTS] == len(feed.books) and feed.pending == set()


def test_discover_from_the_recordings() -> None:
    symbols, options = OkxFeed.discover(_frames(TBT_10INST))
    assert options == {"book_channel": "books-l2-tbt"}
    assert {s.symbol: s.market for s in symbols} == {
        "AUCTION-USDT": "spot", "BTC-USD-210924-42000-P": "option",
        "BTC-USD-210924-66000-C": "option", "DHT-USDT": "spot", "FUN-BTC": "spot",
        "OKT-BTC": "spot", "ONT-USDT": "spot", "PAY-BTC": "spot",
        "TRX-USDT-210924": "linear", "XMR-USDT-SWAP": "linear"}
    assert {s.streams for s in symbols} == {("book", "depth", "trades")}
    assert [s.symbol_id for s in symbols] == list(range(10))
    symbols, options = OkxFeed.discover(_frames(BOOKS_3INST))
    assert options == {"book_channel": "books"}
    assert {s.symbol: s.market for s in symbols} == {
        "BTC-USD-220527": "inverse", "BTC-USDT": "spot", "UNI-USD-SWAP": "inverse"}
    assert (inst_type("BTC-USD-220527"), inst_type("ETH-USD-240628-3000-P")) == (
        "FUTURES", "OPTION")
    assert (market_of("BTC-USDC-SWAP"), market_of("BTC-USD_UM-SWAP")) == ("linear", "linear")


def test_corrupted_update_resyncs_only_that_instrument() -> None:
    frames = _frames(BOOKS_3INST)
    updates = [i for i, f in enumerate(frames) if b'"instId":"BTC-USDT"' in f
               and b'"action":"update"' in f and b'"bids":[[' in f]
    target = updates[9]
    msg = json.loads(frames[target])
    msg["data"][0]["bids"][0][1] += "1"  # one size string: still a valid message
    frames[target] = json.dumps(msg, separators=(",", ":")).encode()
    sink = ReplaySink()
    feed = make_feed("okx", frames, Emitter(3, sink.outputs))
    sid = next(s.symbol_id for s in feed.symbols.values() if s.symbol == "BTC-USDT")
    for frame in frames[:target + 1]:
        feed.on_frame("*", frame, 1, 1)
    assert feed.counts[Count.CHECKSUM_FAILURES] == 1 and feed.counts[Count.RESYNCS] == 1
    book = feed.books[sid]
    assert book.state == BookState.RESYNCING and book.epoch == 1
    stream, announce = sink.chunks[-1]  # the wrong book is never published: only this
    assert stream == "book" and announce["symbol_id"][0] == sid
    assert announce["state"][0] == BookState.RESYNCING and announce["flags"][0] & FLAG_NOT_LIVE
    assert announce["n_bids"][0] == announce["n_asks"][0] == 0 and announce["epoch"][0] == 1
    assert list(feed.requests) == [Request("resubscribe", sid)]
    assert feed.resubscribe_frames(sid) == ("public", [
        b'{"op":"unsubscribe","args":[{"channel":"books","instId":"BTC-USDT"}]}',
        b'{"op":"subscribe","args":[{"channel":"books","instId":"BTC-USDT"}]}'])
    mark = len(sink.chunks)
    for frame in frames[target + 1:]:
        feed.on_frame("*", frame, 2, 2)
    later = sum(1 for i in updates if i > target)
    assert feed.counts[Count.DROPPED_NOT_LIVE] == later > 0
    assert not any(int(c["symbol_id"][0]) == sid for s, c in sink.chunks[mark:]
                   if s in ("book", "depth"))  # its trades go on
    assert feed.book_states() == {"inverse:BTC-USD-220527": "LIVE", "spot:BTC-USDT": "RESYNCING",
                                  "inverse:UNI-USD-SWAP": "LIVE"}
    # the resubscription's snapshot (the recorded one again) and its updates: LIVE at epoch 1
    snapshot = next(f for f in frames if b'"instId":"BTC-USDT"' in f and b'"snapshot"' in f)
    mark = len(sink.chunks)
    for frame in [snapshot, *(frames[i] for i in updates[:3])]:
        feed.on_frame("*", frame, 3, 3)
    assert book.state == BookState.LIVE and book.epoch == 1
    published = [c for s, c in sink.chunks[mark:] if s == "book"]
    assert len(published) == 4 and all(c["epoch"][0] == 1 and c["state"][0] == BookState.LIVE
                                       and c["flags"][0] == FLAG_CHECKSUM_OK for c in published)
    assert feed.counts[Count.CHECKSUM_FAILURES] == 1


class _Venue:
    """Builds OKX book frames with correct checksums (from the reference book)."""

    def __init__(self) -> None:
        self.refs: dict[str, ReferenceBook] = {}

    def book(self, inst: str, action: str, seq: int | None, prev: int | None,
             bids: list[list[str]], asks: list[list[str]], ts: int = 5,
             checksum: int | None = None) -> bytes:
        if action == "snapshot":
            self.refs[inst] = ReferenceBook()
        ref = self.refs.setdefault(inst, ReferenceBook())
        ref.apply(bids, asks)
        d: dict[str, Any] = {"asks": asks, "bids": bids, "ts": str(ts),
                             "checksum": ref.checksum() if checksum is None else checksum}
        if seq is not None:
            d.update(seqId=seq, prevSeqId=prev)
        return msgspec.json.encode({"arg": {"channel": "books", "instId": inst},
                                    "action": action, "data": [d]})


def _lv(*levels: tuple[str, str]) -> list[list[str]]:
    return [[p, s, "0", "1"] for p, s in levels]


def _feed(*specs: SymbolSpec, **options: Any) -> tuple[OkxFeed, ReplaySink]:
    specs = specs or (SymbolSpec(SWAP, "linear", symbol_id=0, contract_size=0.01),
                      SymbolSpec("ETH-USDT-SWAP", "linear", symbol_id=1, contract_size=0.1))
    sink = ReplaySink()
    return OkxFeed(list(specs), Emitter(3, sink.outputs), **options), sink


def _records(sink: ReplaySink, stream: str) -> list[Any]:
    return [r for s, r in sink.records() if s == stream]


def test_seq_id_chain_duplicate_heartbeat_gap_and_new_snapshot() -> None:
    feed, sink = _feed()
    v = _Venue()
    feed.on_frame("public", v.book(SWAP, "snapshot", 10, -1, _lv(("100.5", "300"), ("100", "7")),
                                   _lv(("101", "250"))), 11, 22)
    feed.on_frame("public", v.book("ETH-USDT-SWAP", "snapshot", 1, -1, _lv(("5", "1")),
                                   _lv(("6", "1"))), 1, 1)
    assert feed.book_states() == {f"linear:{SWAP}": "LIVE", "linear:ETH-USDT-SWAP": "LIVE"}
    depth = _records(sink, "depth")[:3]
    assert [(r["price"], r["qty"], r["side"]) for r in depth] == [
        (100.5, 3.0, 1), (100.0, 0.07, 1), (101.0, 2.5, -1)]  # contracts × ctVal 0.01
    assert [r["flags"] for r in depth] == [FLAG_CHECKSUM_OK | FLAG_SNAPSHOT] * 2 + [
        FLAG_CHECKSUM_OK | FLAG_SNAPSHOT | FLAG_LAST_IN_MESSAGE]
    assert (depth[0]["update_id"], depth[0]["prev_update_id"], depth[0]["ts_exchange_ns"],
            depth[0]["ts_recv_ns"], depth[0]["ts_mono_ns"]) == (10, -1, 5_000_000, 11, 22)
    update = v.book(SWAP, "update", 11, 10, _lv(("100.5", "0")), _lv(("100.9", "1")))
    feed.on_frame("public", update, 2, 2)
    top = _records(sink, "book")[-1]
    assert (top["update_id"], top["flags"], top["n_bids"], top["n_asks"]) == (
        11, FLAG_CHECKSUM_OK, 1, 2)
    assert (top["bid_px"][0], top["bid_qty"][0], top["ask_px"][0], top["ask_qty"][0]) == (
        100.0, 0.07, 100.9, 0.01)
    assert _records(sink, "depth")[-1]["prev_update_id"] == 10
    n = len(sink.chunks)
    feed.on_frame("public", update, 3, 3)  # the same message again
    assert feed.counts[Count.DUPLICATES] == 1 and len(sink.chunks) == n
    feed.on_frame("public", v.book(SWAP, "update", 11, 11, [], []), 4, 4)  # no-change heartbeat
    assert len(sink.chunks) == n + 1 and _records(sink, "book")[-1]["update_id"] == 11
    feed.on_frame("public", v.book(SWAP, "update", 13, 12, _lv(("99", "1")), []), 5, 5)
    assert feed.counts[Count.GAPS] == 1 and feed.books[0].epoch == 1
    assert feed.book_states() == {f"linear:{SWAP}": "RESYNCING", "linear:ETH-USDT-SWAP": "LIVE"}
    assert list(feed.requests) == [Request("resubscribe", 0)]
    feed.on_frame("public", v.book(SWAP, "update", 14, 13, _lv(("99", "2")), []), 6, 6)
    assert feed.counts[Count.DROPPED_NOT_LIVE] == 1
    assert feed.book_seen == {0: 6, 1: 1}  # dropped, yet seen: what the watchdog reads
    feed.on_frame("public", v.book(SWAP, "snapshot", 20, -1, _lv(("98", "1")), _lv(("99", "1"))),
                  7, 7)
    assert feed.books[0].state == BookState.LIVE and feed.books[0].epoch == 1
    assert feed.counts[Count.SNAPSHOTS] == 3 and feed.counts[Count.RESYNCS] == 1
    assert all(int(r["state"]) == BookState.LIVE for r in _records(sink, "depth"))


def test_failed_snapshot_asks_again_and_crossed_and_overflow() -> None:
    feed, sink = _feed()
    v = _Venue()
    feed.on_frame("public", v.book(SWAP, "update", 3, 2, [], []), 1, 1)  # before any snapshot
    assert feed.counts[Count.GAPS] == 1 and feed.books[0].epoch == 1
    feed.done(feed.requests.popleft())  # the control plane resubscribed
    feed.on_frame("public", v.book(SWAP, "snapshot", 9, -1, _lv(("1", "1")), [], checksum=7),
                  2, 2)
    assert feed.counts[Count.CHECKSUM_FAILURES] == 1 and feed.books[0].n_bids == 0
    assert list(feed.requests) == [Request("resubscribe", 0)] and feed.books[0].epoch == 1
    assert not any(int(r["state"]) == BookState.LIVE for r in _records(sink, "book"))
    feed.on_frame("public", v.book(SWAP, "snapshot", 9, -1, _lv(("1", "1")), _lv(("2", "1"))),
                  3, 3)
    assert feed.books[0].state == BookState.LIVE
    feed.on_frame("public", v.book(SWAP, "update", 10, 9, _lv(("2.5", "1")), []), 4, 4)
    assert feed.counts[Count.CROSSED] == 1 and feed.books[0].state == BookState.RESYNCING
    feed, _ = _feed(book_capacity=2)
    feed.on_frame("public", v.book(SWAP, "snapshot", 1, -1, _lv(("3", "1"), ("2", "1"),
                                                                 ("1", "1")), []), 1, 1)
    assert feed.counts[Count.OVERFLOWS] == 1 and feed.books[0].state == BookState.RESYNCING
    feed.on_disconnect("public", 2, 2)
    assert set(feed.book_states().values()) == {"RESYNCING"} and feed.books[1].epoch == 1


def test_trades_bbo_funding_open_interest_liquidations() -> None:
    feed, sink = _feed(
        SymbolSpec(SWAP, "linear", symbol_id=0, contract_size=0.01),
        SymbolSpec("BTC-USD-SWAP", "inverse", symbol_id=1, contract_size=100),
        SymbolSpec("BTC-USD-240628", "inverse", ("funding",), symbol_id=2, contract_size=100),
        SymbolSpec("BTC-USDT", "spot", ("trades", "bbo"), symbol_id=3))
    push = b'{"arg":{"channel":"%s","instId":"%s"},"data":[%s]}'
    feed.on_frame("public", push % (b"trades", SWAP.encode(), b'{"instId":"BTC-USDT-SWAP",'
                  b'"tradeId":"130639474","px":"42219.9","sz":"3","side":"sell",'
                  b'"ts":"1630048897897","count":"3"}'), 11, 22)
    feed.on_frame("public", push % (b"trades", b"BTC-USD-SWAP", b'{"instId":"BTC-USD-SWAP",'
                  b'"tradeId":"7","px":"50000","sz":"5","side":"buy","ts":"2"}'), 1, 1)
    feed.on_frame("public", push % (b"trades", b"BTC-USDT", b'{"instId":"BTC-USDT",'
                  b'"tradeId":"8","px":"50000","sz":"0.25","side":"buy","ts":"3"}'), 1, 1)
    t = _records(sink, "trades")
    assert [(r["price"], r["qty"], r["trade_id"], r["side"]) for r in t] == [
        (42219.9, 0.03, 130639474, Side.SELL), (50000.0, 0.01, 7, Side.BUY),
        (50000.0, 0.25, 8, Side.BUY)]  # linear ×0.01; inverse ×100 USD / price; spot as is
    assert (t[0]["ts_exchange_ns"], t[0]["ts_recv_ns"], t[0]["ts_mono_ns"], t[0]["exchange"],
            t[0]["market"]) == (1630048897897_000_000, 11, 22, 3, 2)
    feed.on_frame("public", push % (b"bbo-tbt", SWAP.encode(), b'{"asks":[["8476.98","415","0",'
                  b'"13"]],"bids":[["8476.97","256","0","12"]],"ts":"1597026383085",'
                  b'"seqId":123}'), 1, 1)
    feed.on_frame("public", push % (b"bbo-tbt", b"BTC-USDT", b'{"asks":[["2","1.5","0","1"]],'
                  b'"bids":[],"ts":"9"}'), 1, 1)
    b = _records(sink, "bbo")
    assert b[0][["bid_px", "bid_qty", "ask_px", "ask_qty", "update_id"]].tolist() == (
        8476.97, 2.56, 8476.98, 4.15, 123)
    assert math.isnan(b[1]["bid_px"]) and b[1]["bid_qty"] == 0 and b[1]["update_id"] == 9
    # funding: the two channels merged, NaN until known; index price is not subscribed
    feed.on_frame("public", push % (b"funding-rate", SWAP.encode(), b'{"instId":"BTC-USDT-SWAP",'
                  b'"instType":"SWAP","fundingRate":"0.0001","nextFundingRate":"",'
                  b'"fundingTime":"1767254400000","method":"current_period","ts":"10"}'), 1, 1)
    feed.on_frame("public", push % (b"mark-price", SWAP.encode(), b'{"instId":"BTC-USDT-SWAP",'
                  b'"instType":"SWAP","markPx":"42310.6","ts":"11"}'), 1, 1)
    feed.on_frame("public", push % (b"mark-price", b"BTC-USD-240628", b'{"instId":'
                  b'"BTC-USD-240628","markPx":"60000","ts":"12"}'), 1, 1)
    f = _records(sink, "funding")
    assert math.isnan(f[0]["mark_px"]) and f[0]["funding_rate"] == 0.0001
    assert math.isnan(f[0]["predicted_rate"]) and f[0]["next_funding_ns"] == 1767254400000 * 10**6
    assert (f[1]["mark_px"], f[1]["funding_rate"], f[1]["ts_exchange_ns"]) == (
        42310.6, 0.0001, 11_000_000)
    assert all(math.isnan(r["index_px"]) for r in f)
    assert f[2]["mark_px"] == 60000 and math.isnan(f[2]["funding_rate"])  # futures: no funding
    # open interest: oiCcy (coins) when given, else contracts × ctVal (inverse: unknown)
    for inst, body in ((SWAP, b'"oi":"2660239.59","oiCcy":"26602.3959","oiUsd":"2433776053.9"'),
                       (SWAP, b'"oi":"100","oiCcy":""'),
                       ("BTC-USD-SWAP", b'"oi":"100","oiCcy":""')):
        feed.on_frame("public", push % (b"open-interest", inst.encode(), b'{"instId":"%s",%s,'
                      b'"ts":"13"}' % (inst.encode(), body)), 1, 1)
    oi = [tuple(r[["open_interest", "open_interest_value"]].tolist())
          for r in _records(sink, "open_interest")]
    assert oi[:2] == [(26602.3959, 2433776053.9), (1.0, oi[1][1])] and math.isnan(oi[1][1])
    assert math.isnan(oi[2][0])
    # liquidations: one subscription per instType; instruments we do not follow are skipped
    liq = (b'{"arg":{"channel":"liquidation-orders","instType":"SWAP"},"data":['
           b'{"instId":"MINA-USDT-SWAP","instType":"SWAP","details":[{"side":"buy","posSide":'
           b'"short","bkPx":"0.09859","sz":"10975","bkLoss":"0","ccy":"","ts":"14"}]},'
           b'{"instId":"BTC-USDT-SWAP","instType":"SWAP","details":[{"side":"sell","posSide":'
           b'"long","bkPx":"82655.7","sz":"855","ts":"15"},{"side":"buy","posSide":"short",'
           b'"bkPx":"82700","sz":"2","ts":"16"}]},'
           b'{"instId":"BTC-USD-SWAP","instType":"SWAP","details":[{"side":"sell","posSide":'
           b'"long","bkPx":"80000","sz":"8","ts":"17"}]}]}')
    feed.on_frame("public", liq, 1, 1)
    rows = [(r["symbol_id"], r["price"], r["qty"], r["side"], r["ts_exchange_ns"])
            for r in _records(sink, "liquidations")]
    assert rows == [(0, 82655.7, 8.55, Side.SELL, 15_000_000), (0, 82700.0, 0.02, Side.BUY,
                                                                   16_000_000),
                    (1, 80000.0, 0.01, Side.SELL, 17_000_000)]  # the order's side
    assert sum(feed.counts[c] for c in (Count.DECODE_ERRORS, Count.UNKNOWN_FRAMES)) == 0
    subscribed = [a for f in feed.connections()[0].subscribe
                  for a in msgspec.json.decode(f)["args"]]
    assert {"channel": "funding-rate", "instId": "BTC-USD-240628"} not in subscribed
    assert {"channel": "mark-price", "instId": "BTC-USD-240628"} in subscribed
    assert subscribed.count({"channel": "liquidation-orders", "instType": "SWAP"}) == 1


@pytest.mark.parametrize("frame", [
    b"", b"{", b"null", b"[]", b"{}", b'"x"', b"ping",
    b'{"arg":{"channel":"books","instId":"BTC-USDT-SWAP"},"action":"snapshot","data":[1]}',
    b'{"arg":{"channel":"books","instId":"BTC-USDT-SWAP"},"action":"snapshot","data":[{"asks":'
    b'[],"bids":[],"ts":"1"}]}',
    b'{"arg":{"channel":"books","instId":"BTC-USDT-SWAP"},"action":"snapshot","data":[{"asks":'
    b'[["1"]],"bids":[],"ts":"1","checksum":0}]}',
    b'{"arg":{"channel":"books","instId":"BTC-USDT-SWAP"},"action":"snapshot","data":[{"asks":'
    b'[["x","1","0","1"]],"bids":[],"ts":"1","checksum":0}]}',
    b'{"arg":{"channel":"books","instId":"BTC-USDT-SWAP"},"action":"snapshot","data":[{"asks":'
    b'[],"bids":[],"ts":"9223372036854776","checksum":0}]}',
    b'{"arg":{"channel":"books","instId":"BTC-USDT-SWAP"},"action":"snapshot","data":[{"asks":'
    b'[],"bids":[],"ts":"1","checksum":0,"seqId":9223372036854775808,"prevSeqId":-1}]}',
    b'{"arg":{"channel":"trades","instId":"BTC-USDT-SWAP"},"data":[{"instId":"BTC-USDT-SWAP",'
    b'"tradeId":"x","px":"1","sz":"1","side":"buy","ts":"1"}]}',
    b'{"arg":{"channel":"trades","instId":"BTC-USDT-SWAP"},"data":[{"instId":"BTC-USDT-SWAP",'
    b'"tradeId":"1","px":"1","sz":"1","side":"up","ts":"1"}]}',
    b'{"arg":{"channel":"trades","instId":"BTC-USDT-SWAP"},"data":[{"instId":"BTC-USDT-SWAP",'
    b'"tradeId":"1","px":"1","sz":"1","side":"buy","ts":"9223372036854776"}]}',
    b'{"arg":{"channel":"bbo-tbt","instId":"BTC-USDT-SWAP"},"data":[{"asks":[["1"]],"bids":[],'
    b'"ts":"1"}]}',
    b'{"arg":{"channel":"bbo-tbt","instId":"BTC-USDT-SWAP"},"data":[{"asks":[["x","1"]],'
    b'"bids":[],"ts":"1"}]}',
    b'{"arg":{"channel":"funding-rate","instId":"BTC-USDT-SWAP"},"data":[{"instId":"x"}]}',
    b'{"arg":{"channel":"mark-price","instId":"BTC-USDT-SWAP"},"data":[{"instId":"BTC-USDT-SWAP"'
    b',"markPx":"abc","ts":"1"}]}',
    b'{"arg":{"channel":"open-interest","instId":"BTC-USDT-SWAP"},"data":{}}',
    b'{"arg":{"channel":"liquidation-orders","instType":"SWAP"},"data":[{"instId":'
    b'"BTC-USDT-SWAP","details":[{"side":"buy"}]}]}',
    b'{"arg":{"channel":"tickers","instId":"BTC-USDT-SWAP"},"data":[]}',
    b'{"arg":{"channel":"books","instId":"DOGE-USDT-SWAP"},"action":"update","data":[]}',
    b'{"arg":{"channel":"liquidation-orders","instType":"FUTURES"},"data":[]}',
    b'{"event":"error","code":"60018","msg":"Wrong URL or channel","connId":"a"}',
    b'{"event":"subscribe","arg":{"channel":"books","instId":"BTC-USDT-SWAP"},"connId":"a"}',
    b'{"event":"notice","code":"64008","msg":"The connection will soon be closed"}', b"pong",
])
def test_bad_frames_are_counted_never_raised(frame: bytes) -> None:
    feed, _ = _feed(SymbolSpec(SWAP, "linear", symbol_id=0, contract_size=0.01))
    feed.on_frame("public", frame, 1, 1)
    assert feed.counts[Count.FRAMES] == 1
    assert sum(feed.counts[c] for c in (Count.DECODE_ERRORS, Count.UNKNOWN_FRAMES,
                                        Count.EXCHANGE_ERRORS, Count.CONTROL_FRAMES)) == 1


def test_error_event_is_sampled() -> None:
    feed, _ = _feed()
    session = open_session("okx", "/ws/v5/public")
    for request in (b'{"op":"subscribe","args":[{"channel":"nope","instId":"BTC-USDT-SWAP"}]}',
                    b'{"op":"subscribe","args":[{"channel":"books","instId":"BTC-USDT-SWAP"}]}',
                    b"ping", b'{"op":"login"}'):
        for reply in session.on_text(request):
            feed.on_frame("public", reply, 1, 1)
    assert feed.counts[Count.EXCHANGE_ERRORS] == 2 and feed.counts[Count.CONTROL_FRAMES] == 2
    assert feed.samples[-1][0] == "exchange_errors" and b"60012" in feed.samples[-1][1]


def test_configuration_errors_name_the_value() -> None:
    with pytest.raises(FeedError, match="books5"):
        _feed(book_channel="books5")
    with pytest.raises(FeedError, match="BTC-USDT-SWAP is linear, not spot"):
        _feed(SymbolSpec(SWAP, "spot", ("trades",), symbol_id=0))
    with pytest.raises(FeedError, match="BTC-USD-SWAP is inverse, not linear"):
        _feed(SymbolSpec("BTC-USD-SWAP", "linear", symbol_id=0))
    with pytest.raises(FeedError, match="spot has no"):
        _feed(SymbolSpec("BTC-USDT", "spot", ("trades", "funding"), symbol_id=0))
    with pytest.raises(FeedError, match="twice"):
        _feed(SymbolSpec(SWAP, "linear", symbol_id=0), SymbolSpec(SWAP, "linear", symbol_id=1))
    feed, _ = _feed(book_channel="books50-l2-tbt")
    assert b'"books50-l2-tbt"' in feed.resubscribe_frames(1)[1][1]


def test_connections_and_resubscribe_frames() -> None:
    swaps = [SymbolSpec(f"{b}-USDT-SWAP", "linear", symbol_id=i) for i, b in enumerate(
        ("BTC", "ETH", "SOL", "DOGE", "XRP"))]  # 6 channels each, liquidations, spot: 32 args
    spot = SymbolSpec("BTC-USDT", "spot", ("trades",), symbol_id=9)
    urls = OkxUrls(public_ws="ws://127.0.0.1:1/ws/v5/public", rest="http://127.0.0.1:2")
    feed, _ = _feed(*swaps, spot, urls=urls)
    assert OkxFeed.urls_type is OkxUrls  # the worker builds urls from config with it
    (conn,) = feed.connections()
    assert (conn.key, conn.url, conn.symbol_ids) == ("public", urls.public_ws, (0, 1, 2, 3, 4))
    assert (conn.ping, conn.ping_interval_s, conn.max_lifetime_s) == (b"ping", 20, 0)
    frames = [msgspec.json.decode(f) for f in conn.subscribe]
    assert [len(f["args"]) for f in frames] == [20, 12]
    assert {f["op"] for f in frames} == {"subscribe"}
    args = [a for f in frames for a in f["args"]]
    assert Counter(a["channel"] for a in args) == {
        "books": 5, "bbo-tbt": 5, "trades": 6, "funding-rate": 5, "mark-price": 5,
        "open-interest": 5, "liquidation-orders": 1}
    assert {"channel": "liquidation-orders", "instType": "SWAP"} in args
    # the venue (OKX's protocol) accepts every frame: its replies are all acks and pongs
    session = open_session("okx", "/ws/v5/public")
    for frame in (*conn.subscribe, conn.ping or b""):
        for reply in session.on_text(frame):
            feed.on_frame("public", reply, 1, 1)
    assert feed.counts[Count.CONTROL_FRAMES] == 33 and feed.counts[Count.EXCHANGE_ERRORS] == 0
    key, resub = feed.resubscribe_frames(3)
    assert key == "public" and resub == [
        b'{"op":"unsubscribe","args":[{"channel":"books","instId":"DOGE-USDT-SWAP"}]}',
        b'{"op":"subscribe","args":[{"channel":"books","instId":"DOGE-USDT-SWAP"}]}']
    for frame in resub:
        assert msgspec.json.decode(session.on_text(frame)[0])["event"] in ("unsubscribe",
                                                                           "subscribe")
    with pytest.raises(FeedError, match="no book"):
        feed.resubscribe_frames(9)
    assert feed.instruments_urls() == [
        "http://127.0.0.1:2/api/v5/public/instruments?instType=SWAP"]
    opt, _ = _feed(SymbolSpec("BTC-USD-240628-60000-C", "option", symbol_id=0),
                   SymbolSpec("ETH-USD-240628", "inverse", symbol_id=1))
    assert opt.instruments_urls() == [
        "https://www.okx.com/api/v5/public/instruments?instType=FUTURES",
        "https://www.okx.com/api/v5/public/instruments?instType=OPTION&instFamily=BTC-USD"]


def test_apply_instruments() -> None:
    feed, _ = _feed(SymbolSpec(SWAP, "linear", symbol_id=0),
                    SymbolSpec("BTC-USD-240628-60000-C", "option", symbol_id=1))
    body = msgspec.json.encode({"code": "0", "msg": "", "data": [
        {"instId": SWAP, "instType": "SWAP", "ctVal": "0.01", "ctMult": "1", "ctValCcy": "BTC"},
        {"instId": "BTC-USD-240628-60000-C", "instType": "OPTION", "ctVal": "1",
         "ctMult": "0.01", "ctValCcy": "BTC"},
        {"instId": "ETH-USDT-SWAP", "instType": "SWAP", "ctVal": "0.1", "ctMult": "1"}]})
    assert feed.apply_instruments(body) == 2
    assert feed.symbols[0].contract_size == 0.01 and feed.symbols[1].contract_size == 0.01
    assert feed.books[0].qty_scale == 0.01  # type: ignore[attr-defined]
    assert feed.apply_instruments(b'{"code":"50011","msg":"Too Many Requests","data":[]}') == 0
    assert feed.apply_instruments(b"<html>") == 0 and feed.counts[Count.REST_REJECTED] == 2


def test_synthetic_venue_frames_in_base_units() -> None:
    frames, rest = generate(SyntheticConfig(exchange="okx", symbols=2, rate_hz=2_000, seconds=6,
                                            seed=11))
    instruments: Any = rest["instruments"]
    ct_val = {i["instId"]: float(i["ctVal"]) for i in instruments}
    symbols, options = OkxFeed.discover([f for _, _, f in frames])
    assert options == {"book_channel": "books"}
    assert [(s.symbol, s.market) for s in symbols] == [(i, "linear") for i in sorted(ct_val)]
    assert {st for s in symbols for st in s.streams} == set(FEED_STREAMS) - {"bbo"}
    sink = ReplaySink()
    feed = OkxFeed(symbols, Emitter(3, sink.outputs), **options)
    assert feed.apply_instruments(msgspec.json.encode({"code": "0", "data": instruments})) == 2
    refs: dict[str, ReferenceBook] = {}
    ctx: dict[str, Any] = {}   # the last liquidation frame per instrument, to check against
    for ns, _, frame in frames:
        msg = json.loads(frame)
        arg = msg["arg"]
        if arg["channel"] == "books":
            if msg["action"] == "snapshot":
                refs[arg["instId"]] = ReferenceBook()
            refs[arg["instId"]].apply(msg["data"][0]["bids"], msg["data"][0]["asks"])
        elif arg["channel"] == "liquidation-orders":
            for item in msg["data"]:
                ctx.setdefault(item["instId"], []).extend(item["details"])
        feed.on_frame("public", frame, ns, ns)
    counts = feed.counts
    assert counts[Count.DECODE_ERRORS] == counts[Count.UNKNOWN_FRAMES] == 0
    assert counts[Count.GAPS] == counts[Count.CHECKSUM_FAILURES] == counts[Count.RESYNCS] == 0
    assert set(feed.book_states().values()) == {"LIVE"}
    seen: Counter[str] = Counter()
    liqs: dict[str, list[tuple[float, float, str]]] = {}
    for line in lines(feed, sink):
        seen[line["stream"]] += 1
        inst = line["symbol"]
        if line["stream"] == "book":
            assert line["state"] == "LIVE" and line["checksum_ok"] and line["bids"][0][0] < (
                line["asks"][0][0])
        elif line["stream"] == "funding":
            assert line["mark_px"] is None or line["mark_px"] > 0
            assert line["funding_rate"] is None or abs(line["funding_rate"]) < 0.01
            assert line["next_funding_ns"] == 0 or line["next_funding_ns"] > line[
                "ts_exchange_ns"]
        elif line["stream"] == "open_interest":
            assert line["open_interest"] > 0 and line["open_interest_value"] is None
        elif line["stream"] == "liquidation":
            liqs.setdefault(inst, []).append((line["price"], line["qty"], line["side"]))
    sids = {s.symbol: s.symbol_id for s in feed.symbols.values()}
    for inst, ref in refs.items():  # the final books, in base units
        bids, asks = ref.best_first()
        bp, bq, ap, aq = feed.books[sids[inst]].levels(1 << 30)
        assert bp.tolist() == [float(p) for p, _ in bids]
        assert bq.tolist() == [float(s) * ct_val[inst] for _, s in bids]
        assert ap.tolist() == [float(p) for p, _ in asks]
        assert aq.tolist() == [float(s) * ct_val[inst] for _, s in asks]
        assert liqs[inst] == [(float(d["bkPx"]), float(d["sz"]) * ct_val[inst],
                               d["side"].upper()) for d in ctx[inst]]  # the order's side
        assert {d["posSide"] for d in ctx[inst] if d["side"] == "sell"} <= {"long"}
    assert seen["book"] > 5_000 and seen["trade"] > 1_000 and seen["liquidation"] > 0
    assert seen["funding"] == 2 * 2 * 6 and seen["open_interest"] == 2 * 6


def test_one_pass_push_path_equals_the_general_path() -> None:
    """Frames in OKX's key order take the one-decode path (routed on the arg's bytes); the
    same frames with their keys in another order take the general path: same records. An
    event that puts ``arg`` first is still a control frame."""
    gen = _Venue()
    frames = [gen.book(SWAP, "snapshot", 10, -1, _lv(("100.0", "5"), ("99.5", "1")),
                       _lv(("100.5", "2"))),
              gen.book(SWAP, "update", 11, 10, _lv(("99.5", "0")), _lv(("101", "3"))),
              msgspec.json.encode({"arg": {"channel": "trades", "instId": SWAP}, "data": [
                  {"instId": SWAP, "tradeId": "7", "px": "100.2", "sz": "3", "side": "sell",
                   "ts": "9"}]})]
    fast, fast_sink = _feed()
    slow, slow_sink = _feed()
    for frame in frames:
        assert frame.startswith(b'{"arg":{"channel":"')
        fast.on_frame("c", frame, 1, 2)
        reordered = json.loads(frame)
        reordered = {"data": reordered.pop("data"), **reordered}  # data first: general path
        slow.on_frame("c", json.dumps(reordered).encode(), 1, 2)
    got, want = list(lines(fast, fast_sink)), list(lines(slow, slow_sink))
    assert [g["stream"] for g in got].count("trade") == 1 and len(got) > 4
    assert got == want
    assert fast.counts[Count.DECODE_ERRORS] == slow.counts[Count.DECODE_ERRORS] == 0
    ack = b'{"arg":{"channel":"books","instId":"%s"},"event":"subscribe","connId":"x"}' % (
        SWAP.encode())
    fast.on_frame("c", ack, 1, 2)
    assert fast.counts[Count.CONTROL_FRAMES] == 1 and fast.counts[Count.DECODE_ERRORS] == 0
