"""Open-interest deltas: by hand (short history, exact window edges, late samples) and a
brute-force reference over a random 6-hour stream."""

from __future__ import annotations

import numpy as np
import pytest

import shm
from workers.detectors.open_interest import OpenInterestState

S = 1_000_000_000


def oi(*rows: tuple[float, float], sid: int = 0) -> np.ndarray:
    out = np.zeros(len(rows), shm.OPEN_INTEREST)
    for i, (sec, value) in enumerate(rows):
        out[i]["ts_exchange_ns"], out[i]["open_interest"], out[i]["symbol_id"] = (
            round(sec * S), value, sid)
    return out


def test_by_hand() -> None:
    st = OpenInterestState(1, windows_s=(60, 300))
    st.update(oi((0.0, 100.0), (30.0, 110.0)))
    # history shorter than both windows: deltas against the oldest sample, span 30 s
    assert st.deltas[0, :, 0].tolist() == [10.0, 10.0] and st.deltas[0, 0, 2] == 30.0
    st.update(oi((60.0, 120.0)))  # exactly 60 s after the first: the 1 m reference is 100
    assert st.deltas[0, 0].tolist() == [20.0, 20.0, 60.0]
    st.update(oi((90.0, 90.0)))  # the 1 m reference is the sample at 30 s
    assert st.deltas[0, 0].tolist() == [-20.0, pytest.approx(-100 * 20 / 110), 60.0]
    st.update(oi((80.0, 1.0)))  # older than the newest: ignored
    assert st.late[0] == 1 and st.latest[0] == 90.0
    st.update(oi((100.0, np.nan)))
    st.update(oi((100.0, 5.0), sid=3))  # unknown symbol id
    assert st.skipped[0] == 2 and st.latest[0] == 90.0
    with pytest.raises(ValueError, match="windows"):
        OpenInterestState(1, windows_s=(0,))


def test_random_stream_matches_brute_force() -> None:
    rng = np.random.default_rng(2)
    n = 3000
    secs = np.cumsum(rng.exponential(7.0, n))
    values = 1000 + rng.normal(0, 3, n).cumsum()
    recs = oi(*zip(secs.tolist(), values.tolist(), strict=True))
    windows = (300, 900, 3600)
    st = OpenInterestState(1, capacity=4096, windows_s=windows)
    checks = 0
    for i in range(0, n, 50):
        st.update(recs[i:i + 50])
        now = secs[min(n, i + 50) - 1]
        last = values[min(n, i + 50) - 1]
        seen = secs[:i + 50]
        for w, width in enumerate(windows):
            before = np.nonzero(seen <= now - width)[0]
            ref = before[-1] if len(before) else 0
            assert st.deltas[0, w, 0] == pytest.approx(last - values[ref], abs=1e-9)
            assert st.deltas[0, w, 2] == pytest.approx(now - secs[ref], abs=1e-6)
            checks += 1
    assert checks > 100 and secs[-1] > 3 * 3600
