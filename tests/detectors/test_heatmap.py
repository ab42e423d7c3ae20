"""Heatmap and walls: zones by hand, a wall that stands and one that moves, not-LIVE records,
and a numpy reference over the recorded Bybit books."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import shm
from workers.detectors.heatmap import HeatmapState
from workers.exchanges.replay import replay

DATA = Path(__file__).resolve().parents[1] / "data" / "recorded"


def book(bids: list[tuple[float, float]], asks: list[tuple[float, float]], ts: int = 0,
         state: int = shm.BookState.LIVE) -> np.ndarray:
    r = np.zeros(1, shm.BOOK)
    r["state"], r["ts_exchange_ns"], r["n_bids"], r["n_asks"] = state, ts, len(bids), len(asks)
    for k, (p, q) in enumerate(bids):
        r["bid_px"][0, k], r["bid_qty"][0, k] = p, q
    for k, (p, q) in enumerate(asks):
        r["ask_px"][0, k], r["ask_qty"][0, k] = p, q
    return r


def test_zones_and_walls_by_hand() -> None:
    st = HeatmapState(1, zones=3, zone_bps=100.0)  # 1 % of the first mid (100): width 1.0
    st.update(book([(99.9, 1.0), (99.5, 2.0), (98.2, 7.0), (90.0, 50.0)],
                   [(100.1, 1.0), (101.5, 4.0), (101.7, 1.0)], ts=10))
    assert st.width[0] == 1.0
    # mid 100 → zone 100; bids: 99.9, 99.5 in zone 99 (k 1), 98.2 in zone 98 (k 2), 90 beyond
    assert st.heat[0, 0].tolist() == [0.0, 3.0, 7.0]
    assert st.heat[0, 1].tolist() == [1.0, 5.0, 0.0]  # asks: 100.1 (k 0), 101.5 + 101.7 (k 1)
    # walls: bids' largest zone is 90 (50, beyond the heatmap), asks' zone 101 (5)
    assert st.walls[0, 0, :2].tolist() == [90.0, 50.0] and st.since_ns[0, 0] == 10
    assert st.walls[0, 1].tolist() == [101.0, 5.0, pytest.approx(101.5 * 4 + 101.7),
                                       pytest.approx((101.5 * 4 + 101.7) / 5)]
    st.update(book([(99.9, 1.0), (90.0, 40.0)], [(100.1, 9.0)], ts=20))  # bid wall stands
    assert st.since_ns[0, 0] == 10 and st.walls[0, 0, 1] == 40.0
    assert st.since_ns[0, 1] == 20 and st.walls[0, 1, 0] == 100.0  # the ask wall moved
    st.update(book([(1.0, 1.0)], [(2.0, 1.0)], ts=30, state=shm.BookState.RESYNCING))
    assert st.counters[0] == 1 and st.since_ns[0, 0] == 10
    for kwargs in ({"zones": 0}, {"zone_bps": 0.0}):
        with pytest.raises(ValueError):
            HeatmapState(1, **kwargs)  # type: ignore[arg-type]


def test_recorded_books_match_numpy() -> None:
    _, sink = replay("bybit", DATA / "bybit" / "cryptofeed_linear_v5_20260809.frames.jsonl")
    books = np.concatenate([c for s, c in sink.chunks if s == "book"])
    live = books[books["state"] == shm.BookState.LIVE]
    n_sym = int(books["symbol_id"].max()) + 1
    st = HeatmapState(n_sym, zones=10, zone_bps=2.0)
    width: dict[int, float] = {}
    checked = 0
    for i in range(0, len(books), 50):
        batch = books[i:i + 50]
        st.update(batch)
        for r in batch[batch["state"] == shm.BookState.LIVE]:
            width.setdefault(int(r["symbol_id"]), (r["bid_px"][0] + r["ask_px"][0]) / 2 * 2e-4)
        for sid in np.unique(batch["symbol_id"]):
            rows = batch[(batch["symbol_id"] == sid) & (batch["state"] == shm.BookState.LIVE)]
            if not len(rows):
                continue
            r, w = rows[-1], width[int(sid)]
            mid_zone = math.floor((r["bid_px"][0] + r["ask_px"][0]) / 2 / w)
            heat = np.zeros(10)
            for p, q in zip(r["bid_px"][:r["n_bids"]], r["bid_qty"][:r["n_bids"]], strict=True):
                k = mid_zone - math.floor(p / w)
                if 0 <= k < 10:
                    heat[k] += q
            np.testing.assert_allclose(st.heat[sid, 0], heat, rtol=1e-12)
            checked += 1
    assert checked > 100 and len(live) > 1000
