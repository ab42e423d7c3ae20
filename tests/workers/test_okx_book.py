"""OKX books rebuilt from the real recordings: every checksum verifies and the book equals an
independent dict reference after every message; the seqId rule, the checksum kernel against
zlib, the exact number parser against ``float()``, and the synthetic venue's OKX frames."""

from __future__ import annotations

import copy
import math
import random
import zlib
from collections import Counter
from pathlib import Path

import msgspec
import numpy as np
import pytest

from workers.exchanges.book import BookOverflow
from workers.exchanges.okx_book import OkxBook, OkxSequence, OkxVerdict, _parse_decimal
from workers.exchanges.okx_wire import (
    decode_books,
    decode_books_raw,
    decode_envelope,
    decode_funding_rate,
    decode_liquidations,
    decode_mark_price,
    decode_open_interest,
    decode_tickers,
    decode_trades,
)
from workers.venue.synthetic import SyntheticConfig, generate

DATA = Path(__file__).resolve().parents[1] / "data" / "recorded" / "okx"
BOOKS_3INST = "cryptofeed_books_3inst_20220513"
TBT_10INST = "cryptofeed_books-l2-tbt_10inst_20210722_conn1"


def _crc(text: str) -> int:
    value = zlib.crc32(text.encode())
    return value - (1 << 32) if value >= 1 << 31 else value


class ReferenceBook:
    """A dict book following OKX's documented rules, independent of the numpy kernels:
    levels keyed by price, holding the exchange's strings; size "0" deletes."""

    def __init__(self) -> None:
        self.bids: dict[float, tuple[str, str]] = {}
        self.asks: dict[float, tuple[str, str]] = {}

    def apply(self, bids: list[list[str]], asks: list[list[str]]) -> None:
        for side, levels in ((self.bids, bids), (self.asks, asks)):
            for px, sz, *_ in levels:
                if float(sz) == 0:
                    side.pop(float(px), None)
                else:
                    side[float(px)] = (px, sz)

    def best_first(self) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        return ([self.bids[p] for p in sorted(self.bids, reverse=True)],
                [self.asks[p] for p in sorted(self.asks)])

    def checksum(self) -> int:
        bids, asks = self.best_first()
        parts = []
        for i in range(25):
            parts += [":".join(bids[i])] if i < len(bids) else []
            parts += [":".join(asks[i])] if i < len(asks) else []
        return _crc(":".join(parts))


def _lines(name: str) -> list[bytes]:
    return (DATA / f"{name}.frames.jsonl").read_bytes().splitlines()


def _replay(name: str) -> tuple[Counter[str], Counter[str]]:
    """Rebuild every instrument's book; returns (book messages, snapshots) per instrument."""
    books: dict[str, tuple[OkxBook, ReferenceBook, OkxSequence]] = {}
    messages: Counter[str] = Counter()
    snapshots: Counter[str] = Counter()
    for frame in _lines(name):
        env = decode_envelope(frame)
        if env.event:
            assert env.event == "subscribe" and env.arg is not None and len(env.data) == 0
            continue
        assert env.arg is not None
        if not env.arg.channel.startswith("books"):
            continue
        inst = env.arg.instId
        for d in decode_books(env.data):
            if env.action == "snapshot":
                books[inst] = (OkxBook(), ReferenceBook(), OkxSequence())
                snapshots[inst] += 1
            book, ref, seq = books[inst]
            assert d.seqId is None and d.prevSeqId is None  # these recordings predate seqId
            assert seq.check(env.action == "snapshot", d.seqId, d.prevSeqId) == OkxVerdict.APPLY
            book.apply_strings(d.bids, d.asks)
            ref.apply(d.bids, d.asks)
            assert book.checksum() == d.checksum, f"{inst}: message {messages[inst]}"
            assert book.apply_json(b"[]", b"[]") == d.checksum  # the fused kernel's checksum
            assert ref.checksum() == d.checksum  # the reference agrees with the exchange too
            assert book.strings(1 << 30) == ref.best_first()
            ref_bids, ref_asks = ref.best_first()
            bp, bq, ap, aq = book.levels(1 << 30)
            assert bp.tolist() == [float(p) for p, _ in ref_bids]
            assert bq.tolist() == [float(q) for _, q in ref_bids]
            assert ap.tolist() == [float(p) for p, _ in ref_asks]
            assert aq.tolist() == [float(q) for _, q in ref_asks]
            assert not book.crossed()
            messages[inst] += 1
    return messages, snapshots


