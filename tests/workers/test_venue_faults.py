"""Fault injection end to end: a client sees exactly the injected faults; the venue logs them."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request

import pytest
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect
from test_venue_live import USDM, _recorded, talk, texts

from workers.venue import start_venue
from workers.venue.faults import FaultSpecError, is_book_topic, parse_faults

DEPTH = "btcusdt@depth@0ms"


def _depth_url(venue_url: str) -> str:
    return f"{venue_url}/public/stream?streams={DEPTH}"


def test_frame_faults_happen_exactly_where_asked() -> None:
    expected = _recorded(USDM, "binance", {DEPTH})[:40]
    spec = "drop@5,duplicate@8,reorder@11,corrupt@15,truncate@18,error@21"
    with start_venue("binance", [USDM], flood=True, faults=spec) as venue:
        got = texts(talk(_depth_url(venue.ws_url), want=40, settle_s=0.2))[:40]
    e = expected
    assert got[:5] == e[:5] and got[5:7] == e[6:8]               # frame 5 dropped: a gap
    assert got[7] == got[8] == e[8]                              # duplicated
    assert got[9:12] == [e[9], e[10], e[12]] and got[12] == e[11]  # 11 sent after 12
    assert got[13:15] == e[13:15]
    with pytest.raises(json.JSONDecodeError):
        json.loads(got[15])                                      # corrupted
    assert got[18] == e[18][:len(e[18]) // 2]                    # truncated
    assert json.loads(got[21])["error"]["code"] == 3             # an exchange error frame
    assert got[22:] == e[22:40]
    kinds = [(f["fault"], f["index"]) for f in venue.faults()]
    assert kinds == [("drop", 5), ("duplicate", 8), ("reorder", 11), ("corrupt", 15),
                     ("truncate", 18), ("error", 21)]


class _Watcher(WSListener):
    def __init__(self) -> None:
        self.stamps: list[float] = []
        self.close_code: object = None
        self.disconnected = False
        self.closed_by_venue = False

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.CLOSE:
            self.close_code = frame.get_close_code()
        else:
            self.stamps.append(time.monotonic())

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.disconnected = True


def _watch(url: str, seconds: float) -> _Watcher:
    async def run() -> _Watcher:
        transport, watcher = await ws_connect(_Watcher, url)
        await asyncio.sleep(seconds)
        watcher.closed_by_venue = watcher.disconnected
        transport.disconnect()
        return watcher

    return asyncio.run(run())


@pytest.mark.parametrize("kind, close_frame", [("close", True), ("abort", False)])
def test_close_and_abort(kind: str, close_frame: bool) -> None:
    with start_venue("binance", [USDM], flood=True, faults=f"{kind}@20") as venue:
        watcher = _watch(_depth_url(venue.ws_url), 1.0)
    assert len(watcher.stamps) == 20 and watcher.closed_by_venue
    assert (watcher.close_code is not None) == close_frame


def test_stall_keeps_the_connection_open_and_silent() -> None:
    with start_venue("binance", [USDM], flood=True, faults="stall@10:0.8s") as venue:
        watcher = _watch(_depth_url(venue.ws_url), 2.0)
    gaps = [b - a for a, b in zip(watcher.stamps, watcher.stamps[1:], strict=False)]
    assert len(watcher.stamps) > 100 and not watcher.closed_by_venue
    assert max(gaps) >= 0.75 and gaps.index(max(gaps)) == 9


def test_refused_connections_and_rest_faults() -> None:
    with start_venue("binance", [USDM], flood=True, faults="refuse:1s,rest_429=1") as venue:
        with pytest.raises(Exception, match="503"):
            talk(_depth_url(venue.ws_url), settle_s=0)
        time.sleep(1.1)
        assert texts(talk(_depth_url(venue.ws_url), want=5, settle_s=0))
        with pytest.raises(urllib.error.HTTPError) as rest:
            urllib.request.urlopen(f"{venue.rest_url}/fapi/v1/depth?symbol=BTCUSDT&limit=5")
        assert rest.value.code == 429 and rest.value.headers["Retry-After"] == "1"
    assert {f["fault"] for f in venue.faults()} == {"refuse", "rest_429"}


def test_random_faults_are_reproducible_from_the_seed() -> None:
    runs = []
    for _ in range(2):
        with start_venue("binance", [USDM], flood=True, faults="drop=0.05,seed=3") as venue:
            runs.append(texts(talk(_depth_url(venue.ws_url), want=6_000, settle_s=0.3)))
    assert runs[0] == runs[1] and 6_551 * 0.9 < len(runs[0]) < 6_551 * 0.99


def test_spec_errors_name_the_item() -> None:
    with pytest.raises(FaultSpecError, match="'drop=2'"):
        parse_faults("drop=2")
    with pytest.raises(FaultSpecError, match="'explode@3'"):
        parse_faults("explode@3")
    assert parse_faults("").active is False
    assert is_book_topic("orderbook.50.BTCUSDT") and not is_book_topic("publicTrade.BTCUSDT")


def test_reorder_twice_and_at_the_end_loses_nothing() -> None:
    expected = _recorded(USDM, "binance", {DEPTH})
    last = len(expected) - 1
    with start_venue("binance", [USDM], flood=True,
                     faults=f"reorder@3,reorder@4,reorder@{last}") as venue:
        got = texts(talk(_depth_url(venue.ws_url), want=len(expected)))
    assert sorted(got) == sorted(expected) and len(got) == len(expected)
    assert got[3:6] == [expected[5], expected[3], expected[4]]


def test_loop_with_nothing_to_send_does_not_block_the_venue() -> None:
    with start_venue("okx", [], flood=True, loop=True,
                     synthetic={"symbols": 1, "rate": 100, "seconds": 1}) as venue:
        # a valid channel this timeline never carries: every pass sends nothing
        talk(f"{venue.ws_url}/ws/v5/public", sends=[
            b'{"op":"subscribe","args":[{"channel":"books","instId":"ETH-USDT-SWAP"}]}'],
            settle_s=0.5)
        with urllib.request.urlopen(f"{venue.rest_url}/venue/connections", timeout=5) as r:
            assert json.loads(r.read())["closed"][0]["loops"] >= 1
