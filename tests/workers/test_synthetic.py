"""Synthetic markets obey each exchange's sequence rules, checked by independent rebuilds."""

from __future__ import annotations

import binascii
import json
import urllib.request
from collections import defaultdict
from decimal import Decimal
from itertools import pairwise

import pytest
from test_venue_live import talk, texts

from workers.venue import SyntheticConfig, generate, start_venue


def _frames(exchange: str, **kw: float) -> tuple[list[tuple[int, str, bytes]], dict]:
    return generate(SyntheticConfig(exchange=exchange, **kw))  # type: ignore[arg-type]


def _apply(book: dict[str, Decimal], levels: list[list[str]]) -> None:
    for level in levels:
        if Decimal(level[1]) == 0:
            book.pop(level[0], None)
        else:
            book[level[0]] = Decimal(level[1])


def _top(bids: dict[str, Decimal], asks: dict[str, Decimal]) -> tuple[str, str]:
    return max(bids, key=Decimal), min(asks, key=Decimal)


def test_binance_bridges_by_the_documented_rule_chains_and_matches_book_ticker() -> None:
    frames, rest = _frames("binance", symbols=2, rate_hz=2_000, seconds=5, seed=11)
    books, snap_id, last_u, checked = {}, {}, {}, 0
    for key, body in rest["depth"].items():
        sym = key.split(":")[1]
        snap = json.loads(body)
        books[sym] = ({p: Decimal(q) for p, q in snap["bids"]},
                      {p: Decimal(q) for p, q in snap["asks"]})
        snap_id[sym], last_u[sym] = snap["lastUpdateId"], None
    liq_ms = defaultdict(list)
    for _, _topic, raw in frames:
        d = json.loads(raw)["data"]
        if d.get("e") == "depthUpdate":
            sym = d["s"]
            assert d["U"] <= d["u"]
            if last_u[sym] is None:  # Binance's documented futures bridge, nothing else
                if d["u"] < snap_id[sym]:
                    continue
                assert d["U"] <= snap_id[sym] <= d["u"], "first event does not bridge"
            else:
                assert d["pu"] == last_u[sym], "U/u/pu chain broken"
            last_u[sym] = d["u"]
            bids, asks = books[sym]
            _apply(bids, d["b"])
            _apply(asks, d["a"])
            best_bid, best_ask = _top(bids, asks)
            assert Decimal(best_bid) < Decimal(best_ask), "crossed book"
        elif d.get("e") == "bookTicker" and d["u"] == last_u[d["s"]]:
            bids, asks = books[d["s"]]
            best_bid, best_ask = _top(bids, asks)
            assert (d["b"], Decimal(d["B"]), d["a"], Decimal(d["A"])) == (
                best_bid, bids[best_bid], best_ask, asks[best_ask])
            checked += 1
        elif d.get("e") == "forceOrder":
            liq_ms[d["o"]["s"]].append(d["E"])
    assert checked > 9_000
    assert liq_ms and all(b - a >= 1000 for ms in liq_ms.values() for a, b in pairwise(ms))
    assert any(t.endswith("@markPrice@1s") for _, t, _ in frames)


def test_bybit_snapshot_then_consecutive_u_and_never_crossed() -> None:
    frames, _ = _frames("bybit", symbols=2, rate_hz=2_000, seconds=5, seed=12)
    state: dict[str, tuple[int, dict, dict]] = {}
    kinds = set()
    for _, topic, raw in frames:
        msg = json.loads(raw)
        kinds.add(topic.split(".")[0])
        if not topic.startswith("orderbook."):
            continue
        d = msg["data"]
        if msg["type"] == "snapshot":
            bids, asks = {}, {}
            assert d["u"] == 1
        else:
            u, bids, asks = state[d["s"]]
            assert d["u"] == u + 1, "Bybit delta u must follow the previous u"
        _apply(bids, d["b"])
        _apply(asks, d["a"])
        assert Decimal(_top(bids, asks)[0]) < Decimal(_top(bids, asks)[1])
        assert len(bids) <= 50 and len(asks) <= 50
        state[d["s"]] = (d["u"], bids, asks)
    assert {"orderbook", "publicTrade", "tickers", "allLiquidation"} <= kinds


def _okx_crc(bids: dict[str, str], asks: dict[str, str]) -> int:
    """Written from OKX's documentation, independently of the generator's implementation."""
    b = sorted(bids, key=Decimal, reverse=True)[:25]
    a = sorted(asks, key=Decimal)[:25]
    fields = []
    for i in range(max(len(b), len(a))):
        if i < len(b):
            fields.append(f"{b[i]}:{bids[b[i]]}")
        if i < len(a):
            fields.append(f"{a[i]}:{asks[a[i]]}")
    value = binascii.crc32(":".join(fields).encode())
    return value - 2**32 if value > 2**31 - 1 else value


