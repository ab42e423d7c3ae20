"""Book-state alerts: state changes by hand, a crossed LIVE record, and a real resync of one
OKX instrument (a corrupted checksum in the recording) seen through the feed's book records."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import shm
from workers.detectors.book_state import BookStateMonitor
from workers.detectors.events import EventBuffer, EventKind
from workers.exchanges.records import Emitter
from workers.exchanges.replay import ReplaySink, make_feed

DATA = Path(__file__).resolve().parents[1] / "data" / "recorded"
L, RS, ST = shm.BookState.LIVE, shm.BookState.RESYNCING, shm.BookState.STALE


def books(*rows: tuple[int, int, float, float]) -> np.ndarray:
    """``(symbol id, state, best bid, best ask)`` records (one level a side)."""
    out = np.zeros(len(rows), shm.BOOK)
    for i, (sid, state, bid, ask) in enumerate(rows):
        out[i]["symbol_id"], out[i]["state"], out[i]["seq"] = sid, state, i
        out[i]["n_bids"], out[i]["n_asks"], out[i]["epoch"] = 1, 1, 3
        out[i]["bid_px"][0], out[i]["ask_px"][0] = bid, ask
    return out


def test_state_changes_and_crossed_by_hand() -> None:
    mon, ev = BookStateMonitor(2), EventBuffer()
    mon.update(books((0, L, 1.0, 2.0), (0, L, 1.0, 2.0), (1, RS, 1.0, 2.0), (0, RS, 1.0, 2.0),
                     (0, shm.BookState.SYNCING, 1.0, 2.0), (0, L, 1.0, 2.0), (0, ST, 1.0, 2.0),
                     (0, L, 2.0, 2.0)), ev, 7)
    got = ev.take()
    assert got["kind"].tolist() == [EventKind.BOOK_STATE] * 4 + [EventKind.BOOK_CROSSED]
    assert got["priority"].tolist() == [0, 1, 0, 1, 0]  # leaving LIVE is CRITICAL
    assert [tuple(r["values"][:3]) for r in got[:4]] == [(RS, L, 3), (L, 1, 3), (ST, L, 3),
                                                        (L, ST, 3)]
    assert got["trigger_seq"].tolist() == [3, 5, 6, 7, 7] and np.all(got["ts_detect_ns"] == 7)
    assert got[4]["values"][:2].tolist() == [2.0, 2.0]
    mon.reset(0)
    mon.update(books((0, RS, 1.0, 2.0), (9, L, 1.0, 2.0)), ev, 8)  # first after reset: quiet
    assert len(ev.take()) == 0 and mon.skipped[0] == 1
    with pytest.raises(ValueError, match="symbols"):
        BookStateMonitor(0)


def test_a_real_resync_alerts_only_that_instrument() -> None:
    lines = (DATA / "okx" / "cryptofeed_books_3inst_20220513.frames.jsonl").read_bytes()
    frames = lines.splitlines()
    victim = None
    for i, f in enumerate(frames):  # corrupt the checksum of one mid-stream update
        msg = json.loads(f)
        if i > len(frames) // 2 and msg.get("action") == "update":
            victim = msg["arg"]["instId"]
            msg["data"][0]["checksum"] += 1
            frames[i] = json.dumps(msg, separators=(",", ":")).encode()
            break
    assert victim is not None
    sink = ReplaySink()
    feed = make_feed("okx", frames, Emitter(3, sink.outputs))
    for f in frames:
        feed.on_frame("*", f, 1, 2)
    recs = np.concatenate([c for s, c in sink.chunks if s == "book"])
    mon, ev = BookStateMonitor(len(feed.symbols)), EventBuffer()
    mon.update(recs, ev, 0)
    got = ev.take()
    sid = next(s for s, spec in feed.symbols.items() if spec.symbol == victim)
    assert len(got) >= 1 and set(got["symbol_id"].tolist()) == {sid}
    assert got[0]["priority"] == shm.Priority.CRITICAL and got[0]["values"][0] == RS