def test_books_3inst_every_checksum_verifies() -> None:
    messages, snapshots = _replay(BOOKS_3INST)
    assert sum(messages.values()) == 290  # data README: all 290 checksums verify
    assert set(snapshots.values()) == {1} and len(snapshots) == 3
    assert all(93 <= n <= 99 for n in messages.values())  # 1 snapshot + 92–98 updates


def test_books_l2_tbt_10inst_every_checksum_verifies() -> None:
    messages, snapshots = _replay(TBT_10INST)
    assert sum(messages.values()) == 1_504  # data README: all 1,504 checksums verify
    assert set(snapshots.values()) == {1} and len(snapshots) == 10


def test_checksum_of_a_tiny_book_matches_zlib() -> None:
    book = OkxBook(capacity=64)
    # OKX's documented example: bids and asks interleaved, best first
    book.apply_strings([["3366.1", "7", "0", "3"], ["3366", "6", "3", "4"]],
                       [["3366.8", "9", "10", "3"], ["3368", "8", "3", "4"]])
    assert book.checksum() == _crc("3366.1:7:3366.8:9:3366:6:3368:8")
    # uneven sides: the longer side's remaining levels follow
    book.apply_strings([], [["3369", "1.50", "0", "1"], ["3370", "2", "0", "1"]])
    assert book.checksum() == _crc("3366.1:7:3366.8:9:3366:6:3368:8:3369:1.50:3370:2")
    # an empty bid side (some option books)
    book.apply_strings([["3366.1", "0", "0", "0"], ["3366", "0", "0", "0"]], [])
    assert book.n_bids == 0 and not book.crossed()
    assert book.checksum() == _crc("3366.8:9:3368:8:3369:1.50:3370:2")
    assert math.isnan(book.top()[0]) and book.top()[2:] == (3366.8, 9.0)
    # only the best 25 levels per side count
    book.clear()
    bids = [[f"{100 - i}.5", f"{i + 1}", "0", "1"] for i in range(30)]
    asks = [[f"{101 + i}", f"0.{i + 1}", "0", "1"] for i in range(27)]
    book.apply_strings(bids, asks)
    text = ":".join(f"{b[0]}:{b[1]}:{a[0]}:{a[1]}" for b, a in zip(bids[:25], asks[:25],
                                                                      strict=True))
    assert book.checksum() == _crc(text)
    assert OkxBook().checksum() == 0  # the CRC of nothing


def test_corrupted_size_string_fails_the_checksum() -> None:
    book, updates = OkxBook(), 0
    for frame in _lines(BOOKS_3INST):
        env = decode_envelope(frame)
        if env.event or env.arg is None or env.arg.channel != "books" or (
                env.arg.instId != "BTC-USDT"):
            continue
        d = decode_books(env.data)[0]
        updates += env.action == "update" and bool(d.bids)
        if updates == 10:
            sz = d.bids[0][1]
            respelled = sz + "0" if "." in sz else sz + ".0"  # same number, other text
            for size in (respelled, sz + "1"):
                corrupt = copy.deepcopy(book)
                corrupt.apply_strings([[d.bids[0][0], size, *d.bids[0][2:]], *d.bids[1:]],
                                      d.asks)
                assert corrupt.checksum() != d.checksum, size
            book.apply_strings(d.bids, d.asks)
            assert book.checksum() == d.checksum  # the original message still verifies
            assert [a.tolist() for a in corrupt.levels(5)] != [
                a.tolist() for a in book.levels(5)]
            return
        book.apply_strings(d.bids, d.asks)
        assert book.checksum() == d.checksum
    pytest.fail("no update to corrupt")


def test_a_respelled_price_replaces_the_stored_text() -> None:
    book = OkxBook(capacity=8)
    book.apply_strings([["15", "1", "0", "1"]], [["16", "2", "0", "1"]])
    book.apply_strings([["15.0", "3", "0", "1"]], [])
    assert book.n_bids == 1 and book.strings(5) == ([("15.0", "3")], [("16", "2")])


