"""``apply_frame`` (levels read in place from the frame's bytes) equals ``OkxBook.apply_json``
on every recorded book message, and falls back to it for what its fast path declines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from workers.exchanges.book import BookOverflow
from workers.exchanges.okx_book import OkxBook
from workers.exchanges.okx_frame import apply_frame
from workers.exchanges.okx_wire import decode_book_push, decode_books_raw, decode_envelope

DATA = Path(__file__).resolve().parents[1] / "data" / "recorded" / "okx"


def _state(book: OkxBook) -> tuple[list[list[float]], tuple[int, int], list[list[float]]]:
    return ([x.tolist() for x in book.levels(1 << 20)], book.message_counts(),
            [x.tolist() for x in book.message_levels()])


@pytest.mark.parametrize("name", ["cryptofeed_books_3inst_20220513",
                                  "cryptofeed_books-l2-tbt_10inst_20210722_conn1"])
def test_every_recorded_message_equals_apply_json(name: str) -> None:
    fast: dict[str, OkxBook] = {}
    slow: dict[str, OkxBook] = {}
    checked = 0
    for frame in (DATA / f"{name}.frames.jsonl").read_bytes().splitlines():
        env = decode_envelope(frame)
        if env.event or env.arg is None or not env.arg.channel.startswith("books"):
            continue
        inst = env.arg.instId
        if env.action == "snapshot":
            fast[inst], slow[inst] = OkxBook(qty_scale=0.01), OkxBook(qty_scale=0.01)
        (d,) = decode_book_push(frame).data
        assert apply_frame(fast[inst], frame, d.bids, d.asks) == d.checksum
        (r,) = decode_books_raw(env.data)
        assert slow[inst].apply_json(r.bids, r.asks) == d.checksum
        assert _state(fast[inst]) == _state(slow[inst])
        checked += 1
    assert checked > 250


def _frame(bids: bytes, asks: bytes) -> bytes:
    return (b'{"arg":{"channel":"books","instId":"X"},"action":"update","data":[{"asks":%s,'
            b'"bids":%s,"ts":"1","checksum":0}]}' % (asks, bids))


def test_fallbacks_and_errors() -> None:
    book, ref = OkxBook(4), OkxBook(4)
    # a price beyond the exact fast parse: the kernel declines, apply_json takes it
    odd = b'[["0.12345678901234567891","1","0","1"]]'
    frame = _frame(odd, b'[["1.5","2","0","1"]]')
    (d,) = decode_book_push(frame).data
    assert apply_frame(book, frame, d.bids, d.asks) == ref.apply_json(d.bids, d.asks)
    assert book.levels(4)[0].tolist() == [0.12345678901234568]
    assert _state(book) == _state(ref)
    # not bytes, or no "data" key: apply_json
    assert apply_frame(book, bytearray(frame), d.bids, d.asks) == ref.apply_json(d.bids, d.asks)
    assert apply_frame(book, b"{}", d.bids, d.asks) == ref.apply_json(d.bids, d.asks)
    assert _state(book) == _state(ref)
    bad = _frame(b'[["1","x"]]', b"[]")
    (d,) = decode_book_push(bad).data
    with pytest.raises(ValueError):  # the slow path's float() names the text
        apply_frame(book, bad, d.bids, d.asks)
    assert _state(book)[0] == _state(ref)[0]  # nothing applied
    full = _frame(b'[["0.1","1","0","1"],["0.2","1","0","1"],["0.3","1","0","1"],'
                  b'["0.4","1","0","1"]]', b"[]")
    (d,) = decode_book_push(full).data
    with pytest.raises(BookOverflow):
        apply_frame(book, full, d.bids, d.asks)
    with pytest.raises(BookOverflow):
        ref.apply_json(d.bids, d.asks)
    assert (book.n_bids, book.n_asks) == (ref.n_bids, ref.n_asks)  # the feed resyncs


def test_whitespace_inside_the_sides() -> None:
    book, ref = OkxBook(), OkxBook()
    frame = _frame(b' [ [ "10.5" , "2" , "0" , "1" ] , ["10", "1", "0", "1"] ] ', b"[]")
    (d,) = decode_book_push(frame).data
    assert apply_frame(book, frame, d.bids, d.asks) == ref.apply_json(d.bids, d.asks)
    assert np.array_equal(book.levels(5)[0], [10.5, 10.0]) and _state(book) == _state(ref)
