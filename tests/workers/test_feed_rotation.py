"""Make-before-break connection rotation, live: a Binance worker whose connections reach their
maximum age every few seconds, against a venue with a shared clock (a new connection joins the
market where it is now, as on the exchange). Books must stay LIVE through every rotation, trades
must arrive exactly once, and the overlap must really have delivered repeats that were dropped.

The two connections of an overlap have no order between them: the successor's first frame can
overtake the old connection's last one (seen live in 1-3 % of joins). The test at the end
reproduces that race deterministically: nothing may be lost, doubled or taken for a gap.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from feed_live import drain, start_worker, stats, stop_worker, wait_for, write_config

import shm
from engine.config import load_config
from shm.layout import BookState, Exchange
from workers.exchanges.binance import BinanceFeed
from workers.exchanges.feed import Count, SymbolSpec
from workers.exchanges.records import Emitter
from workers.exchanges.replay import ReplaySink
from workers.venue import SyntheticConfig, generate, start_venue

SYMBOLS = [{"symbol": "BTCUSDT", "market": "linear"}, {"symbol": "ETHUSDT", "market": "linear"}]
MAX_AGE_S = 3.0
RUN_S = 12.0


def test_rotation_keeps_books_live_and_trades_exactly_once(tmp_path: Path, instance: str
                                                          ) -> None:
    synthetic = {"symbols": 2, "rate": 1000, "seconds": 60, "seed": 3}
    with start_venue("binance", [], synthetic=synthetic, shared_clock=True) as venue:
        cfg = write_config(tmp_path / "config.toml", instance, "binance", venue.ws_url,
                           venue.rest_url, SYMBOLS,
                           extra=f"options = {{max_connection_age_s = {MAX_AGE_S}}}\n")
        # the option lands in [exchanges.binance], not in the connection section after it
        assert load_config(cfg).exchanges.binance.options == {"max_connection_age_s": MAX_AGE_S}
        proc = start_worker("binance", cfg, tmp_path / "worker.log")
        try:
            wait_for(lambda: stats(instance, "binance"), 60, "the worker's stats table")
            readers = {s: shm.Reader.attach("binance", s, instance, start="oldest")
                       for s in ("trades", "book")}
            got: dict[str, list[np.ndarray]] = {s: [] for s in readers}
            for _ in range(int(RUN_S / 0.2)):
                for s, r in readers.items():
                    drain(r, got[s], 0.1)
            counters = stats(instance, "binance")
            assert proc.poll() is None, "the worker died"
        finally:
            code = stop_worker(proc)
        log = (tmp_path / "worker.log").read_text()
        assert code == 0, log
    assert counters is not None

    # several rotations of each connection (/public and /market), none of them a reconnect
    rotations = [line for line in log.splitlines() if "rotating" in line]
    assert sum("/public" in line for line in rotations) >= 2, log
    assert sum("/market" in line for line in rotations) >= 2, log
    assert counters["reconnects"] == 0 and counters["connections_up"] == 2, counters

    # books never left LIVE: no resync, no gap, every book record LIVE in the first epoch
    assert counters["resyncs"] == 0 and counters["gaps"] == 0, counters
    assert counters["books_live"] == 2 and counters["snapshots"] == 2, counters
    book = np.concatenate(got["book"])
    assert len(book) > 1000 and set(np.unique(book["symbol_id"])) == {0, 1}
    assert np.all(book["state"] == BookState.LIVE) and np.all(book["epoch"] == 0)

    # trades exactly once: ids consecutive per symbol across every overlap
    trades = np.concatenate(got["trades"])
    for sid in (0, 1):
        ids = trades["trade_id"][trades["symbol_id"] == sid]
        assert len(ids) > 500 and ids[0] == 1  # the worker started the venue's clock
        assert np.all(np.diff(ids) == 1), np.unique(np.diff(ids), return_counts=True)

    # the overlaps did deliver repeats, and they were dropped
    assert counters["duplicates"] > 0 and counters["stale_events"] > 0, counters
    assert counters["decode_errors"] == 0 and counters["handler_errors"] == 0, counters


# -- the race behind an occasional failure of the test above, made deterministic ------------
def _feed() -> tuple[BinanceFeed, ReplaySink, list[bytes]]:
    frames, state = generate(SyntheticConfig(exchange="binance", symbols=1, rate_hz=1000,
                                             seconds=3, seed=3))
    sink = ReplaySink(20)
    feed = BinanceFeed([SymbolSpec("BTCUSDT", "linear", symbol_id=0)],
                       Emitter(int(Exchange.BINANCE), sink.outputs))
    depth: dict[str, bytes] = state["depth"]  # type: ignore[assignment]
    feed.on_snapshot(0, depth["fapi:BTCUSDT"], 0, 0)
    return feed, sink, [f for _, t, f in frames if t in ("btcusdt@depth@100ms", "btcusdt@trade")]


@pytest.mark.parametrize("stream", [b"@depth", b"@trade"])
def test_successor_ahead_of_the_old_connection_loses_nothing(stream: bytes) -> None:
    """Two connections carry no order between them: the successor joined the market just after
    the old connection's next frame was due, and its first frame reaches the worker before that
    one (seen live: 1 to 3 % of joins on loopback, from the venue's scheduling and the worker's
    order of reading two sockets). Everything must still be applied or recorded exactly once."""
    feed, sink, public = _feed()
    at = next(i for i in range(1000, len(public) - 1)
              if stream in public[i][:40] and stream in public[i + 1][:40])
    for frame in public[:at]:
        feed.on_frame("public", frame, 0, 0)
    feed.begin_overlap()  # the rotation: both connections feed
    old, new = public[at:], public[at + 1:]  # the successor joined after frame `at` was due
    feed.on_frame("public", new[0], 0, 0)  # ... and its first frame arrives first
    for a, b in zip(old, new[1:], strict=False):
        feed.on_frame("public", a, 0, 0)
        feed.on_frame("public", b, 0, 0)
    ids = [int(r["trade_id"][0]) for s, r in sink.chunks if s == "trades"]
    assert ids == list(range(ids[0], ids[0] + len(ids))), "a trade lost or doubled"
    assert feed.counts[Count.GAPS] == 0 and feed.counts[Count.RESYNCS] == 0
