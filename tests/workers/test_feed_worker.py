"""A Binance feed worker process against the local venue: records reach a reader in another
process, every stream is populated, stats are in shared memory, and faults (corrupt frames,
closed connections, REST 429) are counted and survived."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from feed_live import drain, start_worker, stats, stop_worker, wait_for, write_config

import shm
from shm.layout import FLAG_NOT_LIVE, BookState, Side
from workers.venue import start_venue

SYMBOLS = [{"symbol": "BTCUSDT", "market": "linear"}, {"symbol": "ETHUSDT", "market": "linear"}]


def _run(tmp_path: Path, instance: str, faults: str = "", seconds: float = 6.0
         ) -> tuple[dict[str, np.ndarray], dict[str, int], str]:
    with start_venue("binance", [], synthetic={"symbols": 2, "rate": 2000, "seconds": 30,
                                               "seed": 3}, faults=faults) as venue:
        cfg = write_config(tmp_path / "config.toml", instance, "binance", venue.ws_url,
                           venue.rest_url, SYMBOLS)
        proc = start_worker("binance", cfg, tmp_path / "worker.log")
        try:
            wait_for(lambda: stats(instance, "binance"), 60, "the worker's stats table")
            readers = {s: shm.Reader.attach("binance", s, instance, start="oldest")
                       for s in ("trades", "bbo", "book", "depth", "funding", "liquidations",
                                 "open_interest")}
            got: dict[str, list[np.ndarray]] = {s: [] for s in readers}
            for _ in range(int(seconds / 0.5)):
                for s, r in readers.items():
                    drain(r, got[s], 0.1)
            counters = stats(instance, "binance")
            assert proc.poll() is None, "the worker died"
        finally:
            code = stop_worker(proc)
        log = (tmp_path / "worker.log").read_text()
        assert code == 0, log
    assert counters is not None
    return ({s: np.concatenate(b) if b else np.zeros(0, readers[s].dtype)
             for s, b in got.items()}, counters, log)


def test_worker_fills_every_stream_and_reports_stats(tmp_path: Path, instance: str) -> None:
    recs, counters, _ = _run(tmp_path, instance)
    assert counters["connections"] == 2 and counters["connections_up"] == 2  # /public, /market
    assert counters["books_live"] == 2 and counters["decode_errors"] == 0
    assert counters["snapshots"] == 2 and counters["rest_requests"] >= 2
    trades = recs["trades"]
    assert len(trades) > 100 and set(np.unique(trades["symbol_id"])) == {0, 1}
    assert set(np.unique(trades["side"])) == {Side.BUY, Side.SELL}
    for sid in (0, 1):  # trade ids consecutive per symbol: nothing lost, nothing doubled
        ids = trades["trade_id"][trades["symbol_id"] == sid]
        assert np.all(np.diff(ids) == 1)
    assert np.all(trades["ts_commit_ns"] >= trades["ts_mono_ns"])  # stamps are one clock
    book = recs["book"]
    live = book[book["state"] == BookState.LIVE]
    assert len(live) > 100 and not np.any(live["flags"] & FLAG_NOT_LIVE)
    assert np.all(live["bid_px"][:, 0] < live["ask_px"][:, 0])  # never crossed when LIVE
    assert np.all(live["n_bids"] >= 5) and np.all(live["n_asks"] >= 5)
    for row in live[::97]:  # best first on both sides
        assert np.all(np.diff(row["bid_px"][:row["n_bids"]]) < 0)
        assert np.all(np.diff(row["ask_px"][:row["n_asks"]]) > 0)
    assert len(recs["bbo"]) > 100 and len(recs["depth"]) > len(live)
    assert len(recs["funding"]) >= 2 and np.all(recs["funding"]["mark_px"] > 0)
    assert len(recs["open_interest"]) >= 2
    assert np.all(recs["open_interest"]["open_interest"] > 0)
    liq = recs["liquidations"]
    assert len(liq) == 0 or set(np.unique(liq["side"])) <= {Side.BUY, Side.SELL}


@pytest.mark.parametrize("faults,counter", [
    ("corrupt=0.002,seed=5", "decode_errors"),
    ("truncate=0.002,seed=6", "decode_errors"),
    ("error=0.002,seed=7", "exchange_errors"),
    ("close@400", "reconnects"),
    ("abort@400", "reconnects"),
])
def test_faults_are_counted_and_survived(tmp_path: Path, instance: str, faults: str,
                                         counter: str) -> None:
    recs, counters, log = _run(tmp_path, instance, faults)
    assert counters[counter] >= 1, counters
    assert len(recs["trades"]) > 100  # still flowing afterwards
    live = recs["book"][recs["book"]["state"] == BookState.LIVE]
    assert np.all(live["bid_px"][:, 0] < live["ask_px"][:, 0])
    if counter == "reconnects":
        # the venue closes every connection at its 400th frame: each reconnect resyncs the
        # books, and they come back LIVE in a later epoch
        assert counters["resyncs"] >= 1 and np.any(live["epoch"] >= 1)
        assert "disconnected" in log
    else:
        assert "WARNING" in log  # a rate-limited sample of the bad frame


def test_rest_429_is_honoured_and_retried(tmp_path: Path, instance: str) -> None:
    _, counters, log = _run(tmp_path, instance, "rest_429=0.5,seed=2", seconds=14)
    assert counters["rest_rejected"] >= 1 and counters["books_live"] == 2, counters
    assert "429" in log
