"""Candles: hand-computed OHLCV/VWAP, interval boundaries, late trades, and a pure-Python
reference on real recorded trades (every closed candle of every timeframe), incremental ==
whole."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import shm
from workers.detectors.candles import TIMEFRAMES_S, CandleState
from workers.detectors.events import EventBuffer, EventKind
from workers.exchanges.replay import replay

DATA = Path(__file__).resolve().parents[1] / "data" / "recorded"
S = 1_000_000_000
SPOT = DATA / "binance" / "hftbacktest_spot_btcusdt_20240808.frames.jsonl.gz"


def trades(*rows: tuple[float, float, float, int]) -> np.ndarray:
    """``(seconds, price, qty, side)`` records of symbol 0."""
    out = np.zeros(len(rows), shm.TRADE)
    for i, (sec, px, qty, side) in enumerate(rows):
        out[i]["ts_exchange_ns"], out[i]["price"], out[i]["qty"], out[i]["side"] = (
            round(sec * S), px, qty, side)
        out[i]["seq"] = i
    return out


def closed(ev: EventBuffer, tf: int) -> list[list[float]]:
    got = ev.take()
    assert np.all(got["kind"] == EventKind.CANDLE)
    return [r["values"].tolist() for r in got if r["values"][7] == tf]


def test_one_second_candles_by_hand() -> None:
    st, ev = CandleState(1), EventBuffer()
    st.update(trades((10.0, 100.0, 1.0, 1), (10.2, 102.0, 1.0, -1), (10.999, 99.0, 2.0, 1),
                     (11.0, 101.0, 1.0, 1)), ev, 0)
    # 10.x closes at 11.0: open 100, high 102, low 99, close 99, vol 4, buy 3,
    # vwap (100 + 102 + 198) / 4 = 100
    assert closed(ev, 1) == [[100.0, 102.0, 99.0, 99.0, 4.0, 3.0, 100.0, 1.0]]
    st.update(trades((13.5, 105.0, 1.0, -1)), ev, 0)  # second 12 had no trades: no candle
    assert closed(ev, 1) == [[101.0, 101.0, 101.0, 101.0, 1.0, 1.0, 101.0, 1.0]]
    st.update(trades((12.0, 1.0, 1.0, 1)), ev, 0)  # late for 1 s; the 5 s candle covers it
    assert st.late[0] == 1 and st.trades[0, 0] == 1 and st.trades[0, 1] == 6
    assert st.values[0, 1, 2] == 1.0  # the 5 s low took it
    assert len(ev.take()) == 0


def test_boundaries_and_bad_records() -> None:
    st, ev = CandleState(2), EventBuffer()
    st.update(trades((59.999, 1.0, 1.0, 1), (60.0, 2.0, 1.0, 1)), ev, 0)
    assert closed(ev, 60) == [[1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 60.0]]
    bad = trades((61.0, np.nan, 1.0, 1), (61.0, 1.0, 0.0, 1), (61.0, 1.0, 1.0, 0),
                 (-1.0, 1.0, 1.0, 1))
    st.update(bad, ev, 0)
    assert st.skipped[0] == 4 and len(ev.take()) == 0
    st.reset(0)
    assert st.start_ns[0].tolist() == [-1] * len(TIMEFRAMES_S)
    with pytest.raises(ValueError, match="symbols"):
        CandleState(0)


def reference(recs: np.ndarray) -> dict[int, list[list[float]]]:
    """Closed candles per timeframe by grouping each timeframe's intervals in Python."""
    out: dict[int, list[list[float]]] = {}
    for tf in TIMEFRAMES_S:
        groups: dict[int, list[tuple[float, float, int]]] = {}
        order: list[int] = []
        for r in recs:
            start = int(r["ts_exchange_ns"]) // (tf * S)
            if order and start < order[-1]:
                continue  # late: its candle closed
            if start not in groups:
                groups[start] = []
                order.append(start)
            groups[start].append((float(r["price"]), float(r["qty"]), int(r["side"])))
        rows = []
        for start in order[:-1]:  # the last interval is still open
            g = groups[start]
            vol = sum(q for _, q, _ in g)
            rows.append([g[0][0], max(p for p, _, _ in g), min(p for p, _, _ in g), g[-1][0],
                         vol, sum(q for _, q, s in g if s == 1),
                         sum(p * q for p, q, _ in g) / vol, float(tf)])
        out[tf] = rows
    return out


def test_recorded_trades_match_the_reference() -> None:
    _, sink = replay("binance", SPOT)
    recs = np.concatenate([c for s, c in sink.chunks if s == "trades"])
    assert len(recs) > 5000
    whole, ev = CandleState(1), EventBuffer(1 << 16)
    whole.update(recs, ev, 0)
    got = ev.take().copy()
    want = reference(recs)
    for tf in TIMEFRAMES_S:
        mine = [r["values"].tolist() for r in got if r["values"][7] == tf]
        assert len(mine) == len(want[tf]), tf
        np.testing.assert_allclose(np.array(mine).reshape(-1, 8),
                                   np.array(want[tf]).reshape(-1, 8), rtol=1e-12)
    assert len([r for r in got if r["values"][7] == 1]) > 100
    step, ev2, parts = CandleState(1), EventBuffer(1 << 16), []
    rng, i = np.random.default_rng(8), 0
    while i < len(recs):
        j = min(len(recs), i + int(rng.integers(1, 500)))
        step.update(recs[i:j], ev2, 0)
        parts.append(ev2.take().copy())
        i = j
    assert np.array_equal(np.concatenate(parts), got)
    assert np.array_equal(step.values, whole.values) and step.late[0] == whole.late[0]
