"""Rolling 24 h statistics: boundaries by hand, late trades, and a brute-force reference over
a random 30-hour stream of two symbols at random batch boundaries."""

from __future__ import annotations

import numpy as np
import pytest

import shm
from workers.detectors.stats24h import Stats24hState

S = 1_000_000_000
MIN = 60 * S


def trades(*rows: tuple[int, float, float], sid: int = 0) -> np.ndarray:
    """``(ns, price, qty)`` buy trades."""
    out = np.zeros(len(rows), shm.TRADE)
    for i, (ns, px, qty) in enumerate(rows):
        out[i]["ts_exchange_ns"], out[i]["price"], out[i]["qty"] = ns, px, qty
        out[i]["side"], out[i]["symbol_id"] = 1, sid
    return out


def test_window_boundaries_and_late_trades() -> None:
    st = Stats24hState(1)
    st.update(trades((0, 100.0, 1.0), (30 * S, 120.0, 1.0), (1439 * MIN, 90.0, 2.0)))
    vol, quote, high, low, last, open_, change, pct = st.stats[0].tolist()
    assert (vol, quote, high, low, last, open_) == (4.0, 400.0, 120.0, 90.0, 90.0, 100.0)
    assert change == -10.0 and pct == pytest.approx(-10.0)
    st.update(trades((1440 * MIN, 95.0, 1.0)))  # minute 0 leaves the window
    assert st.stats[0, :6].tolist() == [3.0, 275.0, 95.0, 90.0, 95.0, 90.0]
    st.update(trades((10 * S, 500.0, 1.0)))  # minute 0: older than the window, ignored
    assert st.late[0] == 1 and st.stats[0, 2] == 95.0
    st.update(trades((1439 * MIN + 1, 1.0, 1.0)))  # late but covered; not the last trade
    assert st.stats[0, 3] == 1.0 and st.stats[0, 4] == 95.0
    bad = trades((0, np.nan, 1.0), (0, 1.0, 1.0), sid=0)
    bad[1]["side"] = 0
    st.update(bad)
    assert st.skipped[0] == 2
    with pytest.raises(ValueError, match="symbols"):
        Stats24hState(0)


def reference(recs: np.ndarray, sid: int) -> list[float]:
    mine = [(int(r["ts_exchange_ns"]), i, float(r["price"]), float(r["qty"]))
            for i, r in enumerate(recs) if r["symbol_id"] == sid]
    head = max(ts // MIN for ts, _, _, _ in mine)
    inside = [x for x in mine if x[0] // MIN > head - 1440]
    oldest = min(x[0] // MIN for x in inside)
    first = min((x for x in inside if x[0] // MIN == oldest), key=lambda x: (x[0], x[1]))
    last = max(mine, key=lambda x: (x[0], x[1]))
    vol = sum(x[3] for x in inside)
    return [vol, sum(x[2] * x[3] for x in inside), max(x[2] for x in inside),
            min(x[2] for x in inside), last[2], first[2]]


def test_random_stream_matches_brute_force() -> None:
    rng = np.random.default_rng(9)
    n = 4000
    ns = np.cumsum(rng.exponential(27 * S, n)).astype(np.int64)  # ~30 hours
    ns += rng.integers(-90 * S, 1, n)  # some arrive late
    recs = trades(*[(int(t), float(p), float(q)) for t, p, q in
                    zip(ns, 100 + rng.normal(0, 5, n).cumsum() / 10, rng.exponential(1, n),
                        strict=True)])
    recs["symbol_id"] = rng.integers(0, 2, n)
    st, i, checks = Stats24hState(2), 0, 0
    while i < n:
        j = min(n, i + int(rng.integers(1, 200)))
        st.update(recs[i:j])
        i = j
        if rng.random() < 0.4:
            for sid in (0, 1):
                if (recs[:i]["symbol_id"] == sid).any():
                    np.testing.assert_allclose(st.stats[sid, :6], reference(recs[:i], sid),
                                               rtol=1e-9)
                    checks += 1
    assert checks > 10 and ns[-1] - ns[0] > 26 * 3600 * S
