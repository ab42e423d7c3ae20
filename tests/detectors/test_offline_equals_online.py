"""Every kernel together, as the runner drives them: the events and analytics of a recording
fed one commit at a time equal those of the same records regrouped into random batches (each
group processed stream by stream, trades first, as a runner step does). Within one batch the
events come kernel by kernel, so the comparison orders them by kind and trigger first."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import shm
from engine.config import DetectorsConfig
from workers.detectors.events import EventBuffer
from workers.detectors.runner import STREAMS, ExchangeDetectors
from workers.exchanges.replay import replay

DATA = Path(__file__).resolve().parents[1] / "data" / "recorded"
USDM = DATA / "binance" / "hftbacktest_usdm_btcusdt_20240808.frames.jsonl.gz"
SETTINGS = DetectorsConfig(whale_min_usd=100_000.0, whale_burst_usd=500_000.0,
                           spoof_min_usd=50_000.0, iceberg_min_usd=50_000.0,
                           iceberg_traded_ratio=2.0)


def _run(chunks: list[tuple[str, np.ndarray]],
         groups: list[int]) -> tuple[np.ndarray, np.ndarray]:
    events, out = EventBuffer(1 << 16), []
    det = ExchangeDetectors("binance", ["BTCUSDT"], SETTINGS, events)
    i = 0
    for size in groups:
        group = chunks[i:i + size]
        i += size
        for stream in STREAMS:  # one runner step: every ring's new records, in STREAMS order
            parts = [c for s, c in group if s == stream]
            if parts:
                det.run(stream, np.concatenate(parts), 0)
        out.append(events.take().copy())
    analytics = np.zeros(1, shm.ANALYTICS)
    det.analytics(analytics, 0)
    events_all = np.concatenate(out)
    order = np.lexsort((events_all["trigger_seq"], events_all["kind"]))
    return events_all[order], analytics


def test_random_batches_give_the_same_events_and_analytics() -> None:
    _, sink = replay("binance", USDM)
    chunks, seq = [], dict.fromkeys(STREAMS, 0)
    for stream, chunk in sink.chunks:
        if stream in seq:
            c = chunk.copy()
            c["seq"] = np.arange(seq[stream], seq[stream] + len(c))
            seq[stream] += len(c)
            chunks.append((stream, c))
    one = _run(chunks, [1] * len(chunks))
    rng = np.random.default_rng(21)
    sizes: list[int] = []
    while sum(sizes) < len(chunks):
        sizes.append(int(rng.integers(1, 60)))
    many = _run(chunks, sizes)
    assert len(one[0]) > 50  # candles, whales, regimes... something to compare
    assert np.array_equal(one[0], many[0])
    for name in shm.ANALYTICS.names:
        a, b = one[1][name], many[1][name]
        assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), name
