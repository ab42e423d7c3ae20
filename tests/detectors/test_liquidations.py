"""Liquidations: single events, cascades by notional and sampling slots (Binance 1 s vs
Bybit 0.5 s), hysteresis, window eviction, ring overflow, and a brute-force reference over a
random stream (window sums and slot counts recomputed from scratch)."""

from __future__ import annotations

import numpy as np
import pytest

import shm
from workers.detectors.events import EventBuffer, EventKind
from workers.detectors.liquidations import LiquidationState

S = 1_000_000_000


def liqs(*rows: tuple[float, float, float, int], exchange: int = 1) -> np.ndarray:
    """``(seconds, price, qty, side)`` liquidation records of symbol 0."""
    out = np.zeros(len(rows), shm.LIQUIDATION)
    for i, (sec, px, qty, side) in enumerate(rows):
        out[i]["ts_exchange_ns"], out[i]["price"], out[i]["qty"] = round(sec * S), px, qty
        out[i]["side"], out[i]["exchange"], out[i]["seq"] = side, exchange, i
    return out


def kinds(ev: EventBuffer) -> list[int]:
    return ev.take()["kind"].tolist()


def test_single_liquidations_and_a_cascade_by_slots() -> None:
    st, ev = LiquidationState(1, window_s=10.0, min_slots=3), EventBuffer()
    st.set_threshold(0, 500.0, 3000.0)
    # Binance: three liquidations within one second are one sampling slot
    st.update(liqs((0.1, 100.0, 10.0, -1), (0.5, 100.0, 10.0, -1), (0.9, 100.0, 10.0, -1)),
              ev, 0)
    assert kinds(ev) == [EventKind.LIQUIDATION] * 3  # 3000 USD but one slot: no cascade
    st.update(liqs((1.2, 100.0, 1.0, -1), (2.5, 100.0, 1.0, -1)), ev, 0)
    got = ev.take()
    assert got["kind"].tolist() == [EventKind.LIQUIDATION_CASCADE]  # slots 0, 1, 2
    assert got[0]["priority"] == shm.Priority.CRITICAL and got[0]["side"] == -1
    assert got[0]["values"][:5].tolist() == [3200.0, 3.0, 5.0, 2.4, 100.0]
    st.update(liqs((3.0, 100.0, 30.0, -1)), ev, 0)
    assert kinds(ev) == [EventKind.LIQUIDATION]  # the same episode: no second cascade
    st.update(liqs((3.5, 100.0, 1.0, 1)), ev, 0)  # the other side has its own window
    assert kinds(ev) == [] and st.sums[0, 0] == 100.0


def test_hysteresis_and_eviction() -> None:
    st, ev = LiquidationState(1, window_s=5.0, min_slots=2), EventBuffer()
    st.set_threshold(0, 0.0, 1000.0)
    st.update(liqs((0.0, 100.0, 6.0, -1), (1.0, 100.0, 6.0, -1)), ev, 0)
    assert kinds(ev) == [EventKind.LIQUIDATION_CASCADE]
    st.update(liqs((5.5, 100.0, 1.0, -1)), ev, 0)  # 0.0 left: 700 ≥ 500, still the episode
    assert kinds(ev) == [] and st.ints[0, 1, 3] == 1
    st.update(liqs((6.5, 100.0, 1.0, -1)), ev, 0)  # 1.0 left: 200 < 500: re-armed
    assert kinds(ev) == [] and st.ints[0, 1, 3] == 0
    st.update(liqs((7.0, 100.0, 9.0, -1)), ev, 0)  # 1100 over slots 5, 6, 7: a new episode
    assert kinds(ev) == [EventKind.LIQUIDATION_CASCADE]


def test_bybit_slots_are_half_seconds_and_bad_input() -> None:
    st, ev = LiquidationState(1, window_s=10.0, min_slots=2), EventBuffer()
    st.set_threshold(0, 0.0, 100.0)
    st.update(liqs((0.1, 10.0, 5.0, 1), (0.6, 10.0, 5.0, 1), exchange=2), ev, 0)
    assert kinds(ev) == [EventKind.LIQUIDATION_CASCADE]  # two 500 ms batches
    st2 = LiquidationState(1, window_s=10.0, min_slots=2)
    st2.set_threshold(0, 0.0, 100.0)
    st2.update(liqs((0.1, 10.0, 5.0, 1), (0.6, 10.0, 5.0, 1), exchange=1), ev, 0)
    assert kinds(ev) == []  # the same on Binance is one 1 s sample
    st.update(liqs((1.0, np.nan, 1.0, 1), (1.0, 1.0, 1.0, 0)), ev, 0)
    assert st.counters[0] == 2
    with pytest.raises(ValueError, match="window_s"):
        LiquidationState(1, window_s=0)
    with pytest.raises(ValueError, match="sample_s"):
        LiquidationState(1, sample_s={shm.Exchange.OKX: 0.0})
    with pytest.raises(ValueError, match="cascade_usd"):
        st.set_threshold(0, 1.0, -1.0)


def test_random_stream_matches_brute_force() -> None:
    rng = np.random.default_rng(4)
    n, window, cap = 3000, 3.0, 64
    secs = np.cumsum(rng.exponential(0.2, n))
    rows = [(float(t), 100.0, float(q), int(s)) for t, q, s in
            zip(secs, rng.exponential(2.0, n), rng.choice([-1, 1], n), strict=True)]
    recs = liqs(*rows, exchange=2)
    st, ev = LiquidationState(1, window_s=window, min_slots=2, capacity=cap), EventBuffer(n)
    st.set_threshold(0, 0.0, 1500.0)
    for i in range(0, n, 37):
        st.update(recs[i:i + 37], ev, 0)
        for k, side in enumerate((1, -1)):
            mine = recs[:i + 37]
            mine = mine[mine["side"] == side]
            if not len(mine):
                continue
            now = int(mine["ts_exchange_ns"][-1])
            inside = mine[mine["ts_exchange_ns"] > now - int(window * S)][-cap:]
            want = float((inside["price"] * inside["qty"]).sum())
            assert st.sums[0, k] == pytest.approx(want, rel=1e-9, abs=1e-6), (i, side)
            slots = len(set((inside["ts_exchange_ns"] // (S // 2)).tolist()))
            assert st.ints[0, k, 2] == slots
    assert (ev.take()["kind"] == EventKind.LIQUIDATION_CASCADE).sum() > 0


def test_a_full_window_drops_its_oldest_and_counts_it() -> None:
    st, ev = LiquidationState(1, window_s=60.0, min_slots=1, capacity=2), EventBuffer()
    st.set_threshold(0, 0.0, 1e9)
    st.update(liqs((0.0, 1.0, 1.0, 1), (1.0, 1.0, 2.0, 1), (2.0, 1.0, 4.0, 1)), ev, 0)
    assert st.counters[1] == 1 and st.sums[0, 0] == 6.0 and st.ints[0, 0, 2] == 2
    st.reset(0)
    assert st.sums[0, 0] == 0.0 and st.ints[0, 0].tolist() == [0] * 5
