"""The venue's synthetic manipulations reach the detectors through the real feed: a spoof
placed and pulled and an iceberg refilled are detected at the scripted times, the random
liquidation bursts make cascades, and the same market without scenarios raises none of them."""

from __future__ import annotations

import numpy as np

from engine.config import DetectorsConfig
from workers.detectors.events import EventBuffer, EventKind
from workers.detectors.runner import STREAMS, ExchangeDetectors
from workers.exchanges.records import Emitter
from workers.exchanges.replay import ReplaySink, make_feed
from workers.venue import SyntheticConfig, generate

SETTINGS = DetectorsConfig(whale_min_usd=0.0, whale_burst_usd=0.0, spoof_min_usd=200_000.0,
                           iceberg_min_usd=500.0, liquidation_min_usd=0.0, cascade_usd=500.0,
                           cascade_min_slots=2, cascade_window_s=5.0)



def detect(scenarios: tuple[str, ...]) -> tuple[np.ndarray, int]:
    frames, _ = generate(SyntheticConfig("bybit", symbols=2, rate_hz=1000, seconds=75, seed=4,
                                         scenarios=scenarios))
    raw = [f for _, _, f in frames]
    sink = ReplaySink()
    feed = make_feed("bybit", raw, Emitter(2, sink.outputs))
    for recv, _, frame in frames:
        feed.on_frame("*", frame, recv, 0)
    det = ExchangeDetectors("bybit", [feed.symbols[s].symbol for s in sorted(feed.symbols)],
                            SETTINGS, EventBuffer(1 << 16))
    events, got = det.events, []
    for stream, chunk in sink.chunks:
        if stream in STREAMS:
            det.run(stream, chunk, 0)
            got.append(events.take().copy())
    return np.concatenate(got), len(feed.symbols)


def test_scripted_spoof_and_iceberg_are_detected_and_quiet_markets_stay_quiet() -> None:
    events, symbols = detect(("spoof", "iceberg"))
    assert symbols == 2
    spoofs = events[events["kind"] == EventKind.SPOOF]
    icebergs = events[events["kind"] == EventKind.ICEBERG]
    # scripted: spoof at 10 s (symbol 0) and 70 s (symbol 0), iceberg at 40 s (symbol 1)
    assert sorted({int(s) for s in spoofs["symbol_id"]}) == [0]
    assert len(spoofs) == 2 and np.all(spoofs["values"][:, 1] == 5.0)  # 5 000 lots = 5.0
    assert np.all(spoofs["values"][:, 3] == 0.0)  # nothing traded against it
    assert len(icebergs) == 1 and icebergs[0]["symbol_id"] == 1
    assert icebergs[0]["values"][3] >= 6  # refills
    quiet, _ = detect(())
    kinds = set(quiet["kind"].tolist())
    assert EventKind.SPOOF not in kinds and EventKind.ICEBERG not in kinds
    assert EventKind.LIQUIDATION_CASCADE in kinds  # the random liquidation bursts
