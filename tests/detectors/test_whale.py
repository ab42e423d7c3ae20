"""Whale trades and bursts: hand-computed cases, the event record's fields, a full buffer,
and incremental == whole-recording on real trades."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import shm
from workers.detectors.events import EventBuffer, EventKind
from workers.detectors.whale import WhaleState
from workers.exchanges.replay import replay

DATA = Path(__file__).resolve().parents[1] / "data" / "recorded"
S = 1_000_000_000
USDM = DATA / "binance" / "hftbacktest_usdm_btcusdt_20240808.frames.jsonl.gz"


def trades(*rows: tuple[float, float, float, int], sid: int = 0) -> np.ndarray:
    """Records from ``(seconds, price, qty, side)``; seq and stamps numbered 1, 2, ..."""
    out = np.zeros(len(rows), shm.TRADE)
    for i, (sec, px, qty, side) in enumerate(rows):
        r = out[i]
        r["ts_exchange_ns"], r["price"], r["qty"], r["side"] = int(sec * S), px, qty, side
        r["symbol_id"], r["exchange"], r["market"] = sid, 1, 2
        r["seq"], r["ts_commit_ns"], r["ts_mono_ns"], r["ts_recv_ns"] = i + 1, 100 + i, 50 + i, 7
    return out


def test_whale_trade_event_fields_and_confidence() -> None:
    st, ev = WhaleState(2), EventBuffer()
    st.set_threshold(0, 1_000_000.0, 0.0)
    st.update(trades((1.0, 50_000.0, 19.9, 1), (1.5, 50_000.0, 20.0, -1),
                     (2.0, 50_000.0, 200.0, 1), (3.0, 50_000.0, 500.0, 1)), ev, 999)
    got = ev.take()
    assert got["kind"].tolist() == [EventKind.WHALE_TRADE] * 3
    first = got[0]
    assert (first["side"], first["priority"], first["trigger_seq"], first["trigger_commit_ns"],
            first["ts_mono_ns"], first["ts_detect_ns"], first["exchange"], first["market"]) == (
        -1, shm.Priority.CRITICAL, 2, 101, 51, 999, 1, 2)
    assert first["ts_exchange_ns"] == int(1.5 * S)
    assert first["values"][:5].tolist() == [50_000.0, 20.0, 1_000_000.0, 0.5, 1.0]
    assert got["values"][:, 3].tolist() == [0.5, 1.0, 1.0]  # 10x and 25x: capped at 1
    assert len(ev.take()) == 0  # taken


def test_burst_fires_once_per_run_and_resets_on_side_or_window() -> None:
    st, ev = WhaleState(1, burst_window_s=1.0), EventBuffer()
    st.set_threshold(0, 0.0, 100.0)
    st.update(trades((0.0, 10.0, 4.0, 1), (0.5, 10.0, 4.0, 1), (0.9, 10.0, 2.0, 1),
                     (1.0, 10.0, 5.0, 1)), ev, 1)
    got = ev.take()
    assert len(got) == 1 and got[0]["kind"] == EventKind.WHALE_BURST
    assert got[0]["trigger_seq"] == 3  # the trade that took the run to 100
    assert got[0]["values"][:6].tolist() == [10.0, 10.0, 100.0, 3.0, 0.9, 1.0]
    # 1.0 s after the first is still inside the window: same run, no second event
    st.update(trades((1.1, 10.0, 10.0, 1)), ev, 2)      # past the window: a new run fires
    assert ev.take()["values"][:, 2].tolist() == [100.0]
    st.update(trades((1.2, 10.0, 9.0, -1), (1.3, 10.0, 9.0, 1), (1.4, 10.0, 9.0, -1)), ev, 3)
    assert len(ev.take()) == 0  # each side change starts over
    st.reset(0)
    assert st.run_i[0].tolist() == [0, 0, 0, 0]


def test_bad_records_full_buffer_and_bad_config() -> None:
    st, ev = WhaleState(1), EventBuffer(2)
    st.set_threshold(0, 1.0, 0.0)
    bad = trades((0.0, np.nan, 1.0, 1), (0.0, 1.0, -1.0, 1), (0.0, 1.0, 1.0, 0))
    bad = np.concatenate([bad, trades((0.0, 5.0, 1.0, 1), sid=3)])
    st.update(bad, ev, 0)
    assert st.skipped[0] == 4 and len(ev.take()) == 0
    st.update(trades(*[(0.0, 5.0, 1.0, 1)] * 5), ev, 0)
    assert len(ev.take()) == 2 and ev.dropped == 3
    with pytest.raises(ValueError, match="min_usd"):
        st.set_threshold(0, float("nan"), 0.0)
    with pytest.raises(ValueError, match="burst_window_s"):
        WhaleState(1, burst_window_s=0)
    with pytest.raises(ValueError, match="capacity"):
        EventBuffer(0)


def test_incremental_equals_whole_on_recorded_trades() -> None:
    _, sink = replay("binance", USDM)
    recs = np.concatenate([c for s, c in sink.chunks if s == "trades"])
    recs["seq"] = np.arange(len(recs))
    usd = recs["price"] * recs["qty"]
    threshold = float(np.percentile(usd, 99.5))
    whole, ev_whole = WhaleState(1, burst_window_s=0.5), EventBuffer(1 << 16)
    step, ev_step = WhaleState(1, burst_window_s=0.5), EventBuffer(1 << 16)
    for st in (whole, step):
        st.set_threshold(0, threshold, 5 * threshold)
    whole.update(recs, ev_whole, 0)
    got_whole = ev_whole.take().copy()
    rng, i, parts = np.random.default_rng(3), 0, []
    while i < len(recs):
        j = min(len(recs), i + int(rng.integers(1, 300)))
        step.update(recs[i:j], ev_step, 0)
        parts.append(ev_step.take().copy())
        i = j
    got_step = np.concatenate(parts)
    whales = got_whole[got_whole["kind"] == EventKind.WHALE_TRADE]
    assert len(whales) == int((usd >= threshold).sum()) > 10  # the reference count
    assert (got_whole["kind"] == EventKind.WHALE_BURST).sum() > 0
    assert np.array_equal(got_step, got_whole)
