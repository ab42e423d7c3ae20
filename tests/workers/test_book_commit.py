"""The fused book kernel and the trade commit kernel: what they commit into real rings and
latest tables equals what replay's collectors get, on every recording; the book kernel's apply
equals ``Book.apply``; a full side or a crossed book publishes nothing; a closed ring is
refused, not written."""

from __future__ import annotations

import struct
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import shm
from shm.layout import H
from shm.segment import Segment
from workers.exchanges.book import Book
from workers.exchanges.book_commit import APPLIED, CROSSED, OVERFLOW
from workers.exchanges.records import Collector, Emitter
from workers.exchanges.replay import replay

DATA = Path(__file__).resolve().parents[1] / "data" / "recorded"
CASES = [
    ("binance", DATA / "binance" / "hftbacktest_spot_btcusdt_20240808.frames.jsonl.gz",
     [DATA / "binance" / "hftbacktest_spot_btcusdt_20240808.rest_depth_snapshot.json"]),
    ("bybit", DATA / "bybit" / "cryptofeed_linear_v5_20260809.frames.jsonl", []),
    ("okx", DATA / "okx" / "cryptofeed_books_3inst_20220513.frames.jsonl", []),
]
EXCHANGE_IDS = {"binance": 1, "bybit": 2, "okx": 3}
VOLATILE = ("seq", "ts_commit_ns")  # set by the commit: differ between the two runs


def _strip(records: np.ndarray) -> np.ndarray:
    names = [n for n in records.dtype.names if n not in VOLATILE]
    return records[names]


@pytest.mark.parametrize(("exchange", "frames", "snapshots"), CASES, ids=[c[0] for c in CASES])
def test_ring_commits_equal_replay_records(exchange: str, frames: Path,
                                           snapshots: list[Path], instance: str) -> None:
    _, sink = replay(exchange, frames, snapshots)
    streams = ("depth", "book", "trades")
    want = {s: np.concatenate([c for name, c in sink.chunks if name == s]) for s in streams}
    names = {s: shm.segment_name(instance, exchange, s) for s in streams}
    depth = shm.Writer(names["depth"], shm.DEPTH, 1 << 16)
    book = shm.Writer(names["book"], shm.BOOK, 1 << 13)
    trades = shm.Writer(names["trades"], shm.TRADE, 1 << 14)
    latest = shm.LatestWriter(names["book"] + ".latest", shm.BOOK, 16)
    readers = {s: shm.Reader(names[s], start="oldest") for s in names}
    got: dict[str, list[np.ndarray]] = {s: [] for s in streams}

    def drain(i: int) -> None:
        if i % 200 == 0:
            for s, r in readers.items():
                while len(batch := r.poll()):
                    got[s].append(batch)

    try:
        em = Emitter(EXCHANGE_IDS[exchange], {"depth": depth, "book": book, "trades": trades},
                     {"book": latest})
        feed, _ = replay(exchange, frames, snapshots, emitter=em, on_frame=drain)
        drain(0)
        assert all(r.stats.lost == 0 and r.stats.lapped == 0 for r in readers.values())
        rows = {sid: latest_row(latest, sid) for sid in feed.books}
    finally:
        for r in readers.values():
            r.close()
        for w in (depth, book, trades, latest):
            w.close(unlink=True)
    for s in streams:
        ring = np.concatenate(got[s])
        assert len(ring) == len(want[s]) > 20, s
        assert np.array_equal(_strip(ring), _strip(want[s])), s
        assert np.all(ring["ts_commit_ns"] > 0)
    books = np.concatenate(got["book"])
    for sid, row in rows.items():  # the latest table holds each symbol's last book record
        last = books[books["symbol_id"] == sid][-1:]
        for name in shm.BOOK.names:  # every field, seq and ts_commit_ns included
            assert np.array_equal(row[name], last[name], equal_nan=row[name].dtype.kind == "f")


def latest_row(table: shm.LatestWriter, sid: int) -> np.ndarray:
    """The record in row ``sid`` of a latest table, as a 1-record array (raw bytes)."""
    raw = np.ctypeslib.as_array((np.ctypeslib.ctypes.c_uint8 * table.dtype.itemsize)
                                .from_address(table.row_address(sid) + 64))
    return raw.copy().view(table.dtype)


def _emitter() -> tuple[Emitter, Collector, Collector]:
    depth, book = Collector(shm.DEPTH), Collector(shm.BOOK)
    return Emitter(1, {"depth": depth, "book": book}), depth, book


