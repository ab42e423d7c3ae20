"""Payload shapes of every stream and event kind, from real recorded records."""

from __future__ import annotations

from pathlib import Path

import msgspec
import numpy as np
import pytest

import shm
from workers.detectors.events import VALUE_NAMES, EventBuffer, EventKind, emit
from workers.exchanges.replay import replay
from workers.publisher.payloads import (
    ANALYTICS_TYPES,
    DEFAULT_PRIORITIES,
    EVENT_TYPES,
    STREAM_TYPES,
    PayloadEncoder,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "recorded"
USDM = DATA / "binance" / "hftbacktest_usdm_btcusdt_20240808.frames.jsonl.gz"
BYBIT = DATA / "bybit" / "cryptofeed_linear_v5_20260809.frames.jsonl"
COMMON = {"exchange", "symbol", "event_type", "timestamp", "seq", "ts_recv_ns", "market"}


def _first(exchange: str, path: Path) -> dict[str, np.ndarray]:
    _, sink = replay(exchange, path)
    out: dict[str, np.ndarray] = {}
    for stream, chunk in sink.chunks:
        out.setdefault(stream, chunk[:3].copy())
    return out


@pytest.fixture(scope="module")
def recorded() -> dict[str, dict[str, np.ndarray]]:
    return {"binance": _first("binance", USDM), "bybit": _first("bybit", BYBIT)}


def test_trade_shape_and_values(recorded: dict[str, dict[str, np.ndarray]]) -> None:
    trades = recorded["binance"]["trades"]
    enc = PayloadEncoder("binance", ["BTCUSDT"])
    items = list(enc.records("trades", trades))
    assert len(items) == len(trades)
    event_type, sid, payload, commit = items[0]
    p = msgspec.json.decode(payload)
    assert (event_type, sid, commit) == ("trade", 0, int(trades[0]["ts_commit_ns"]))
    assert set(p) == COMMON | {"price", "quantity", "side", "trade_id"}
    assert p["exchange"] == "binance" and p["symbol"] == "btcusdt" and p["event_type"] == "trade"
    assert p["price"] == float(trades[0]["price"]) and p["quantity"] == float(trades[0]["qty"])
    assert p["side"] == {1: "BUY", -1: "SELL"}[int(trades[0]["side"])]
    assert p["timestamp"] == int(trades[0]["ts_exchange_ns"]) // 1_000_000
    assert p["trade_id"] == int(trades[0]["trade_id"]) and p["market"] == "linear"


def test_book_bbo_funding_open_interest_shapes(
        recorded: dict[str, dict[str, np.ndarray]]) -> None:
    bybit = recorded["bybit"]
    enc = PayloadEncoder("bybit", ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"])
    book = bybit["book"][0]
    p = msgspec.json.decode(next(enc.records("book", bybit["book"][:1]))[2])
    assert set(p) == COMMON | {"last_update_id", "bids", "asks", "state", "epoch"}
    assert p["event_type"] == "orderbook" and p["state"] in ("LIVE", "SYNCING")
    assert len(p["bids"]) == int(book["n_bids"]) and len(p["asks"]) == int(book["n_asks"])
    assert p["bids"][0] == [float(book["bid_px"][0]), float(book["bid_qty"][0])]
    assert p["bids"][0][0] < p["asks"][0][0] and p["last_update_id"] == int(book["update_id"])
    p = msgspec.json.decode(next(enc.records("funding", bybit["funding"][:1]))[2])
    assert set(p) == COMMON | {"mark_price", "index_price", "funding_rate", "predicted_rate",
                               "next_funding_time"}
    p = msgspec.json.decode(next(enc.records("open_interest", bybit["open_interest"][:1]))[2])
    assert set(p) == COMMON | {"open_interest", "open_interest_value"}
    assert p["open_interest"] > 0
    bbo = recorded["binance"]["bbo"]
    p = msgspec.json.decode(next(PayloadEncoder("binance", ["BTCUSDT"]).records("bbo", bbo))[2])
    assert set(p) == COMMON | {"bid_price", "bid_quantity", "ask_price", "ask_quantity",
                               "update_id"}
    assert p["bid_price"] < p["ask_price"]


def test_every_event_kind_has_its_type_and_named_values() -> None:
    buf = EventBuffer(64)
    trigger = np.zeros(1, shm.TRADE)[0]
    trigger["exchange"], trigger["symbol_id"], trigger["ts_exchange_ns"] = 1, 0, 5_000_000
    for kind in EventKind:
        emit(buf.records, buf.state, trigger, int(kind), 0, 1, 9, *range(1, 9))
    enc = PayloadEncoder("binance", ["BTCUSDT"])
    items = list(enc.records("events", buf.take()))
    assert [i[0] for i in items] == [EVENT_TYPES[k] for k in EventKind]
    for kind, (_, _, payload, _) in zip(EventKind, items, strict=True):
        p = msgspec.json.decode(payload)
        names = [{"qty": "quantity"}.get(n, n) for n in VALUE_NAMES[kind]]
        assert [p[n] for n in names] == list(range(1, len(names) + 1)), kind
        assert p["priority"] == "CRITICAL" and p["side"] == "BUY" and p["timestamp"] == 5
        assert {"trigger_seq", "trigger_commit_ns", "ts_detect_ns"} <= set(p)
    whale = msgspec.json.decode(items[0][2])
    assert {"price", "quantity", "usd_value", "side", "confidence", "timestamp"} <= set(whale)
    assert msgspec.json.decode(items[-1][2])["symbol"] == "all"   # CHANNEL_SILENT


def test_analytics_rows_and_msgpack() -> None:
    row = np.zeros(1, shm.ANALYTICS)[0]
    row["cvd_1m"], row["trade_count"], row["funding_rate"] = 1.5, 7, np.nan
    enc = PayloadEncoder("okx", ["BTC-USDT-SWAP"], encoding="msgpack")
    items = list(enc.analytics(0, row))
    assert [i[0] for i in items] == list(ANALYTICS_TYPES)
    cvd = msgspec.msgpack.decode(items[0][2])
    assert cvd["symbol"] == "btc-usdt-swap" and cvd["cvd_1m"] == 1.5 and cvd["trade_count"] == 7
    assert {"cvd_1m", "cvd_5m", "cvd_15m", "trade_count", "timestamp"} <= set(cvd)
    funding = msgspec.json.decode(PayloadEncoder("okx", ["X"]).encode(
        msgspec.msgpack.decode(items[-1][2])))
    assert funding["funding_rate"] is None   # NaN → null in JSON
    with pytest.raises(ValueError, match="encoding"):
        PayloadEncoder("okx", [], encoding="xml")


def test_every_event_type_has_a_default_class() -> None:
    types = set(STREAM_TYPES.values()) | set(EVENT_TYPES.values()) | set(ANALYTICS_TYPES)
    assert types == set(DEFAULT_PRIORITIES)
    assert DEFAULT_PRIORITIES["whale_alert"] == 0 and DEFAULT_PRIORITIES["orderbook"] == 3


def test_an_event_of_an_unknown_kind_is_skipped_and_counted() -> None:
    events = np.zeros(3, shm.EVENT)
    events["kind"] = [int(EventKind.WHALE_TRADE), 999, int(EventKind.SPOOF)]
    events["priority"] = [0, 0, 77]
    enc = PayloadEncoder("binance", ["BTCUSDT"])
    items = list(enc.records("events", events))
    assert [i[0] for i in items] == ["whale_alert", "spoof"] and enc.unknown_kinds == 1
    assert msgspec.json.decode(items[1][2])["priority"] == "UNKNOWN"
