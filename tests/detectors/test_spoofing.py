"""Spoofing: a large bid placed near the touch and pulled fires; one that was traded away, one
that stayed, one placed far from the touch, or a small one do not; verdicts wait for the
trades; the batching of the two streams does not change the events."""

from __future__ import annotations

import numpy as np
import pytest

import shm
from workers.detectors.events import EventBuffer, EventKind
from workers.detectors.spoofing import SpoofState

S = 1_000_000_000


def book(ts: float, bids: list[tuple[float, float]], seq: int = 0) -> np.ndarray:
    """A LIVE book with ``bids`` and a fixed thin ask side."""
    r = np.zeros(1, shm.BOOK)
    r["state"], r["ts_exchange_ns"], r["seq"] = shm.BookState.LIVE, round(ts * S), seq
    asks = [(100.1 + k * 0.1, 1.0) for k in range(5)]
    r["n_bids"], r["n_asks"] = len(bids), len(asks)
    for k, (p, q) in enumerate(bids):
        r["bid_px"][0, k], r["bid_qty"][0, k] = p, q
    for k, (p, q) in enumerate(asks):
        r["ask_px"][0, k], r["ask_qty"][0, k] = p, q
    return r


def trade(ts: float, px: float, qty: float, side: int) -> np.ndarray:
    r = np.zeros(1, shm.TRADE)
    r["ts_exchange_ns"], r["price"], r["qty"], r["side"] = round(ts * S), px, qty, side
    return r


BASE = [(100.0, 1.0), (99.95, 1.0), (99.9, 1.0), (99.8, 1.0), (99.5, 1.0)]
WALL = [(100.0, 1.0), (99.95, 30.0), (99.9, 1.0), (99.8, 1.0), (99.5, 1.0)]


def scenario(traded: float = 0.0, pull_at: float = 2.0) -> list[tuple[str, np.ndarray]]:
    """A 30-lot (3 000 USD) bid at 99.95 placed at t=1 and pulled at ``pull_at``."""
    out = [("book", book(0.5, BASE, 1)), ("book", book(1.0, WALL, 2))]
    if traded:
        out.append(("trades", trade(1.5, 99.95, traded, -1)))
    out += [("book", book(pull_at, BASE, 3)), ("trades", trade(pull_at + 0.5, 100.1, 1.0, 1))]
    return out


def run(steps: list[tuple[str, np.ndarray]], **kw: float) -> np.ndarray:
    st, ev = SpoofState(1, **{"min_usd": 1_000.0, **kw}), EventBuffer()
    for stream, recs in steps:
        (st.trades if stream == "trades" else st.books)(recs, ev, 0)
    return ev.take().copy()


def test_a_pulled_wall_is_a_spoof() -> None:
    got = run(scenario())
    assert got["kind"].tolist() == [EventKind.SPOOF] and got[0]["side"] == 1
    assert got[0]["trigger_seq"] == 3  # the book record that showed the pull
    price, size, pulled, traded, life, usd, bps = got[0]["values"][:7].tolist()
    assert (price, size, pulled, traded, life) == (99.95, 30.0, 29.0, 0.0, 1.0)
    assert usd == pytest.approx(99.95 * 30) and bps == pytest.approx(5.0)


def test_not_spoofs() -> None:
    assert len(run(scenario(traded=20.0))) == 0           # mostly traded away
    assert len(run(scenario(pull_at=7.0))) == 0           # stood longer than max_life_s
    assert len(run(scenario(), min_usd=5_000.0)) == 0     # too small
    assert len(run(scenario(), near_bps=2.0)) == 0        # 5 bps from the touch: too far


def test_verdict_waits_for_the_trades_then_grace() -> None:
    steps = scenario()[:-1]  # no trade after the pull: the trades ring is quiet
    assert len(run(steps)) == 0
    later = [*steps, ("book", book(3.9, BASE, 4))]  # 1.9 s after the pull: still waiting
    assert len(run(later)) == 0
    assert len(run([*later, ("book", book(4.1, BASE, 5))])) == 1  # grace (2 s) passed
    # a sell of 20 at 99.95 just before the pull, arriving after the pull's book record
    late = [*scenario()[:3], ("trades", trade(1.9, 99.95, 20.0, -1)), *scenario()[3:]]
    assert len(run(late)) == 0


def test_bad_config() -> None:
    for kw in ({"pull_frac": 0.0}, {"max_life_s": 0.0}, {"slots": 0}):
        with pytest.raises(ValueError):
            SpoofState(1, **kw)  # type: ignore[arg-type]
