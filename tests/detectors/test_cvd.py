"""CVD kernel: hand-computed cases, a pure-Python reference on real recorded trades, and
incremental (random batch sizes) == whole-recording batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import shm
from workers.detectors.cvd import WINDOWS_S, CvdState
from workers.exchanges.replay import replay

DATA = Path(__file__).resolve().parents[1] / "data" / "recorded"
S = 1_000_000_000


def trades(*rows: tuple[float, float, int, int]) -> np.ndarray:
    """Records from ``(seconds, qty, side, symbol_id)``."""
    out = np.zeros(len(rows), shm.TRADE)
    for i, (sec, qty, side, sid) in enumerate(rows):
        out[i]["ts_exchange_ns"] = int(sec * S)
        out[i]["qty"], out[i]["side"], out[i]["symbol_id"] = qty, side, sid
        out[i]["price"] = 100.0
    return out


def test_single_trade_and_empty_batch() -> None:
    st = CvdState(2)
    st.update(trades())
    assert st.trades.tolist() == [0, 0] and st.head_s.tolist() == [-1, -1]
    st.update(trades((10.5, 2.0, -1, 1)))
    assert st.windows[1].tolist() == [-2.0, -2.0, -2.0]
    assert (st.session[1], st.trades[1], st.head_s[1]) == (-2.0, 1, 10)
    assert st.windows[0].tolist() == [0.0, 0.0, 0.0]


def test_window_boundaries() -> None:
    st = CvdState(1)
    st.update(trades((0.0, 1.0, 1, 0), (59.999, 2.0, 1, 0)))
    assert st.windows[0].tolist() == [3.0, 3.0, 3.0]  # seconds 0..59 are one minute
    st.update(trades((60.0, 4.0, -1, 0)))              # second 0 leaves the 1 m window
    assert st.windows[0].tolist() == [-2.0, -1.0, -1.0]
    st.update(trades((299.0, 1.0, 1, 0)))
    assert st.windows[0].tolist() == [1.0, 0.0, 0.0]
    st.update(trades((300.0, 1.0, 1, 0)))              # second 0 leaves 5 m; 59, 60 remain
    assert st.windows[0].tolist() == [2.0, 0.0, 1.0]
    st.update(trades((899.0, 0.5, 1, 0)))
    assert st.windows[0].tolist() == [0.5, 0.5, 1.5]
    st.update(trades((900.0, 0.25, 1, 0)))            # second 0 leaves 15 m
    assert st.windows[0].tolist() == [0.75, 0.75, 0.75]
    assert st.session[0] == 1 + 2 - 4 + 1 + 1 + 0.5 + 0.25 and st.trades[0] == 7


def test_late_trades_count_where_their_second_is_covered() -> None:
    st = CvdState(1)
    st.update(trades((1000.0, 1.0, 1, 0)))
    st.update(trades((950.0, 2.0, 1, 0), (500.0, 4.0, 1, 0), (10.0, 8.0, 1, 0)))
    # 950: age 50 (all windows); 500: age 500 (15 m only); 10: older than every window
    assert st.windows[0].tolist() == [3.0, 3.0, 7.0]
    assert st.session[0] == 15.0
    st.update(trades((1010.0, 0.0, 1, 0), (1010.0, 1.0, 1, 0)))  # qty 0: refused
    assert st.windows[0].tolist() == [2.0, 4.0, 8.0] and st.skipped[0] == 1
    st.update(trades((1401.0, 1.0, 1, 0)))  # 500 leaves 15 m at 1400; 950..1401 stay
    assert st.windows[0].tolist() == [1.0, 1.0, 5.0]


def test_gap_reset_and_bad_records() -> None:
    st = CvdState(2)
    st.update(trades((5.0, 1.0, 1, 0), (6.0, 2.0, -1, 0)))
    st.update(trades((5000.0, 3.0, 1, 0)))  # beyond the history: every window restarts
    assert st.windows[0].tolist() == [3.0, 3.0, 3.0] and st.session[0] == 2.0
    bad = trades((5001.0, 1.0, 0, 0), (5001.0, np.nan, 1, 0), (5001.0, np.inf, 1, 0),
                 (5001.0, 1.0, 1, 7))
    st.update(bad)
    assert st.skipped[0] == 4 and st.trades[0] == 3
    st.reset(0)
    assert st.head_s[0] == -1 and st.trades[0] == 0 and st.windows[0].tolist() == [0.0] * 3
    with pytest.raises(ValueError, match="symbols"):
        CvdState(0)


def reference(recs: np.ndarray, n_symbols: int) -> tuple[np.ndarray, np.ndarray]:
    """Windows and session by the module docstring's definition, trade by trade in Python."""
    seen: list[list[tuple[int, float]]] = [[] for _ in range(n_symbols)]
    head = [-1] * n_symbols
    session = np.zeros(n_symbols)
    for r in recs:
        s, sec = int(r["symbol_id"]), int(r["ts_exchange_ns"]) // S
        signed = float(r["qty"]) * (1 if r["side"] == 1 else -1)
        session[s] += signed
        seen[s].append((sec, signed))
        head[s] = max(head[s], sec)
    windows = np.zeros((n_symbols, len(WINDOWS_S)))
    for s in range(n_symbols):
        for w, width in enumerate(WINDOWS_S):
            windows[s, w] = sum(v for sec, v in seen[s] if head[s] - width < sec <= head[s])
    return windows, session


@pytest.fixture(scope="module")
def recorded_trades() -> tuple[np.ndarray, int]:
    """Every trade of the Binance USD-M and spot BTCUSDT recordings, as symbols 0 and 1 (one
    stream, timestamps interleaved as they come) plus the 4-symbol recording's as 2..5."""
    parts = []
    for k, name in enumerate(("hftbacktest_usdm_btcusdt_20240808.frames.jsonl.gz",
                              "hftbacktest_spot_btcusdt_20240808.frames.jsonl.gz",
                              "cryptofeed_usdm_4sym_20210722.frames.jsonl")):
        _, sink = replay("binance", DATA / "binance" / name)
        recs = np.concatenate([c for s, c in sink.chunks if s == "trades"])
        recs["symbol_id"] += k
        parts.append(recs)
    return np.concatenate(parts), 6


def test_recorded_trades_match_the_reference_at_every_batch(
        recorded_trades: tuple[np.ndarray, int]) -> None:
    recs, n = recorded_trades
    assert len(recs) > 10_000 and len(set(recs["symbol_id"].tolist())) >= 3
    whole = CvdState(n)
    whole.update(recs)
    rng = np.random.default_rng(11)
    step = CvdState(n)
    i = checks = 0
    while i < len(recs):
        j = min(len(recs), i + int(rng.integers(1, 400)))
        step.update(recs[i:j])
        i = j
        if rng.random() < 0.1 or i == len(recs):
            windows, session = reference(recs[:i], n)
            np.testing.assert_allclose(step.windows, windows, rtol=1e-9, atol=1e-9)
            np.testing.assert_allclose(step.session, session, rtol=1e-9, atol=1e-9)
            checks += 1
    assert checks > 3
    # offline = online: the same operations in the same order, so bit-identical state
    for name in ("buckets", "head_s", "windows", "session", "trades", "skipped"):
        assert np.array_equal(getattr(step, name), getattr(whole, name)), name
    assert whole.trades.sum() == len(recs) and whole.skipped[0] == 0