def test_apply_equals_book_apply() -> None:
    rng = np.random.default_rng(5)
    em, depth, _ = _emitter()
    a, b = Book(256), Book(256)
    for i in range(300):
        nb_, na = rng.integers(0, 6, 2)
        bids = np.column_stack([rng.integers(90, 100, nb_) * 1.0, rng.integers(0, 3, nb_) * 1.0])
        asks = np.column_stack([rng.integers(101, 111, na) * 1.0, rng.integers(0, 3, na) * 1.0])
        a.apply(bids[:, 0].copy(), bids[:, 1].copy(), asks[:, 0].copy(), asks[:, 1].copy())
        assert em.books.apply(b, [tuple(x) for x in bids], [tuple(x) for x in asks], 0, 1, i,
                              0, 0, i, i - 1) == APPLIED
        assert [x.tolist() for x in a.levels(300)] == [x.tolist() for x in b.levels(300)]
    recs = depth.array()
    assert len(recs) > 500 and set(recs["side"].tolist()) == {1, -1}
    assert np.all(recs["state"] == shm.BookState.LIVE)


def test_overflow_and_crossed_publish_nothing() -> None:
    em, depth, book_out = _emitter()
    book = Book(2)
    assert em.books.apply(book, [(1.0, 1.0), (2.0, 1.0)], [(5.0, 1.0)], 0, 1, 0, 0, 0, 1,
                          0) == APPLIED
    before = (len(depth.array()), len(book_out.array()))
    assert em.books.apply(book, [(3.0, 1.0)], [], 0, 1, 0, 0, 0, 2, 1) == OVERFLOW
    assert em.books.apply(Book(8), [(6.0, 1.0)], [(5.0, 1.0)], 0, 1, 0, 0, 0, 2, 1) == CROSSED
    assert (len(depth.array()), len(book_out.array())) == before


def test_a_closed_ring_is_refused(instance: str) -> None:
    name = shm.segment_name(instance, "bybit", "book")
    writer = shm.Writer(name, shm.BOOK, 64)
    em = Emitter(2, {"book": writer})
    writer.close(unlink=True)
    with pytest.raises(ValueError, match="closed"):
        em.books.apply(Book(8), [(1.0, 1.0)], [(2.0, 1.0)], 0, 1, 0, 0, 0, 1, 0)


def test_kernel_commit_wakes_a_parked_reader(instance: str) -> None:
    name = shm.segment_name(instance, "okx", "book")
    with shm.Writer(name, shm.BOOK, 64) as writer, shm.Reader(name) as reader:
        em = Emitter(3, {"book": writer})
        got: list[np.ndarray] = []
        t = threading.Thread(target=lambda: got.append(reader.poll(timeout_s=10.0)))
        t.start()
        deadline = time.monotonic() + 5
        while reader.stats.parks == 0 and time.monotonic() < deadline:
            time.sleep(0.005)  # until the reader sleeps on the doorbell
        assert reader.stats.parks > 0
        time.sleep(0.05)
        t0 = time.monotonic()
        em.books.apply(Book(8), [(1.0, 1.0)], [(2.0, 3.0)], 4, 1, 0, 0, 0, 9, 8)
        t.join(10.0)
        assert not t.is_alive() and len(got[0]) == 1
        assert time.monotonic() - t0 < 2.0  # woken by the kernel's commit, not the timeout
        seg = Segment.open(name)
        assert seg.get(H.WAKES) == 1  # counted in the header by the commit kernel itself
        seg.close()
        rec = got[0][0]
        assert (rec["symbol_id"], rec["update_id"], rec["bid_px"][0], rec["ask_qty"][0]) == \
            (4, 9, 1.0, 3.0)


def test_trade_kernel_and_a_closed_emitter(instance: str) -> None:
    name = shm.segment_name(instance, "binance", "trades")
    collector = Collector(shm.TRADE)
    with shm.Writer(name, shm.TRADE, 64) as writer, shm.Reader(name, start="oldest") as reader:
        fast, slow = Emitter(1, {"trades": writer}), Emitter(1, {"trades": collector})
        for em in (fast, slow):
            em.trade(3, 2, 10, 11, 12, 100.5, 0.25, 42, -1, 4)
            em.trade(3, 2, 13, 14, 15, 101.0, 1.5, (1 << 63) - 1, 1, 0)
        # beyond int64: refused before anything is written (on_frame counts both as bad input)
        with pytest.raises(OverflowError):
            fast.trade(3, 2, 10, 11, 12, 1.0, 1.0, 1 << 63, 1, 0)
        with pytest.raises(struct.error):
            slow.trade(3, 2, 10, 11, 12, 1.0, 1.0, 1 << 63, 1, 0)
        got = reader.poll(timeout_s=1.0)
        fast.close()
        with pytest.raises(ValueError, match="closed"):
            fast.trade(3, 2, 10, 11, 12, 100.5, 0.25, 43, -1, 0)
    assert got["seq"].tolist() == [0, 1] and np.all(got["ts_commit_ns"] > 0)
    assert np.array_equal(_strip(got), _strip(collector.array()))
    assert got["trade_id"].tolist() == [42, (1 << 63) - 1] and got["flags"].tolist() == [4, 0]
