"""Feed worker processes against the local venue: records reach a reader in another process,
every stream is populated, stats are in shared memory, and faults (gaps, corrupt frames, closed
connections, REST 429) are counted and survived; a broken book resyncs alone and comes back
LIVE in a later epoch, and no crossed book is ever published as LIVE."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from feed_live import drain, start_worker, stats, stop_worker, wait_for, write_config

import shm
from shm.layout import FLAG_NOT_LIVE, BookState, Side
from workers.venue import start_venue

SYMBOLS = [{"symbol": "BTCUSDT", "market": "linear"}, {"symbol": "ETHUSDT", "market": "linear"}]
OKX_SYMBOLS = [{"symbol": "BTC-USDT-SWAP", "market": "linear"},
               {"symbol": "ETH-USDT-SWAP", "market": "linear"}]


def _run(tmp_path: Path, instance: str, faults: str = "", seconds: float = 6.0,
         exchange: str = "binance", extra: str = ""
         ) -> tuple[dict[str, np.ndarray], dict[str, int], str]:
    with start_venue(exchange, [], synthetic={"symbols": 2, "rate": 2000, "seconds": 30,
                                              "seed": 3}, faults=faults) as venue:
        if exchange == "bybit":  # the synthetic venue publishes orderbook.50
            extra += "options = {depth_levels = 50}\n"
        cfg = write_config(tmp_path / "config.toml", instance, exchange, venue.ws_url,
                           venue.rest_url, OKX_SYMBOLS if exchange == "okx" else SYMBOLS,
                           extra)
        proc = start_worker(exchange, cfg, tmp_path / "worker.log")
        try:
            wait_for(lambda: stats(instance, exchange), 60, "the worker's stats table")
            readers = {s: shm.Reader.attach(exchange, s, instance, start="oldest")
                       for s in ("trades", "bbo", "book", "depth", "funding", "liquidations",
                                 "open_interest")}
            got: dict[str, list[np.ndarray]] = {s: [] for s in readers}
            for _ in range(int(seconds / 0.5)):
                for s, r in readers.items():
                    drain(r, got[s], 0.1)
            counters = stats(instance, exchange)
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
    # after the stop, no book is left LIVE in the latest table
    table = shm.LatestReader(shm.segment_name(instance, "binance", "book", suffix="latest"))
    try:
        for name in ("BTCUSDT", "ETHUSDT"):
            row = table.get(name)
            assert row is not None and row["state"] != BookState.LIVE, name
    finally:
        table.close()
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


@pytest.mark.parametrize("exchange", ["binance", "bybit", "okx"])
def test_gaps_resync_one_symbol_and_recover(tmp_path: Path, instance: str,
                                            exchange: str) -> None:
    """The venue drops book frames: each gap resyncs that symbol (REST snapshot for Binance,
    resubscription for Bybit/OKX) and it comes back LIVE in a later epoch."""
    recs, counters, _ = _run(tmp_path, instance, "drop=0.0005,seed=11", seconds=10,
                             exchange=exchange, extra="resync_retry_s = 3.0\n")
    assert counters["gaps"] + counters["checksum_failures"] >= 1, str(counters)
    assert counters["resyncs"] >= 1 and counters["decode_errors"] == 0
    assert counters["handler_errors"] == 0
    book = recs["book"]
    live = book[book["state"] == BookState.LIVE]
    assert np.all(live["bid_px"][:, 0] < live["ask_px"][:, 0])
    assert not np.any(live["flags"] & FLAG_NOT_LIVE)
    resyncing = book[book["state"] == BookState.RESYNCING]
    assert len(resyncing) >= 1 and np.all(resyncing["n_bids"] == 0)
    end = book["ts_mono_ns"].max()
    settled = resyncing[resyncing["ts_mono_ns"] < end - 2_000_000_000]
    assert len(settled) >= 1
    for row in settled:  # the symbol that broke is LIVE again later, one epoch on
        sid, epoch = row["symbol_id"], row["epoch"]
        later = live[(live["symbol_id"] == sid) & (live["epoch"] >= epoch)]
        assert len(later) > 0, (exchange, sid, epoch)
    if exchange == "okx":
        assert np.all(live["flags"] & shm.layout.FLAG_CHECKSUM_OK)


@pytest.mark.parametrize("exchange", ["bybit", "okx"])
def test_bybit_and_okx_workers_fill_their_streams(tmp_path: Path, instance: str,
                                                  exchange: str) -> None:
    recs, counters, _ = _run(tmp_path, instance, exchange=exchange)
    assert counters["books_live"] == 2 and counters["connections_up"] == 1, counters
    assert counters["decode_errors"] == 0 and counters["handler_errors"] == 0
    for stream in ("trades", "book", "depth", "funding", "open_interest"):
        assert len(recs[stream]) > 0, stream
    live = recs["book"][recs["book"]["state"] == BookState.LIVE]
    assert len(live) > 100 and np.all(live["bid_px"][:, 0] < live["ask_px"][:, 0])
    if exchange == "okx":  # sizes in base units: the synthetic ctVal is 0.01
        assert np.all(recs["trades"]["qty"] < 50)
    trades = recs["trades"]  # the trades of one message are committed together
    same_frame = trades["ts_mono_ns"][1:] == trades["ts_mono_ns"][:-1]
    assert np.any(same_frame) or exchange == "okx"  # the synthetic OKX sends one per message
    assert np.all(trades["ts_commit_ns"][1:][same_frame] == trades["ts_commit_ns"][:-1][same_frame])


def test_silent_channel_is_flagged(tmp_path: Path, instance: str) -> None:
    """Liquidations are rare: with a 1 s limit the watchdog flags the channel, once."""
    _, counters, log = _run(tmp_path, instance, seconds=4,
                            extra="channel_silence_s = {liquidations = 1.0}\n")
    assert counters["silent_channels"] >= 1 and "silent for" in log


def test_worker_heartbeats_and_stops_while_rest_has_no_contract_sizes(
        tmp_path: Path, instance: str) -> None:
    """A venue whose REST answers without instruments (the OKX recording's venue): the
    contract-size retries take ~7.5 s per instType, longer than the supervisor's heartbeat
    timeout; the worker must heartbeat meanwhile (it was killed as hung before) and obey a
    SIGTERM at once."""
    from engine.status import probe

    recording = (Path(__file__).resolve().parents[1] / "data" / "recorded" / "okx"
                 / "cryptofeed_books_3inst_20220513.frames.jsonl")
    with start_venue("okx", [str(recording)], loop=True) as venue:
        cfg = write_config(tmp_path / "config.toml", instance, "okx", venue.ws_url,
                           venue.rest_url, [{"symbol": "BTC-USD-220527", "market": "inverse"}])
        proc = start_worker("okx", cfg, tmp_path / "worker.log")
        try:
            wait_for(lambda: probe(instance, "feed:okx").pid, 60, "the worker's heartbeat")
            ages = []
            for _ in range(8):   # 4 s: still retrying the first instType's sizes
                time.sleep(0.5)
                ages.append(probe(instance, "feed:okx").heartbeat_age_s)
            log = (tmp_path / "worker.log").read_text()
            assert "contract sizes" not in log, log   # still loading: the case under test
            assert 0 <= max(ages) < 1.0, ages
            start = time.monotonic()
            code = stop_worker(proc)
            assert code == 0 and time.monotonic() - start < 3.0
        finally:
            stop_worker(proc)
