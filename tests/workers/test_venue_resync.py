"""Resynchronising mid-replay: the venue serves the book where the replay is, not where it began.

Binance clients re-fetch the REST snapshot, whose ``lastUpdateId`` must bridge the events that
follow by Binance's documented rule; Bybit/OKX clients resubscribe the book topic and must get a
snapshot first, then deltas continuing its sequence. Every book is checked against an independent
rebuild (Decimal prices, exact strings) of the venue's own timeline.
"""

from __future__ import annotations

import asyncio
import binascii
import json
import urllib.request
from collections.abc import Callable
from decimal import Decimal
from itertools import pairwise
from typing import Any

from picows import WSMsgType, ws_connect
from test_venue_live import BYBIT, DATA, OKX, USDM, _Client

from workers.venue import SyntheticConfig, generate, load_recording, start_venue
from workers.venue.server import Venue, VenueConfig

SPOT = str(DATA / "binance/hftbacktest_spot_btcusdt_20240808.frames.jsonl.gz")
OKX_TBT = str(DATA / "okx/cryptofeed_books-l2-tbt_10inst_20210722_conn1.frames.jsonl")
Book = dict[str, list[str]]  # price string → the exchange's level row


# -- an independent reference book ----------------------------------------------------------
def _apply(book: Book, rows: list[list[str]]) -> None:
    for row in rows:
        if Decimal(row[1]) == 0:
            book.pop(row[0], None)
        else:
            book[row[0]] = row


def _rows(book: Book, bids: bool) -> list[list[str]]:
    return [book[p] for p in sorted(book, key=Decimal, reverse=bids)]


def _book(bids: list[list[str]], asks: list[list[str]]) -> tuple[Book, Book]:
    return {row[0]: row for row in bids}, {row[0]: row for row in asks}


def _not_crossed(bids: Book, asks: Book) -> bool:
    return max(map(Decimal, bids)) < min(map(Decimal, asks))


def _okx_crc(bids: list[list[str]], asks: list[list[str]]) -> int:
    """From OKX's documentation (tests/data/recorded/README.md), not the venue's code."""
    fields = []
    for i in range(25):
        fields += [":".join(bids[i][:2])] if i < len(bids) else []
        fields += [":".join(asks[i][:2])] if i < len(asks) else []
    value = binascii.crc32(":".join(fields).encode())
    return value - 2**32 if value > 2**31 - 1 else value


def _recorded(path: str, exchange: str, topic: str) -> list[dict[str, Any]]:
    rec = load_recording(path, exchange)
    return [json.loads(f) for f, t in zip(rec.frames, rec.topics, strict=True) if t == topic]


# -- a client that acts mid-stream ----------------------------------------------------------
Step = float | bytes | Callable[[], Any]


def _run(url: str, steps: list[Step]) -> tuple[list[bytes], list[Any]]:
    """Connect, then per step: sleep (float), send a text frame (bytes), or call a blocking
    function in a thread while frames keep arriving. Returns the text frames and call results."""

    async def run() -> tuple[list[bytes], list[Any]]:
        transport, client = await ws_connect(_Client, url)
        results = []
        for step in steps:
            if isinstance(step, float):
                await asyncio.sleep(step)
            elif isinstance(step, bytes):
                transport.send(WSMsgType.TEXT, step)
            else:
                results.append(await asyncio.to_thread(step))
        transport.disconnect()
        return [p for kind, p in client.frames if kind == WSMsgType.TEXT], results

    return asyncio.run(run())


def _get_json(url: str) -> Callable[[], Any]:
    def get() -> Any:
        with urllib.request.urlopen(url, timeout=10) as r:
            return json.loads(r.read())
    return get


def _bybit_op(op: str, *topics: str) -> bytes:
    return json.dumps({"op": op, "args": list(topics)}).encode()


def _okx_op(op: str, inst: str) -> bytes:
    return json.dumps({"op": op, "args": [{"channel": "books", "instId": inst}]}).encode()


