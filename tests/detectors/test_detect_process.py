"""``microstream detect`` end to end: a venue, a Binance feed worker and the detector process,
each its own process; the detector's events ring fills with events whose triggers are real
records of the feed's rings, and SIGTERM stops it with exit code 0."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import shm
from workers.detectors.events import EventKind
from workers.venue import start_venue

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workers"))
from feed_live import start_worker, stop_worker, wait_for, write_config


def _attach(name: str) -> shm.Reader | None:
    try:
        return shm.Reader(name, start="oldest")
    except shm.SegmentNotFound:  # not created yet, or being created
        return None


def test_detector_process_over_a_live_feed(tmp_path: Path, instance: str) -> None:
    symbols = [{"symbol": s, "market": "linear", "streams": ["trades", "book", "depth"]}
               for s in ("BTCUSDT", "ETHUSDT")]
    with start_venue("binance", [], synthetic={"symbols": 2, "rate": 500, "seconds": 30,
                                               "seed": 3}, loop=True) as venue:
        cfg = write_config(tmp_path / "config.toml", instance, "binance", venue.ws_url,
                           venue.rest_url, symbols)
        with open(cfg, "a") as f:  # every trade is a "whale": events flow for sure
            f.write("\n[detectors]\nenabled = true\nwhale_min_usd = 1.0\nwhale_burst_usd = 0.0\n")
        worker = start_worker("binance", cfg, tmp_path / "worker.log")
        detect = subprocess.Popen([sys.executable, "-m", "engine", "detect", "-c", str(cfg)],
                                  stdout=subprocess.DEVNULL,
                                  stderr=open(tmp_path / "detect.log", "wb"))
        try:
            name = shm.segment_name(instance, "detectors", "events")
            events = wait_for(lambda: _attach(name), 60, "the events ring")
            got: list[np.ndarray] = []
            deadline = time.monotonic() + 60
            while sum(len(g) for g in got) < 50 and time.monotonic() < deadline:
                got.append(events.poll(timeout_s=0.5))
            events.close()
            recs = np.concatenate(got)
            assert len(recs) >= 50, (tmp_path / "detect.log").read_text()[-2000:]
            whales = recs[recs["kind"] == EventKind.WHALE_TRADE]
            assert len(whales) > 0 and set(whales["symbol_id"].tolist()) <= {0, 1}
            assert np.all(whales["exchange"] == shm.Exchange.BINANCE)
            # each trigger is a record of the feed's trades ring: its commit stamp precedes
            # the event's, and the detection happened in between
            assert np.all(whales["trigger_commit_ns"] > 0)
            assert np.all(whales["ts_detect_ns"] >= whales["trigger_commit_ns"])
            assert np.all(whales["ts_commit_ns"] >= whales["ts_detect_ns"])
            assert np.all(whales["values"][:, 2] == whales["values"][:, 0] * whales["values"][:, 1])
        finally:
            detect.terminate()
            code = detect.wait(timeout=20)
            stop_worker(worker)
        assert code == 0, (tmp_path / "detect.log").read_text()[-2000:]
        assert "detectors: instance" in (tmp_path / "detect.log").read_text()
