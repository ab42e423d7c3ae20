"""Binance books rebuilt from the real recordings: equal to an independent reference after every
event, bridged and chained by the documented rules, and equal to bookTicker where the data
README says they must be."""

from __future__ import annotations

import bisect
from pathlib import Path

import numpy as np
import pytest

from workers.exchanges.binance_sync import BinanceDepthSync, Verdict
from workers.exchanges.binance_wire import (
    decode_book_ticker,
    decode_depth,
    decode_envelope,
    decode_snapshot,
    levels,
)
from workers.exchanges.book import Book, apply_levels
from workers.venue import load_recording

DATA = Path(__file__).resolve().parents[1] / "data" / "recorded" / "binance"


class ReferenceBook:
    """A dict book following Binance's rules, independent of the numpy kernels."""

    def __init__(self, bids: list[tuple[float, float]], asks: list[tuple[float, float]]):
        self.bids = {p: q for p, q in bids if q}
        self.asks = {p: q for p, q in asks if q}

    def apply(self, bids: list[tuple[float, float]], asks: list[tuple[float, float]]) -> None:
        for side, updates in ((self.bids, bids), (self.asks, asks)):
            for p, q in updates:
                if q == 0:
                    side.pop(p, None)
                else:
                    side[p] = q

    def arrays(self) -> tuple[np.ndarray, ...]:
        b = sorted(self.bids.items(), reverse=True)
        a = sorted(self.asks.items())
        return (np.array([p for p, _ in b]), np.array([q for _, q in b]),
                np.array([p for p, _ in a]), np.array([q for _, q in a]))


def _replay(name: str, futures: bool, snapshot_after: int) -> dict[str, int]:
    rec = load_recording(DATA / f"{name}.frames.jsonl.gz", "binance")
    snapshot = decode_snapshot((DATA / f"{name}.rest_depth_snapshot.json").read_bytes())
    book, sync, ref = Book(), BinanceDepthSync(futures), None
    buffered, tickers = [], []
    counts = {"applied": 0, "stale": 0, "ticker_checks": 0, "live_ticker_checks": 0}
    applied_events = []

    def handle(event: object) -> None:
        verdict = sync.check(event.U, event.u, event.pu)  # type: ignore[attr-defined]
        if verdict == Verdict.BUFFER:
            buffered.append(event)
            return
        if verdict == Verdict.STALE:
            counts["stale"] += 1
            return
        assert verdict == Verdict.APPLY, f"gap at U={event.U}"  # type: ignore[attr-defined]
        book.apply(*levels(event.b), *levels(event.a))  # type: ignore[attr-defined]
        ref.apply(event.b, event.a)  # type: ignore[union-attr, attr-defined]
        for mine, theirs in zip(book.levels(1 << 30), ref.arrays(),  # type: ignore[union-attr]
                                strict=True):
            assert np.array_equal(mine, theirs)
        assert not book.crossed()
        counts["applied"] += 1
        applied_events.append((event.U, event.u, book.top()))  # type: ignore[attr-defined]

    for index, frame in enumerate(rec.frames):
        if index == snapshot_after:  # the REST answer arrived here in the recording
            book.clear()
            book.apply(*levels(snapshot.bids), *levels(snapshot.asks))
            ref = ReferenceBook(snapshot.bids, snapshot.asks)
            sync.on_snapshot(snapshot.lastUpdateId)
            for event in buffered:
                handle(event)
            buffered.clear()
        env = decode_envelope(frame)
        if "@depth" in env.stream:
            handle(decode_depth(env.data))
        elif env.stream.endswith("@bookTicker"):
            ticker = decode_book_ticker(env.data)
            tickers.append(ticker)
            if futures and ticker.u == sync.last_u:  # the README's rule, in receive order
                assert (ticker.b, ticker.B, ticker.a, ticker.A) == book.top()
                counts["live_ticker_checks"] += 1
    # the data README's bookTicker facts
    tickers.sort(key=lambda t: t.u)
    ids = [t.u for t in tickers]
    for first, last, top in applied_events:
        if futures:
            i = bisect.bisect_left(ids, last)
            matches = [t for t in tickers[i:i + 1] if t.u == last]
        else:
            lo, hi = bisect.bisect_left(ids, first), bisect.bisect_right(ids, last)
            matches = tickers[hi - 1:hi] if hi > lo else []
        for t in matches:
            assert (t.b, t.B, t.a, t.A) == top
            counts["ticker_checks"] += 1
    return counts


