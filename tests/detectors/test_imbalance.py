"""Book imbalance: by hand (equal and decaying weights, one-sided and empty books, not-LIVE
records ignored), and a numpy reference over every LIVE book record of a real recording."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import shm
from workers.detectors.imbalance import ImbalanceState
from workers.exchanges.replay import replay

DATA = Path(__file__).resolve().parents[1] / "data" / "recorded"


def book(bids: list[tuple[float, float]], asks: list[tuple[float, float]],
         state: int = shm.BookState.LIVE, sid: int = 0, seq: int = 1) -> np.ndarray:
    r = np.zeros(1, shm.BOOK)
    r["symbol_id"], r["state"], r["seq"], r["ts_exchange_ns"] = sid, state, seq, 5
    r["n_bids"], r["n_asks"] = len(bids), len(asks)
    r["bid_px"], r["ask_px"] = np.nan, np.nan
    for k, (p, q) in enumerate(bids):
        r["bid_px"][0, k], r["bid_qty"][0, k] = p, q
    for k, (p, q) in enumerate(asks):
        r["ask_px"][0, k], r["ask_qty"][0, k] = p, q
    return r


def test_by_hand() -> None:
    st = ImbalanceState(2, levels=2)
    st.update(book([(100.0, 3.0), (99.0, 1.0), (98.0, 50.0)], [(101.0, 1.0), (102.0, 1.0)]))
    assert st.values[0].tolist() == [(4.0 - 2.0) / 6.0, 100.5, 1.0]  # level 3 is beyond N
    decayed = ImbalanceState(1, levels=2, decay=0.5)
    decayed.update(book([(100.0, 3.0), (99.0, 1.0)], [(101.0, 1.0), (102.0, 1.0)]))
    assert decayed.values[0, 0] == (3.5 - 1.5) / 5.0
    st.update(book([(100.0, 2.0)], [], sid=1, seq=9))
    assert st.values[1, 0] == 1.0 and np.isnan(st.values[1, 1]) and st.seq[1] == 9
    st.update(book([], [], sid=1))
    assert np.isnan(st.values[1, 0])
    before = st.values.copy()
    st.update(book([(1.0, 1.0)], [(2.0, 9.0)], state=shm.BookState.RESYNCING))
    st.update(book([(1.0, 1.0)], [(2.0, 9.0)], sid=7))
    assert np.array_equal(st.values, before, equal_nan=True)
    assert st.not_live[0] == 1 and st.skipped[0] == 1
    for kwargs in ({"levels": 0}, {"decay": 0.0}, {"decay": 1.5}):
        with pytest.raises(ValueError):
            ImbalanceState(1, **kwargs)  # type: ignore[arg-type]


def test_recorded_books_match_numpy() -> None:
    _, sink = replay("bybit", DATA / "bybit" / "cryptofeed_linear_v5_20260809.frames.jsonl")
    books = np.concatenate([c for s, c in sink.chunks if s == "book"])
    books["seq"] = np.arange(len(books))  # as a ring would number them
    live = books[books["state"] == shm.BookState.LIVE]
    assert len(live) > 1000
    n_sym = int(books["symbol_id"].max()) + 1
    st = ImbalanceState(n_sym, levels=5, decay=0.8)
    w = 0.8 ** np.arange(5)
    for i in range(0, len(books), 97):  # batches; check after each against the last LIVE one
        batch = books[i:i + 97]
        st.update(batch)
        for sid in np.unique(batch["symbol_id"]):
            rows = batch[(batch["symbol_id"] == sid) & (batch["state"] == shm.BookState.LIVE)]
            if not len(rows):
                continue
            r = rows[-1]
            bid = float(np.dot(w[:min(5, r["n_bids"])], r["bid_qty"][:min(5, r["n_bids"])]))
            ask = float(np.dot(w[:min(5, r["n_asks"])], r["ask_qty"][:min(5, r["n_asks"])]))
            assert st.values[sid, 0] == pytest.approx((bid - ask) / (bid + ask), rel=1e-12)
            assert st.values[sid, 1] == (r["bid_px"][0] + r["ask_px"][0]) / 2
            assert st.seq[sid] == r["seq"]