def test_seq_id_rule() -> None:
    seq = OkxSequence()
    assert seq.check(False, 11, 10) == OkxVerdict.GAP              # no snapshot yet
    assert seq.check(True, 10, -1) == OkxVerdict.APPLY             # snapshot: prevSeqId -1
    assert seq.check(False, 15, 10) == OkxVerdict.APPLY            # prevSeqId == previous
    assert seq.check(False, 15, 15) == OkxVerdict.APPLY            # no-change: seqId repeated
    assert seq.check(False, 16, 15) == OkxVerdict.APPLY
    assert seq.check(False, 16, 15) == OkxVerdict.DUPLICATE        # the same message again
    assert seq.check(False, 3, 16) == OkxVerdict.APPLY             # reset after maintenance
    assert seq.check(False, 9, 5) == OkxVerdict.GAP                # prevSeqId != previous
    assert seq.check(False, 10, 9) == OkxVerdict.GAP               # stays out until snapshot
    assert seq.check(True, 20, 19) == OkxVerdict.GAP               # a snapshot needs -1
    assert seq.check(True, 20, -1) == OkxVerdict.APPLY
    assert seq.check(False, None, None) == OkxVerdict.GAP          # seqId vanished
    old = OkxSequence()                                             # a feed without seqId
    assert old.check(True, None, None) == OkxVerdict.APPLY
    assert old.check(False, None, None) == OkxVerdict.APPLY        # only checksums apply
    assert old.check(False, 7, 6) == OkxVerdict.GAP                # seqId appeared mid-stream


def test_number_parser_equals_float() -> None:
    rng = random.Random(3)
    texts = ["0", "0.0", "5", "30243.4", "0.000000452", "1134312.21", "0.10", "-2.5",
             "9007199254740993", "123456789012345678", "1e-8", "2.5E3", "1.5e+2", "0.1e30"]
    for _ in range(20_000):
        digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 17)))
        cut = rng.randint(0, len(digits))
        texts.append(f"{digits[:cut] or '0'}.{digits[cut:]}" if cut < len(digits) else digits)
    fast = 0
    for text in texts:
        value = _parse_decimal(text.encode(), 0, len(text))
        if not math.isnan(value):  # NaN: outside the exact fast path, the caller uses float()
            assert value == float(text), text
            fast += 1
    assert fast > 0.9 * len(texts)
    for bad in ("", ".", "-", "1.2.3", "1x", "e5"):
        assert math.isnan(_parse_decimal(bad.encode(), 0, len(bad)))


def test_float_fallback_overflow_and_malformed_levels() -> None:
    book = OkxBook(capacity=4)
    long_size = "12345678901.123456789"  # beyond the exact fast path: float() parses it
    book.apply_strings([["1.5", long_size, "0", "1"]], [["2", "1e-3", "0", "1"]])
    assert book.top() == (1.5, float(long_size), 2.0, 0.001)
    assert book.strings(1) == ([("1.5", long_size)], [("2", "1e-3")])
    with pytest.raises(BookOverflow):
        book.apply_strings([[f"{p}", "1", "0", "1"] for p in range(1, 2 + 4)], [])
    book = OkxBook(capacity=4, width=8)
    with pytest.raises(ValueError, match="malformed"):
        book.apply_strings([["1.5", "123456789", "0", "1"]], [])  # wider than the store
    with pytest.raises(ValueError, match="malformed"):
        book.apply_strings([["1.5"]], [])
    with pytest.raises(ValueError):
        book.apply_strings([["abc", "1"]], [])
    with pytest.raises(TypeError, match="apply_strings"):
        book.apply(np.ones(1), np.ones(1), np.ones(1), np.ones(1))


def test_raw_json_path_equals_the_list_path() -> None:
    verified = 0
    for name in (BOOKS_3INST, TBT_10INST):
        books: dict[str, tuple[OkxBook, OkxBook]] = {}
        for frame in _lines(name):
            env = decode_envelope(frame)
            if env.event or env.arg is None or not env.arg.channel.startswith("books"):
                continue
            if env.action == "snapshot":
                books[env.arg.instId] = (OkxBook(), OkxBook())
            raw_book, list_book = books[env.arg.instId]
            (raw,), (d,) = decode_books_raw(env.data), decode_books(env.data)
            raw_book.apply_json(raw.bids, raw.asks)  # msgspec.Raw, straight into the kernel
            list_book.apply_strings(d.bids, d.asks)
            assert raw_book.checksum() == raw.checksum
            assert raw_book.strings(1 << 30) == list_book.strings(1 << 30)
            verified += 1
    assert verified == 290 + 1_504


def test_raw_json_levels_with_whitespace() -> None:
    book = OkxBook(capacity=8)
    book.apply_json(b' [ [ "10.5" , "2" , "0" , "1" ] , ["10", "1", "0", "1"] ] ', b"[]")
    assert book.strings(5) == ([("10.5", "2"), ("10", "1")], [])