def test_usdm_futures_book_follows_every_event() -> None:
    counts = _replay("hftbacktest_usdm_btcusdt_20240808", futures=True, snapshot_after=54)
    assert counts["applied"] > 6_000
    assert counts["live_ticker_checks"] == 126  # "126 of 126 times" (data README)
    assert counts["ticker_checks"] >= 126       # and every other ticker with an applied u


def test_spot_book_follows_every_event() -> None:
    counts = _replay("hftbacktest_spot_btcusdt_20240808", futures=False, snapshot_after=7)
    # the data README checked 2,878 events; this counts each applied event with a ticker in
    # [U, u], a superset: every one of them must match
    assert counts["applied"] > 3_000 and counts["ticker_checks"] >= 2_878


def test_sync_rules_by_hand() -> None:
    fut = BinanceDepthSync(futures=True)
    assert fut.check(10, 12, 9) == Verdict.BUFFER
    fut.on_snapshot(100)
    assert fut.check(90, 99, 89) == Verdict.STALE          # u < lastUpdateId
    assert fut.check(101, 105, 100) == Verdict.APPLY       # pu == lastUpdateId bridges
    assert fut.check(106, 110, 105) == Verdict.APPLY       # pu == previous u
    assert fut.check(106, 110, 105) == Verdict.STALE       # the same event again
    assert fut.check(101, 105, 100) == Verdict.GAP         # backwards, no overlap
    fut.on_snapshot(100)
    assert fut.check(101, 105, 100) == Verdict.APPLY
    assert fut.check(106, 110, 105) == Verdict.APPLY
    assert fut.check(101, 105, 100, overlap=True) == Verdict.STALE  # a rotation's overlap
    assert fut.check(112, 115, 111) == Verdict.GAP         # pu != previous u
    spot = BinanceDepthSync(futures=False)
    spot.on_snapshot(100)
    assert spot.check(95, 100, -1) == Verdict.STALE        # spot: u <= lastUpdateId is stale
    assert spot.check(99, 104, -1) == Verdict.APPLY        # U <= 101 <= u
    assert spot.check(106, 108, -1) == Verdict.GAP         # U != previous u + 1
    spot.on_snapshot(200)
    assert spot.check(202, 205, -1) == Verdict.GAP         # does not bridge 201


def test_kernel_insert_update_delete_and_overflow() -> None:
    px, qty = np.zeros(3), np.zeros(3)  # a bid side: stored worst first (ascending)
    n = apply_levels(px, qty, 0, np.array([10.0, 12.0, 11.0]), np.array([1.0, 2.0, 3.0]), True)
    assert n == 3 and px.tolist() == [10.0, 11.0, 12.0] and qty.tolist() == [1.0, 3.0, 2.0]
    n = apply_levels(px, qty, n, np.array([11.0, 12.0]), np.array([0.0, 5.0]), True)
    assert n == 2 and px[:2].tolist() == [10.0, 12.0] and qty[:2].tolist() == [1.0, 5.0]
    n = apply_levels(px, qty, n, np.array([9.0, 8.0]), np.array([1.0, 1.0]), True)
    assert n == -1  # the second insert does not fit
    book = Book(capacity=8)
    book.apply(np.array([1.0, 3.0, 2.0]), np.array([1.0, 1.0, 1.0]), np.array([5.0, 4.0]),
               np.array([2.0, 2.0]))
    assert book.top() == (3.0, 1.0, 4.0, 2.0) and not book.crossed()
    assert [v.tolist() for v in book.levels(2)] == [[3.0, 2.0], [1.0, 1.0], [4.0, 5.0],
                                                    [2.0, 2.0]]
    with pytest.raises(Exception, match="full"):
        Book(capacity=1).apply(np.array([1.0, 2.0]), np.array([1.0, 1.0]), np.empty(0),
                               np.empty(0))
