"""The compiled orderbook writer (workers/publisher/book_json.py) gives msgspec's bytes, or
declines a record and leaves it to msgspec: every book of the real recordings, a quarter of a
million hand-made and random floats, and every field's edge values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import shm
from workers.exchanges.replay import replay
from workers.publisher.payloads import PayloadEncoder

DATA = Path(__file__).resolve().parents[1] / "data" / "recorded"
RECORDINGS = {
    "binance": ("binance/hftbacktest_usdm_btcusdt_20240808.frames.jsonl.gz",
                ["binance/hftbacktest_usdm_btcusdt_20240808.rest_depth_snapshot.json"]),
    "bybit": ("bybit/cryptofeed_linear_v5_20260809.frames.jsonl", []),
    "okx": ("okx/cryptofeed_books_3inst_20220513.frames.jsonl", []),
}


def _pair(exchange: str, names: list[str]) -> tuple[PayloadEncoder, PayloadEncoder]:
    return PayloadEncoder(exchange, names), PayloadEncoder(exchange, names, compiled=False)


def _same(compiled: PayloadEncoder, general: PayloadEncoder, books: np.ndarray) -> None:
    got, want = list(compiled.records("book", books)), list(general.records("book", books))
    assert len(got) == len(want) == len(books)
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        assert a == b, (i, a[2][:400], b[2][:400])


@pytest.mark.parametrize("exchange", sorted(RECORDINGS))
def test_every_recorded_book_encodes_as_msgspec_does(exchange: str) -> None:
    frames, snapshots = RECORDINGS[exchange]
    feed, sink = replay(exchange, DATA / frames, [DATA / s for s in snapshots])
    books = np.concatenate([c for s, c in sink.chunks if s == "book"])
    names = [feed.symbols[sid].symbol for sid in sorted(feed.symbols)]
    compiled, general = _pair(exchange, names)
    _same(compiled, general, books)
    assert len(books) > 250
    if exchange != "okx":   # OKX inverse sizes in base units need 16-17 digits: declined
        assert compiled.books_declined == 0


def _one_level(values: np.ndarray) -> np.ndarray:
    """One book record per value: a single bid at that price."""
    books = np.zeros(len(values), shm.BOOK)
    books["bid_px"][:, 0] = values
    books["bid_qty"][:, 0] = 1.0
    books["n_bids"] = 1
    books["state"] = int(shm.BookState.LIVE)
    books["ts_exchange_ns"] = 1_723_161_256_322_000_001
    return books


def _short_decimals(rng: np.random.Generator, n: int) -> np.ndarray:
    """Decimals of 1–15 significant digits, 10^-5 … 10^15, as an exchange sends them."""
    digits = rng.integers(1, 16, n)
    mantissa = np.array([int(rng.integers(10 ** (d - 1), 10**d)) for d in digits])
    exponent = rng.integers(-20, 16, n)
    values = np.array([float(f"{m}e{e}") for m, e in zip(mantissa, exponent, strict=True)])
    return values[(values >= 1e-5) & (values < 1e15)]


def test_floats_equal_msgspec_or_are_declined() -> None:
    rng = np.random.default_rng(11)
    edges = [0.0, -0.0, 1e-5, 1.5e-5, 9.99999e-6, 1e-6, 0.1, 0.2, 0.1 + 0.2, 1 / 3, 2.5,
             100.0, 61800.3, 0.00001234, 1e15, 999999999999999.0, 1e16 - 2, 1e16,
             1.7976931348623157e308, 5e-324, np.nan, np.inf, -np.inf, -61800.3, -1e-5,
             2.0**53, 2.0**53 - 1, 123456789012345.6, 12345678901234.56]
    short = _short_decimals(rng, 150_000)
    bits = rng.integers(0, 2**63, 60_000, dtype=np.uint64).view(np.float64)   # any double
    uniform = rng.uniform(0, 1e6, 40_000)                                     # 16-17 digits
    values = np.concatenate([edges, short, bits, uniform])
    compiled, general = _pair("binance", ["BTCUSDT"])
    books = _one_level(values)
    _same(compiled, general, books)
    # every short decimal (≤ 15 significant digits in range) takes the compiled path
    compiled.books_declined = 0
    list(compiled.records("book", _one_level(short)))
    assert compiled.books_declined == 0 and len(short) > 50_000


def test_every_field_at_its_edges() -> None:
    rng = np.random.default_rng(5)
    n = 5_000
    books = np.zeros(n, shm.BOOK)
    books["seq"] = rng.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True)
    books["seq"][:2] = [0, 2**64 - 1]
    books["ts_exchange_ns"] = rng.integers(-(2**63), 2**63 - 1, n, dtype=np.int64)
    books["ts_exchange_ns"][:3] = [-1, -(2**63), 999_999]   # floor division, as Python
    books["ts_recv_ns"] = rng.integers(-(2**63), 2**63 - 1, n, dtype=np.int64)
    books["update_id"] = rng.integers(-(2**63), 2**63 - 1, n, dtype=np.int64)
    books["update_id"][0] = -(2**63)
    books["epoch"] = rng.integers(0, 2**32 - 1, n, dtype=np.uint32)
    books["market"] = rng.integers(0, 256, n)          # unknown codes: "none"
    books["state"] = rng.integers(0, 256, n)           # unknown codes: "NONE"
    books["symbol_id"] = rng.integers(0, 4, n)         # 3: not configured, "sid3"
    books["n_bids"] = rng.integers(0, 256, n)          # beyond the depth: clamped
    books["n_asks"] = rng.integers(0, 25, n)
    for side in ("bid_px", "bid_qty", "ask_px", "ask_qty"):
        books[side] = np.round(rng.uniform(0.0001, 1e5, (n, shm.BOOK["bid_px"].shape[0])), 4)
    compiled, general = _pair("okx", ["BTC-USDT", "ETH-USD-SWAP", 'we"ird\\name'])
    _same(compiled, general, books)
    assert 0 < compiled.books_declined < n / 2    # only the unconfigured symbol id
    _same(compiled, general, books[::3])          # a strided batch (copied first)
    _same(compiled, general, books[:0])