# -- Binance: REST depth at the replay's position -------------------------------------------
def test_binance_rest_snapshot_mid_replay_bridges_the_following_events() -> None:
    params = {"symbols": 1, "rate": 2000, "seconds": 8, "seed": 31}
    frames, rest = generate(SyntheticConfig(exchange="binance", symbols=1, rate_hz=2000,
                                            seconds=8, seed=31))
    depth = "/fapi/v1/depth?symbol=BTCUSDT&limit="
    with start_venue("binance", [], speed=2, synthetic=params) as venue:
        got, (snap, top5) = _run(f"{venue.ws_url}/public/stream?streams=btcusdt@depth@100ms", [
            0.8, _get_json(f"{venue.rest_url}{depth}1000"), _get_json(f"{venue.rest_url}{depth}5"),
            0.8])
    events = [json.loads(f)["data"] for f in got]
    snap_id = snap["lastUpdateId"]
    start = json.loads(rest["depth"]["fapi:BTCUSDT"])
    assert snap_id > start["lastUpdateId"] + 500, "the book where the replay is, not the start"
    assert len(top5["bids"]) == len(top5["asks"]) == 5 and top5["lastUpdateId"] >= snap_id

    # Binance's procedure: drop events with u < lastUpdateId; the first left has U <= id <= u
    following = [e for e in events if e["u"] >= snap_id]
    assert following[0]["U"] <= snap_id == following[0]["u"] and len(following) > 300
    bids, asks = _book(snap["bids"], snap["asks"])
    for prev, event in pairwise(following):
        assert event["pu"] == prev["u"], "U/u/pu chain broken"
        _apply(bids, event["b"])
        _apply(asks, event["a"])
        assert _not_crossed(bids, asks)

    # an independent rebuild of the whole timeline from the start snapshot
    ref_bids, ref_asks = _book(start["bids"], start["asks"])
    for _, topic, raw in frames:
        event = json.loads(raw)["data"]
        if topic != "btcusdt@depth@100ms" or event["u"] <= start["lastUpdateId"]:
            continue
        _apply(ref_bids, event["b"])
        _apply(ref_asks, event["a"])
        if event["u"] == snap_id:  # the REST book is the timeline's book at its lastUpdateId
            assert (snap["bids"], snap["asks"]) == (_rows(ref_bids, True), _rows(ref_asks, False))
        if event["u"] == top5["lastUpdateId"]:  # limit=5: the best five of that book
            assert top5["bids"] == _rows(ref_bids, True)[:5]
            assert top5["asks"] == _rows(ref_asks, False)[:5]
        if event["u"] == following[-1]["u"]:
            break
    assert (bids, asks) == (ref_bids, ref_asks)