def test_okx_seq_ids_chain_and_every_checksum_verifies() -> None:
    frames, _ = _frames("okx", symbols=2, rate_hz=2_000, seconds=5, seed=13)
    books: dict[str, tuple[int, dict[str, str], dict[str, str]]] = {}
    verified, channels = 0, set()
    for _, _topic, raw in frames:
        msg = json.loads(raw)
        channels.add(msg["arg"]["channel"])
        if msg["arg"]["channel"] != "books":
            continue
        inst, d = msg["arg"]["instId"], msg["data"][0]
        if msg["action"] == "snapshot":
            assert d["prevSeqId"] == -1
            bids, asks = {}, {}
        else:
            seq, bids, asks = books[inst]
            assert d["prevSeqId"] == seq, "OKX prevSeqId must equal the previous seqId"
        for side, levels in ((bids, d["bids"]), (asks, d["asks"])):
            for px, sz, *_ in levels:
                if sz == "0":
                    side.pop(px, None)
                else:
                    side[px] = sz
        assert _okx_crc(bids, asks) == d["checksum"]
        verified += 1
        books[inst] = (d["seqId"], bids, asks)
    assert verified > 9_000
    assert {"trades", "mark-price", "funding-rate", "open-interest",
            "liquidation-orders"} <= channels


def test_same_seed_same_market() -> None:
    a = _frames("okx", rate_hz=500, seconds=2, seed=5)[0]
    assert a == _frames("okx", rate_hz=500, seconds=2, seed=5)[0]
    assert a != _frames("okx", rate_hz=500, seconds=2, seed=6)[0]
    with pytest.raises(ValueError, match="symbols"):
        SyntheticConfig(exchange="okx", symbols=99)


def test_synthetic_venue_serves_generated_frames_and_rest() -> None:
    params = {"symbols": 1, "rate": 1000, "seconds": 3, "seed": 21}
    frames, rest = _frames("binance", symbols=1, rate_hz=1000, seconds=3, seed=21)
    expected = [f for _, t, f in frames if t == "btcusdt@depth@100ms"]
    with start_venue("binance", [], flood=True, synthetic=params) as venue:
        got = texts(talk(f"{venue.ws_url}/public/stream?streams=btcusdt@depth@100ms",
                         want=len(expected)))
        with urllib.request.urlopen(f"{venue.rest_url}/fapi/v1/depth?symbol=BTCUSDT&limit=1000"
                                    ) as r:
            assert json.loads(r.read()) == json.loads(rest["depth"]["fapi:BTCUSDT"])
    assert got == expected
    with start_venue("okx", [], flood=True, synthetic=params) as venue, urllib.request.urlopen(
            f"{venue.rest_url}/api/v5/public/instruments?instType=SWAP") as r:
        data = json.loads(r.read())["data"]
    assert data[0]["instId"] == "BTC-USDT-SWAP" and data[0]["ctVal"] == "0.01"


def test_loop_restarts_the_timeline_with_a_fresh_snapshot_and_side_table() -> None:
    params = {"symbols": 1, "rate": 500, "seconds": 1, "seed": 3}
    frames, _ = _frames("okx", symbols=1, rate_hz=500, seconds=1, seed=3)
    books = [f for _, t, f in frames if t == "books:BTC-USDT-SWAP"]
    with start_venue("okx", [], flood=True, synthetic=params, loop=True) as venue:
        got = texts(talk(f"{venue.ws_url}/ws/v5/public", sends=[
            b'{"op":"subscribe","args":[{"channel":"books","instId":"BTC-USDT-SWAP"}]}'],
            want=1 + 3 * len(books), settle_s=0))[1:]
        with urllib.request.urlopen(f"{venue.rest_url}/venue/connections") as r:
            table = json.loads(r.read())
    assert got[:3 * len(books)] == books * 3  # the same consistent timeline, snapshot first
    conn = table["closed"][0]
    assert conn["loops"] >= 2 and len(conn["replay_starts_ns"]) == conn["loops"] + 1
    assert conn["replay_starts_ns"] == sorted(conn["replay_starts_ns"])
    assert table["flood"] is True and conn["topics"] == ["books:BTC-USDT-SWAP"]


def test_binance_open_interest_rest_follows_the_synthetic_series() -> None:
    params = {"symbols": 2, "rate": 500, "seconds": 5, "seed": 4}
    _, rest = _frames("binance", symbols=2, rate_hz=500, seconds=5, seed=4)
    with start_venue("binance", [], flood=True, synthetic=params) as venue, \
            urllib.request.urlopen(f"{venue.rest_url}/fapi/v1/openInterest?symbol=ETHUSDT") as r:
        body = json.loads(r.read())
        assert r.headers["X-MBX-USED-WEIGHT-1M"] == "1"
    assert body["symbol"] == "ETHUSDT" and body["openInterest"] in rest["open_interest"]["ETHUSDT"]
