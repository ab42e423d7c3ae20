"""A venue in its own process, and a picows client written against the exchanges' documented
protocols: exact recorded frames per topic, acks, pongs, errors, REST weights, pacing."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from workers.venue import VenueProcess, load_recording, start_venue

DATA = Path(__file__).resolve().parents[1] / "data" / "recorded"
USDM = str(DATA / "binance/hftbacktest_usdm_btcusdt_20240808.frames.jsonl.gz")
BYBIT = str(DATA / "bybit/cryptofeed_linear_v5_20260809.frames.jsonl")
OKX = str(DATA / "okx/cryptofeed_books_3inst_20220513.frames.jsonl")


class _Client(WSListener):
    def __init__(self) -> None:
        self.frames: list[tuple[WSMsgType, bytes]] = []

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        self.frames.append((frame.msg_type, frame.get_payload_as_bytes()))


def talk(url: str, sends: list[bytes] = (), want: int = 0, timeout_s: float = 20.0,
         settle_s: float = 0.3, ping: bool = False) -> list[tuple[WSMsgType, bytes]]:
    """Connect, send text frames, collect until ``want`` frames (then ``settle_s`` more)."""

    async def run() -> list[tuple[WSMsgType, bytes]]:
        transport, client = await ws_connect(_Client, url)
        for msg in sends:
            transport.send(WSMsgType.TEXT, msg)
        if ping:
            transport.send_ping(b"hi")
        deadline = time.monotonic() + timeout_s
        while len(client.frames) < want and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await asyncio.sleep(settle_s)  # nothing more may arrive
        transport.disconnect()
        return client.frames

    return asyncio.run(run())


def texts(frames: list[tuple[WSMsgType, bytes]]) -> list[bytes]:
    return [payload for kind, payload in frames if kind == WSMsgType.TEXT]


@pytest.fixture(scope="module")
def binance() -> Iterator[VenueProcess]:
    with start_venue("binance", [USDM], flood=True, rest_weight_limit=50) as venue:
        yield venue


@pytest.fixture(scope="module")
def bybit() -> Iterator[VenueProcess]:
    with start_venue("bybit", [BYBIT], flood=True) as venue:
        yield venue


@pytest.fixture(scope="module")
def okx() -> Iterator[VenueProcess]:
    with start_venue("okx", [OKX], flood=True) as venue:
        yield venue


def _recorded(path: str, exchange: str, topics: set[str]) -> list[bytes]:
    rec = load_recording(path, exchange)
    return [f for f, t in zip(rec.frames, rec.topics, strict=True) if t in topics]


def test_binance_combined_stream_gets_exactly_its_recorded_frames(binance: VenueProcess) -> None:
    topics = {"btcusdt@depth@0ms", "btcusdt@trade"}
    expected = _recorded(USDM, "binance", topics)
    got = texts(talk(f"{binance.ws_url}/public/stream?streams={'/'.join(sorted(topics))}",
                     want=len(expected)))
    assert got == expected  # byte for byte, in order, nothing else


def test_binance_raw_ws_subscribe_ack_and_unwrapped_events(binance: VenueProcess) -> None:
    frames = talk(f"{binance.ws_url}/public/ws", sends=[
        b'{"method":"SUBSCRIBE","params":["btcusdt@depth@0ms"],"id":7}'], want=6_552, ping=True)
    got = texts(frames)
    assert json.loads(got[0]) == {"result": None, "id": 7}
    first = json.loads(got[1])
    assert first["e"] == "depthUpdate" and "stream" not in first and len(got) == 6_552
    assert (WSMsgType.PONG, b"hi") in frames  # WebSocket ping → pong


def test_binance_stream_on_the_wrong_route_is_silent(binance: VenueProcess) -> None:
    got = texts(talk(f"{binance.ws_url}/market/stream?streams=btcusdt@depth@0ms", settle_s=1.0))
    assert got == []


def test_binance_rest_depth_weights_and_429(binance: VenueProcess) -> None:
    url = f"{binance.rest_url}/fapi/v1/depth?symbol=BTCUSDT&limit=1000"  # weight 20 of 50
    # the budget is per calendar minute (as Binance's): start well inside one, so that the
    # four requests share it however slowly this host answers
    if time.time() % 60 > 50:
        time.sleep(60.5 - time.time() % 60)
    with urllib.request.urlopen(url) as r:
        body = json.loads(r.read())
        assert r.headers["X-MBX-USED-WEIGHT-1M"] == "20"
    assert body["lastUpdateId"] == 5123107852948 and len(body["bids"]) == 1000
    with urllib.request.urlopen(url.replace("1000", "5")):
        pass
    statuses = []
    for _ in range(2):
        try:
            urllib.request.urlopen(url)
            statuses.append(200)
        except urllib.error.HTTPError as exc:
            statuses.append(exc.code)
            assert int(exc.headers["Retry-After"]) in range(1, 61)
            assert json.loads(exc.read())["code"] == -1003
    assert statuses[-1] == 429
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"{binance.rest_url}/api/v3/nothing")
    assert missing.value.code == 404
    with urllib.request.urlopen(f"{binance.rest_url}/venue/connections") as r:
        assert json.loads(r.read())["rest"] == {"requests": 5, "rejected": 1}


def test_unknown_path_is_refused(binance: VenueProcess) -> None:
    with pytest.raises(Exception, match="404"):
        talk(f"{binance.ws_url}/nope")


def test_bybit_subscribe_ack_ping_and_topic_frames(bybit: VenueProcess) -> None:
    topics = {"orderbook.200.BTCUSDT", "tickers.BTCUSDT"}
    expected = _recorded(BYBIT, "bybit", topics)
    got = texts(talk(f"{bybit.ws_url}/v5/public/linear", sends=[
        json.dumps({"op": "subscribe", "args": sorted(topics)}).encode(),
        b'{"op":"subscribe","args":["liquidation.BTCUSDT"]}',
        b'{"op":"ping","req_id":"p1"}'], want=len(expected) + 3))
    replies = [json.loads(g) for g in got if b'"op"' in g]
    assert [(r["op"], r["success"]) for r in replies] == [
        ("subscribe", True), ("subscribe", False), ("ping", True)]
    assert replies[2]["ret_msg"] == "pong" and replies[2]["req_id"] == "p1"
    assert [g for g in got if b'"op"' not in g] == expected


def test_okx_ping_ack_error_and_topic_frames(okx: VenueProcess) -> None:
    expected = _recorded(OKX, "okx", {"books:BTC-USDT"})
    got = texts(talk(f"{okx.ws_url}/ws/v5/public", sends=[
        b"ping",
        b'{"op":"subscribe","args":[{"channel":"books","instId":"BTC-USDT"},'
        b'{"channel":"books","instId":""}]}'], want=len(expected) + 3))
    assert got[0] == b"pong"
    ack, error = json.loads(got[1]), json.loads(got[2])
    assert ack["event"] == "subscribe" and ack["arg"] == {"channel": "books", "instId": "BTC-USDT"}
    assert error["event"] == "error" and error["code"] == "60018"
    assert got[3:] == expected


def test_replay_keeps_the_recorded_pacing_at_speed_x() -> None:
    rec = load_recording(OKX, "okx")
    expected = [f for f, t in zip(rec.frames, rec.topics, strict=True) if t == "books:BTC-USDT"]
    with start_venue("okx", [OKX], speed=10) as venue:  # 10.8 s recorded → ≈ 1.1 s
        start = time.monotonic()
        got = texts(talk(f"{venue.ws_url}/ws/v5/public", sends=[
            b'{"op":"subscribe","args":[{"channel":"books","instId":"BTC-USDT"}]}'],
            want=len(expected) + 1, settle_s=0))
        elapsed = time.monotonic() - start
    assert got[1:] == expected
    assert 0.7 < elapsed < 4.0, elapsed


def test_rest_snapshots_are_keyed_by_market_and_recording() -> None:
    spot = str(DATA / "binance/hftbacktest_spot_btcusdt_20240808.frames.jsonl.gz")
    with start_venue("binance", [USDM, spot], flood=True) as venue:
        with urllib.request.urlopen(f"{venue.rest_url}/fapi/v1/depth?symbol=BTCUSDT&limit=5"
                                    ) as r:
            assert json.loads(r.read())["lastUpdateId"] == 5123107852948  # USD-M's
        with urllib.request.urlopen(f"{venue.rest_url}/api/v3/depth?symbol=BTCUSDT&limit=5"
                                    ) as r:
            assert json.loads(r.read())["lastUpdateId"] == 50093239218    # spot's