def test_rest_depth_on_recordings_bridges_and_matches_book_ticker() -> None:
    """At every position of the USD-M + spot recordings, the next depth event bridges the REST
    snapshot (USD-M ``pu == id``, spot ``U == id + 1``); whenever a USD-M bookTicker carries the
    ``u`` of the last depth event, the REST book's top equals it (the README's oracle)."""
    venue = Venue(VenueConfig(exchange="binance", replay=[USDM, SPOT]))  # both, merged
    books = venue.depth_books
    start = {m: books.body(f"{m}:BTCUSDT", -1, 1)["lastUpdateId"]  # type: ignore[index]
             for m in ("fapi", "api")}
    rest_id = dict(start)  # the REST answer right before the current frame
    bridged = {"fapi": 0, "api": 0}
    top_checked, last_u = 0, 0
    for i, (topic, raw) in enumerate(zip(venue.topics, venue.frames, strict=True)):
        data = json.loads(raw)["data"]
        if "@depth" in topic:
            market = "fapi" if "pu" in data else "api"
            if rest_id[market] != start[market]:  # past the snapshot: bridges by the rule
                assert data["pu"] == rest_id[market] if market == "fapi" else \
                    data["U"] == rest_id[market] + 1
                bridged[market] += 1
            body = books.body(f"{market}:BTCUSDT", i, 1)
            assert body is not None and body["lastUpdateId"] == max(data["u"], start[market])
            rest_id[market] = body["lastUpdateId"]
            last_u = data["u"] if market == "fapi" else last_u
        elif topic == "btcusdt@bookTicker" and data["u"] == last_u:
            body = books.body("fapi:BTCUSDT", i, 1)
            assert body is not None
            assert [body["bids"], body["asks"]] == [[[data["b"], data["B"]]],
                                                    [[data["a"], data["A"]]]]
            top_checked += 1
    assert top_checked >= 100 and bridged["fapi"] > 6_000 and bridged["api"] > 3_000
    # going back (a --loop restart) recomputes: the same answer as a fresh venue's
    fresh = Venue(VenueConfig(exchange="binance", replay=[USDM, SPOT])).depth_books
    assert books.body("fapi:BTCUSDT", 40_000, 1000) == fresh.body("fapi:BTCUSDT", 40_000, 1000)
    assert books.body("fapi:BTCUSDT", -1, 1000) == json.loads(
        (DATA / "binance/hftbacktest_usdm_btcusdt_20240808.rest_depth_snapshot.json").read_bytes())


# -- Bybit and OKX: a snapshot on (re)subscription ------------------------------------------
def test_bybit_resubscribe_gets_a_snapshot_then_consecutive_deltas() -> None:
    params = {"symbols": 2, "rate": 2000, "seconds": 8, "seed": 32}
    frames = generate(SyntheticConfig(exchange="bybit", symbols=2, rate_hz=2000, seconds=8,
                                      seed=32))[0]
    btc, eth = "orderbook.50.BTCUSDT", "orderbook.50.ETHUSDT"
    with start_venue("bybit", [], speed=2, synthetic=params) as venue:
        got, _ = _run(f"{venue.ws_url}/v5/public/linear", [
            _bybit_op("subscribe", btc, "publicTrade.BTCUSDT"), 0.7,
            _bybit_op("unsubscribe", btc), 0.05, _bybit_op("subscribe", btc, eth), 0.7])
    msgs = [json.loads(f) for f in got]
    acks = [i for i, m in enumerate(msgs) if "op" in m]
    assert [(msgs[i]["op"], msgs[i]["success"]) for i in acks] == [
        ("subscribe", True), ("unsubscribe", True), ("subscribe", True)]
    assert not [m for m in msgs[acks[1]:acks[2]] if m.get("topic") == btc]
    first = next(m for m in msgs if m.get("topic") == btc)
    assert first["type"] == "snapshot" and first["data"]["u"] == 1  # the timeline's own

    for topic in (btc, eth):  # btc resubscribed, eth subscribed for the first time, mid-stream
        stream = [m for m in msgs[acks[2]:] if m.get("topic") == topic]
        snap = stream[0]
        assert snap["type"] == "snapshot" and snap["data"]["u"] > 100 and len(stream) > 100
        assert list(snap) == ["topic", "type", "ts", "data", "cts"]
        assert list(snap["data"]) == ["s", "b", "a", "u", "seq"]
        bids, asks = _book(snap["data"]["b"], snap["data"]["a"])
        for prev, msg in pairwise(stream):
            assert msg["type"] == "delta" and msg["data"]["u"] == prev["data"]["u"] + 1
            _apply(bids, msg["data"]["b"])
            _apply(asks, msg["data"]["a"])
            assert _not_crossed(bids, asks)
        ref_bids: Book = {}
        ref_asks: Book = {}
        for _, t, raw in frames:  # the generated timeline, rebuilt independently
            msg = json.loads(raw)
            if t != topic:
                continue
            _apply(ref_bids, msg["data"]["b"])
            _apply(ref_asks, msg["data"]["a"])
            if msg["data"]["u"] == snap["data"]["u"]:
                assert snap["data"]["b"] == _rows(ref_bids, True)
                assert snap["data"]["a"] == _rows(ref_asks, False)
                assert (snap["ts"], snap["cts"], snap["data"]["seq"]) == (
                    msg["ts"], msg["cts"], msg["data"]["seq"])
            if msg["data"]["u"] == stream[-1]["data"]["u"]:
                break
        assert (bids, asks) == (ref_bids, ref_asks)


