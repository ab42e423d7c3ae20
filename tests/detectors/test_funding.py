"""Cross-exchange funding: aggregation, basis, stale and unmapped records, by hand."""

from __future__ import annotations

import numpy as np
import pytest

import shm
from workers.detectors.funding import FundingState


def funding(*rows: tuple[int, int, float, float, float, float, int]) -> np.ndarray:
    """``(exchange, symbol id, rate, predicted, mark, index, ts)`` records."""
    out = np.zeros(len(rows), shm.FUNDING)
    for i, (e, sid, rate, pred, mark, index, ts) in enumerate(rows):
        r = out[i]
        r["exchange"], r["symbol_id"], r["funding_rate"], r["predicted_rate"] = e, sid, rate, pred
        r["mark_px"], r["index_px"], r["ts_exchange_ns"] = mark, index, ts
    return out


def test_by_hand() -> None:
    st = FundingState(assets=2, symbols=4)
    st.map(1, 0, 0)   # binance BTCUSDT
    st.map(2, 3, 0)   # bybit BTCUSDT
    st.map(3, 1, 0)   # okx BTC-USDT-SWAP
    st.update(funding((1, 0, 0.0001, np.nan, 101.0, 100.0, 5),
                      (2, 3, 0.0003, np.nan, 100.0, 100.0, 5)))
    assert st.summary[0].tolist() == pytest.approx([0.0001, 0.0003, 0.0002, 0.0002, 2])
    assert st.latest[0, 1, 4] == pytest.approx(0.01)  # basis (101 - 100) / 100
    st.update(funding((3, 1, -0.0002, 0.0001, 99.0, np.nan, 6), (1, 0, 0.5, 0.0, 1.0, 1.0, 4)))
    assert st.summary[0, :2].tolist() == [-0.0002, 0.0003] and st.summary[0, 4] == 3
    assert np.isnan(st.latest[0, 3, 4])  # OKX: no index, no basis
    assert st.latest[0, 1, 0] == 0.0001  # the older Binance record was ignored
    st.update(funding((1, 2, 0.1, 0.1, 1.0, 1.0, 7), (0, 9, 0.1, 0.1, 1.0, 1.0, 7)))
    assert st.skipped[0] == 2 and np.isnan(st.summary[1, 0])
    with pytest.raises(ValueError, match="asset"):
        st.map(1, 0, 5)


def test_base_asset() -> None:
    from workers.detectors.funding import base_asset
    assert base_asset("BTCUSDT", "linear") == "BTC"
    assert base_asset("BTC-USDT-SWAP", "linear") == "BTC"
    assert base_asset("BTCUSD_PERP", "inverse") == "BTC"
    assert base_asset("1000PEPEUSDT", "linear") == "1000PEPE"
    assert base_asset("BTCUSDT", "spot") is None


def test_runner_aggregates_funding_across_exchanges(instance: str) -> None:
    from workers.detectors.runner import DetectorRunner

    runner = DetectorRunner(instance, {"binance": ["BTCUSDT", "BTCUSDT@spot"],
                                       "bybit": ["BTCUSDT"]},
                            markets={"binance": ["linear", "spot"], "bybit": ["linear"]},
                            start="oldest")
    rings = {ex: shm.Writer(shm.segment_name(instance, ex, "funding"), shm.FUNDING, 1024)
             for ex in ("binance", "bybit")}
    try:
        rings["binance"].commit(funding((1, 0, 0.0001, 0.0002, 101.0, 100.0, 5))[0])
        rings["bybit"].commit(funding((2, 0, 0.0004, np.nan, 100.0, np.nan, 5))[0])
        assert runner.step() == 2
        rows = {ex: runner.rows[ex] for ex in ("binance", "bybit")}
        assert rows["binance"][0]["funding_rate"] == 0.0001
        assert rows["binance"][0]["basis"] == pytest.approx(0.01)
        assert rows["binance"][0]["funding_predicted"] == 0.0002
        assert np.isnan(rows["bybit"][0]["funding_predicted"])  # not published
        assert rows["bybit"][0]["funding_spread"] == pytest.approx(0.0003)
        assert rows["binance"][0]["funding_spread"] == pytest.approx(0.0003)
        assert np.isnan(rows["binance"][1]["funding_rate"])  # spot: no funding
    finally:
        for w in rings.values():
            w.close()
        runner.close()
