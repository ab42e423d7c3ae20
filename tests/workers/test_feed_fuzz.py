"""Fuzz: at least 100,000 mutated real frames per exchange through ``Feed.on_frame``. No
exception escapes, every frame is counted, and no book record published as LIVE is crossed."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from shm import STREAMS
from shm.layout import BookState
from workers.exchanges.feed import Count
from workers.exchanges.records import FEED_STREAMS, Collector, Emitter
from workers.exchanges.replay import load_frames, make_feed

DATA = Path(__file__).resolve().parents[1] / "data" / "recorded"
RECORDINGS = {
    "binance": ["binance/cryptofeed_usdm_4sym_20210722.frames.jsonl"],
    "bybit": ["bybit/cryptofeed_linear_v5_20260809.frames.jsonl"],
    "okx": ["okx/cryptofeed_books_3inst_20220513.frames.jsonl",
            "okx/cryptofeed_books-l2-tbt_10inst_20210722_conn1.frames.jsonl"],
}
MUTATIONS = 100_000
_TOKENS = [b"null", b"true", b'""', b'"x"', b"-1", b"0", b"1e400", b"NaN", b"[]", b"{}",
           b'"-0"', b"18446744073709551616", b'"1e-400"', b"[[]]", b'[["1"]]']


def mutate(rng: random.Random, frame: bytes) -> bytes:
    """One random structural or byte-level mutation of a JSON frame."""
    b = bytearray(frame)
    op = rng.randrange(9)
    i = rng.randrange(len(b)) if b else 0
    if op == 0:                       # flip a byte
        b[i] = rng.randrange(256)
    elif op == 1:                     # truncate
        del b[i:]
    elif op == 2:                     # delete a span
        del b[i:i + rng.randrange(1, 40)]
    elif op == 3:                     # duplicate a span
        b[i:i] = b[i:i + rng.randrange(1, 40)]
    elif op == 4:                     # replace a JSON value after a colon with a token
        j = frame.find(b":", i)
        if j >= 0:
            end = j + 1
            while end < len(frame) and frame[end] not in b",}]":
                end += 1
            return frame[:j + 1] + rng.choice(_TOKENS) + frame[end:]
    elif op == 5:                     # change a digit (sequence numbers, prices)
        digits = [k for k in range(len(b)) if 48 <= b[k] <= 57]
        if digits:
            b[rng.choice(digits)] = rng.randrange(48, 58)
    elif op == 6:                     # rename a key
        j = frame.find(b'":', i)
        if j > 0:
            b[j - 1] = rng.randrange(97, 123)
    elif op == 7:                     # empty a list
        j = frame.find(b"[[", i)
        if j >= 0:
            end = frame.find(b"]]", j)
            if end > 0:
                return frame[:j] + b"[]" + frame[end + 2:]
    else:                             # insert a token at random
        b[i:i] = rng.choice(_TOKENS)
    return bytes(b)


@pytest.mark.parametrize("exchange", sorted(RECORDINGS))
def test_mutated_frames_never_escape(exchange: str) -> None:
    frames = [f for name in RECORDINGS[exchange] for _, f in load_frames(DATA / name)]
    outs = {s: Collector(STREAMS[s]) for s in FEED_STREAMS}
    feed = make_feed(exchange, frames, Emitter(1, outs))
    if exchange == "binance":
        for sid, spec in feed.symbols.items():
            snap = DATA / f"binance/cryptofeed_usdm_4sym_20210722.rest_depth_{spec.symbol}.json"
            feed.on_snapshot(sid, snap.read_bytes(), 0, 0)  # type: ignore[attr-defined]
    rng = random.Random(20261122)
    fed = 0
    while fed < MUTATIONS:
        for frame in frames:
            # keep the books alive between mutations so that deep paths are reached too
            feed.on_frame("*", mutate(rng, frame) if rng.random() < 0.7 else frame, fed, fed)
            fed += 1
    assert feed.counts[Count.FRAMES] == fed >= MUTATIONS
    assert feed.counts[Count.DECODE_ERRORS] > fed // 10  # the mutations did reach the decoders
    # on_frame also survives unexpected exceptions (counted as handler errors); there must be
    # none: each would be a bug on malformed input
    assert feed.counts[Count.HANDLER_ERRORS] == 0, list(feed.samples)[-3:]
    book = outs["book"].array()
    live = book[book["state"] == BookState.LIVE]
    both = live[(live["n_bids"] > 0) & (live["n_asks"] > 0)]
    assert len(live) > 0
    assert np.all(both["bid_px"][:, 0] < both["ask_px"][:, 0])
    assert feed.counts[Count.RESYNCS] > 0  # digit changes broke sequences: resyncs happened