def _okx_follow(stream: list[dict[str, Any]], seq_ids: bool) -> tuple[Book, Book]:
    """Check an OKX book stream that starts with a snapshot: checksums (and the seqId chain)."""
    snap = stream[0]["data"][0]
    assert stream[0]["action"] == "snapshot"
    assert _okx_crc(snap["bids"], snap["asks"]) == snap["checksum"]
    bids, asks = _book(snap["bids"], snap["asks"])
    prev = snap
    for msg in stream[1:]:
        data = msg["data"][0]
        assert msg["action"] == "update"
        assert not seq_ids or data["prevSeqId"] == prev["seqId"], "OKX prevSeqId must chain"
        _apply(bids, data["bids"])
        _apply(asks, data["asks"])
        assert _okx_crc(_rows(bids, True), _rows(asks, False)) == data["checksum"]
        prev = data
    return bids, asks


def test_okx_resubscribe_gets_a_verified_snapshot_and_the_chain_continues() -> None:
    params = {"symbols": 1, "rate": 2000, "seconds": 8, "seed": 33}
    frames = generate(SyntheticConfig(exchange="okx", symbols=1, rate_hz=2000, seconds=8,
                                      seed=33))[0]
    inst = "BTC-USDT-SWAP"
    with start_venue("okx", [], speed=2, synthetic=params) as venue:
        got, _ = _run(f"{venue.ws_url}/ws/v5/public", [
            _okx_op("subscribe", inst), 0.7, _okx_op("unsubscribe", inst), 0.05,
            _okx_op("subscribe", inst), 0.7])
    msgs = [json.loads(f) for f in got]
    acks = [i for i, m in enumerate(msgs) if "event" in m]
    assert [msgs[i]["event"] for i in acks] == ["subscribe", "unsubscribe", "subscribe"]
    assert acks[1] + 1 == acks[2], "nothing between unsubscribing and subscribing again"
    stream = msgs[acks[2] + 1:]
    snap = stream[0]["data"][0]
    assert stream[0]["arg"] == {"channel": "books", "instId": inst}
    assert list(snap) == ["asks", "bids", "ts", "checksum", "prevSeqId", "seqId"]
    assert snap["prevSeqId"] == -1 and stream[1]["data"][0]["prevSeqId"] == snap["seqId"]
    assert snap["seqId"] > 10_100 and len(stream) > 100
    bids, asks = _okx_follow(stream, seq_ids=True)

    ref_bids: Book = {}
    ref_asks: Book = {}
    for _, topic, raw in frames:
        if topic != f"books:{inst}":
            continue
        data = json.loads(raw)["data"][0]
        _apply(ref_bids, data["bids"])
        _apply(ref_asks, data["asks"])
        if data["seqId"] == snap["seqId"]:
            assert (snap["bids"], snap["asks"]) == (_rows(ref_bids, True), _rows(ref_asks, False))
            assert (snap["checksum"], snap["ts"]) == (data["checksum"], data["ts"])
        if data["seqId"] == stream[-1]["data"][0]["seqId"]:
            break
    assert (bids, asks) == (ref_bids, ref_asks)


