"""Bound kernels (``workers.detectors.compiled``): the entry-point call gives exactly what the
dispatcher call gives, batches are conformed (strided views copied, wrong dtypes refused)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import shm
from engine.config import DetectorsConfig
from workers.detectors.compiled import bind, conform
from workers.detectors.events import EventBuffer
from workers.detectors.runner import ExchangeDetectors
from workers.detectors.whale import WhaleState, whale_update
from workers.exchanges.replay import replay

DATA = Path(__file__).resolve().parents[1] / "data" / "recorded"
USDM = DATA / "binance" / "hftbacktest_usdm_btcusdt_20240808.frames.jsonl.gz"
BYBIT = DATA / "bybit" / "cryptofeed_linear_v5_20260809.frames.jsonl"   # books and trades
SETTINGS = DetectorsConfig(whale_min_usd=1_000.0, whale_burst_usd=5_000.0,
                           spoof_min_usd=1_000.0, iceberg_min_usd=1_000.0)
STREAMS = ("book", "trades", "funding", "open_interest")


def _records(exchange: str, path: Path) -> dict[str, np.ndarray]:
    _, sink = replay(exchange, path)
    return {s: np.concatenate([c for name, c in sink.chunks if name == s])
            for s in STREAMS if any(name == s for name, _ in sink.chunks)}


@pytest.fixture(scope="module")
def recorded() -> dict[str, np.ndarray]:
    return _records("binance", USDM)


def test_bound_whale_step_equals_the_dispatcher_call(recorded: dict[str, np.ndarray]) -> None:
    trades = recorded["trades"]
    states, buffers = [WhaleState(1, 1.0), WhaleState(1, 1.0)], [EventBuffer(1 << 14),
                                                                 EventBuffer(1 << 14)]
    for s in states:
        s.set_threshold(0, 50_000.0, 200_000.0)
    step = bind(whale_update, shm.TRADE, states[0].kernel_args(buffers[0]), takes_time=True)
    for i in range(0, len(trades), 97):
        step(trades[i:i + 97], 5)
        states[1].update(trades[i:i + 97], buffers[1], 5)
    got, want = buffers[0].take(), buffers[1].take()
    assert len(want) > 0  # the recording has whales at this threshold
    _assert_same_records(got, want)
    assert np.array_equal(states[0].run_f, states[1].run_f)
    assert np.array_equal(states[0].run_i, states[1].run_i)


def test_every_kernel_sees_a_strided_batch_as_its_contiguous_copy() -> None:
    recorded, runs = _records("bybit", BYBIT), []
    assert {"book", "trades"} <= set(recorded)
    for copy in (False, True):
        det = ExchangeDetectors("bybit", ["A", "B", "C", "D"], SETTINGS, EventBuffer(1 << 16))
        out = []
        for stream in recorded:
            every_other = recorded[stream][::2]
            assert not every_other.flags.c_contiguous
            det.run(stream, every_other.copy() if copy else every_other, 0)
            out.append(det.events.take().copy())
        analytics = np.zeros(4, shm.ANALYTICS)
        det.analytics(analytics, 0)
        runs.append((np.concatenate(out), analytics))
    assert len(runs[0][0]) > 0
    for a, b in zip(runs[0], runs[1], strict=True):
        _assert_same_records(a, b)


def _assert_same_records(a: np.ndarray, b: np.ndarray) -> None:
    """Field by field (padding bytes are not part of a record); NaN equals NaN."""
    assert len(a) == len(b)
    for name in a.dtype.names:
        assert np.array_equal(a[name], b[name], equal_nan=a[name].dtype.kind == "f"), name


def test_a_batch_of_another_dtype_is_refused_by_name() -> None:
    det = ExchangeDetectors("binance", ["BTCUSDT"], SETTINGS)
    with pytest.raises(TypeError, match="'trades' records"):
        det.run("trades", np.zeros(1, shm.BOOK), 0)
    with pytest.raises(TypeError, match="1-d"):
        conform(np.zeros((2, 2), shm.TRADE), shm.TRADE, "trades")
    empty = np.zeros(0, shm.TRADE)
    assert conform(empty, shm.TRADE, "trades") is empty