def test_events_and_empty_numbers_decode() -> None:
    err = decode_envelope(b'{"event":"error","code":"60012","msg":"Invalid request","connId":"x"}')
    assert err.event == "error" and err.code == "60012" and err.arg is None and not err.data
    (fr,) = decode_funding_rate(
        b'[{"instId":"BTC-USDT-SWAP","instType":"SWAP","fundingRate":"0.0001",'
        b'"nextFundingRate":"","fundingTime":"1767254400000",'
        b'"nextFundingTime":"1767283200000","method":"current_period","ts":"1767225600000"}]')
    assert fr.fundingRate == 0.0001 and math.isnan(fr.nextFundingRate)
    assert fr.fundingTime == 1767254400000 and fr.nextFundingTime == 1767283200000
    (tk,) = decode_tickers(b'[{"instId":"BTC-USD-210924-66000-C","last":"0.0065","bidPx":"",'
                           b'"bidSz":"0","askPx":"0.008","ts":"1626995703355"}]')
    assert math.isnan(tk.bidPx) and tk.askPx == 0.008


def test_recorded_trades_and_tickers_decode() -> None:
    counts: Counter[str] = Counter()
    for name in (BOOKS_3INST, TBT_10INST):
        for frame in _lines(name):
            env = decode_envelope(frame)
            if env.event:  # subscribe acks carry an arg, no data
                continue
            if env.arg is not None and env.arg.channel == "trades":
                for t in decode_trades(env.data):
                    assert t.px > 0 and t.sz > 0 and t.side in ("buy", "sell") and t.tradeId
                    counts["trades"] += 1
            elif env.arg is not None and env.arg.channel == "tickers":
                counts["tickers"] += len(decode_tickers(env.data))
    assert counts == {"trades": 110, "tickers": 74}


def test_synthetic_venue_okx_frames_decode_and_books_verify() -> None:
    frames, _ = generate(SyntheticConfig(exchange="okx", symbols=2, rate_hz=2_000, seconds=6,
                                         seed=11))
    counts: Counter[str] = Counter()
    books: dict[str, tuple[OkxBook, OkxSequence]] = {}
    for _, _topic, frame in frames:
        env = decode_envelope(frame)
        assert env.arg is not None
        channel = env.arg.channel
        counts[channel] += 1
        if channel == "books":
            for d in decode_books(env.data):
                snapshot = env.action == "snapshot"
                if snapshot:
                    books[env.arg.instId] = (OkxBook(), OkxSequence())
                book, seq = books[env.arg.instId]
                assert d.seqId is not None and d.prevSeqId is not None
                assert seq.check(snapshot, d.seqId, d.prevSeqId) == OkxVerdict.APPLY
                book.apply_strings(d.bids, d.asks)
                assert book.checksum() == d.checksum and not book.crossed()
        elif channel == "trades":
            assert all(t.sz > 0 and t.side in ("buy", "sell") for t in decode_trades(env.data))
        elif channel == "liquidation-orders":
            assert env.arg.instType == "SWAP"
            for liq in decode_liquidations(env.data):
                assert liq.instId.endswith("-SWAP") and liq.details
                assert all(x.bkPx > 0 and x.sz > 0 and x.side in ("buy", "sell")
                           and x.posSide in ("long", "short") for x in liq.details)
        elif channel == "funding-rate":
            (fr,) = decode_funding_rate(env.data)
            assert abs(fr.fundingRate) < 0.01 and fr.fundingTime > fr.ts > 0
        elif channel == "mark-price":
            (mp,) = decode_mark_price(env.data)
            assert mp.markPx > 0 and mp.ts > 0
        elif channel == "open-interest":
            (oi,) = decode_open_interest(env.data)
            assert oi.oi > 0 and oi.oiCcy > 0
        else:
            pytest.fail(f"unexpected channel {channel}")
    assert set(counts) == {"books", "trades", "liquidation-orders", "funding-rate",
                           "mark-price", "open-interest"}
    assert counts["books"] > 5_000 and counts["funding-rate"] == 2 * 6


def test_msgspec_encoding_is_the_level_text() -> None:
    # apply_strings feeds the kernel msgspec's JSON: level strings must come out verbatim
    levels = [["0.000000452", "141211.03", "0", "1"]]
    assert msgspec.json.encode(levels) == b'[["0.000000452","141211.03","0","1"]]'
