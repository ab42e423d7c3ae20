"""Icebergs: a refilling bid that absorbs far more than it shows fires when the touch moves and
the trades have been seen; a plain level, too few refills, or too little volume do not."""

from __future__ import annotations

import numpy as np
import pytest

import shm
from workers.detectors.events import EventBuffer, EventKind
from workers.detectors.iceberg import IcebergState

S = 1_000_000_000


def book(ts: float, bid: tuple[float, float], seq: int = 0) -> np.ndarray:
    r = np.zeros(1, shm.BOOK)
    r["state"], r["ts_exchange_ns"], r["seq"], r["n_bids"], r["n_asks"] = (
        shm.BookState.LIVE, round(ts * S), seq, 1, 1)
    r["bid_px"][0, 0], r["bid_qty"][0, 0] = bid
    r["ask_px"][0, 0], r["ask_qty"][0, 0] = 101.0, 1.0
    return r


def trade(ts: float, px: float, qty: float, side: int = -1) -> np.ndarray:
    r = np.zeros(1, shm.TRADE)
    r["ts_exchange_ns"], r["price"], r["qty"], r["side"] = round(ts * S), px, qty, side
    return r


def scenario(refills: int = 4, per_fill: float = 4.0) -> list[tuple[str, np.ndarray]]:
    """A bid at 100 showing 5, eaten down to 1 and refilled to 5, ``refills`` times."""
    out: list[tuple[str, np.ndarray]] = [("book", book(0.0, (100.0, 5.0), 1))]
    t = 0.0
    for _ in range(refills):
        t += 1.0
        out.append(("trades", trade(t, 100.0, per_fill)))
        out.append(("book", book(t + 0.1, (100.0, 1.0))))
        out.append(("book", book(t + 0.2, (100.0, 5.0))))
    out.append(("book", book(t + 1.0, (99.9, 3.0), 99)))          # the touch moves
    out.append(("trades", trade(t + 1.5, 99.9, 1.0)))              # trades pass that time
    return out


def run(steps: list[tuple[str, np.ndarray]], **kw: float) -> np.ndarray:
    st, ev = IcebergState(1, **{"min_usd": 1_000.0, **kw}), EventBuffer()
    for stream, recs in steps:
        (st.trades if stream == "trades" else st.books)(recs, ev, 0)
    return ev.take().copy()


def test_a_refilling_bid_is_an_iceberg() -> None:
    got = run(scenario(), traded_ratio=3.0)  # 16 traded against 5 ever shown
    assert got["kind"].tolist() == [EventKind.ICEBERG] and got[0]["side"] == 1
    assert got[0]["trigger_seq"] == 99
    price, traded, shown, refills, ratio, duration, usd = got[0]["values"][:7].tolist()
    assert (price, traded, shown, refills, ratio) == (100.0, 16.0, 5.0, 4.0, 3.2)
    assert duration == 5.0 and usd == 1600.0


def test_not_icebergs() -> None:
    assert len(run(scenario())) == 0                          # 16 traded < 5 × 5 shown
    assert len(run(scenario(refills=2), traded_ratio=1.5)) == 0  # refills 2 < 3
    assert len(run(scenario(), traded_ratio=3.0, min_usd=5_000.0)) == 0  # too little money
    assert len(run(scenario()[:-1], traded_ratio=3.0)) == 0   # trades not past the close yet


def test_bad_config() -> None:
    for kw in ({"traded_ratio": 1.0}, {"min_refills": 0}, {"grace_s": 0.0}):
        with pytest.raises(ValueError):
            IcebergState(1, **kw)  # type: ignore[arg-type]