# -- recordings -----------------------------------------------------------------------------
def test_late_subscription_to_recorded_books_gets_the_exchanges_book() -> None:
    """Bybit orderbook.200 and OKX books joined mid-recording: the snapshot is the book the
    exchange had there (OKX: its checksum equals the recorded one), and the recording goes on."""
    topic = "orderbook.200.BTCUSDT"
    with start_venue("bybit", [BYBIT], speed=10) as venue:  # 42 s recorded → 4.2 s
        got, _ = _run(f"{venue.ws_url}/v5/public/linear", [
            _bybit_op("subscribe", "tickers.BTCUSDT"), 1.0, _bybit_op("subscribe", topic), 1.0])
    stream = [m for m in map(json.loads, got) if m.get("topic") == topic]
    recorded = _recorded(BYBIT, "bybit", topic)
    snap = stream[0]
    assert snap["type"] == "snapshot" and len(stream) > 50
    at = next(k for k, m in enumerate(recorded) if m["data"]["u"] == snap["data"]["u"])
    assert at > 50 and recorded[at + 1:at + len(stream)] == stream[1:]
    bids: Book = {}
    asks: Book = {}
    for msg in recorded[:at + 1]:
        _apply(bids, msg["data"]["b"])
        _apply(asks, msg["data"]["a"])
    assert snap["data"]["b"] == _rows(bids, True) and snap["data"]["a"] == _rows(asks, False)
    assert len(snap["data"]["b"]) == len(snap["data"]["a"]) == 200
    assert (snap["ts"], snap["cts"], snap["data"]["seq"]) == (
        recorded[at]["ts"], recorded[at]["cts"], recorded[at]["data"]["seq"])

    with start_venue("okx", [OKX], speed=5) as venue:  # 10.8 s recorded → 2.2 s
        got, _ = _run(f"{venue.ws_url}/ws/v5/public", [
            _okx_op("subscribe", "BTC-USD-220527"), 0.8, _okx_op("subscribe", "BTC-USDT"), 2.5])
    stream = [m for m in map(json.loads, got)
              if m.get("arg") == {"channel": "books", "instId": "BTC-USDT"} and "data" in m]
    recorded = _recorded(OKX, "okx", "books:BTC-USDT")
    assert "seqId" not in stream[0]["data"][0]  # this 2022 recording predates seqId
    _okx_follow(stream, seq_ids=False)
    at = recorded.index(stream[1]) - 1
    assert at > 10 and recorded[at + 1:] == stream[1:], "the recording goes on unchanged"
    assert stream[0]["data"][0]["checksum"] == recorded[at]["data"][0]["checksum"]


def test_topic_books_rebuild_at_any_position_also_going_back() -> None:
    """For every OKX update in two recordings, the snapshot the venue would inject right after
    it carries the exchange's own checksum for that moment, also when positions go backwards
    (a second pass over the timeline, as after a --loop restart)."""
    for path in (OKX, OKX_TBT):
        rec = load_recording(path, "okx")
        books = Venue(VenueConfig(exchange="okx", replay=[path])).topic_books
        previous: dict[int, int] = {}  # frame index → the topic's frame before it
        last: dict[str, int] = {}
        for i, topic in enumerate(rec.topics):
            if topic in last:
                previous[i] = last[topic]
            last[topic] = i
        checked = 0
        for i in [*range(0, len(rec.frames), 2), *range(1, len(rec.frames), 2)]:
            if not books.resyncs(rec.topics[i]):
                continue
            snap = books.snapshot_for(i)
            if b'"action":"snapshot"' in rec.frames[i]:
                assert snap == b""  # the timeline's own snapshot comes next: nothing to add
                continue
            assert snap, "every recorded book topic starts with a snapshot"
            data = json.loads(snap)["data"][0]
            recorded = json.loads(rec.frames[previous[i]])["data"][0]
            assert data["checksum"] == recorded["checksum"] == _okx_crc(data["bids"],
                                                                        data["asks"])
            checked += 1
        assert checked == sum(b'"action":"update"' in f for f in rec.frames) > 250
    assert books.resyncs("books-l2-tbt:ONT-USDT") and not books.resyncs("trades:BTC-USDT")
