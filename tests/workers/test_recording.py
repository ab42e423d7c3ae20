"""Recording loader: the facts of tests/data/recorded/README.md as oracles."""

from __future__ import annotations

import gzip
from collections import Counter
from pathlib import Path

import pytest

from workers.venue import RecordingError, load_recording, topic_of

DATA = Path(__file__).resolve().parents[1] / "data" / "recorded"


@pytest.mark.parametrize("exchange, name, frames, top", [
    ("binance", "binance/hftbacktest_usdm_btcusdt_20240808.frames.jsonl.gz", 93_953,
     {"btcusdt@depth@0ms": 6_551, "btcusdt@trade": 21_313, "btcusdt@bookTicker": 66_089}),
    ("binance", "binance/hftbacktest_spot_btcusdt_20240808.frames.jsonl.gz", 41_248,
     {"btcusdt@depth@100ms": 3_451, "btcusdt@trade": 9_757, "btcusdt@bookTicker": 28_040}),
    ("bybit", "bybit/cryptofeed_linear_v5_20260809.frames.jsonl", 2_546 - 17, {}),
    ("okx", "okx/cryptofeed_books_3inst_20220513.frames.jsonl", 410 - 18, {}),
])
def test_recordings_load_with_the_documented_counts(exchange: str, name: str, frames: int,
                                                    top: dict[str, int]) -> None:
    rec = load_recording(DATA / name, exchange)
    assert len(rec.frames) == len(rec.topics) == len(rec.recv_ns) == frames
    counts = Counter(rec.topics)
    assert all(counts[t] == n for t, n in top.items()), counts
    assert rec.recv_ns == sorted(rec.recv_ns) and rec.duration_s() > 5


def test_topics_of_each_exchange() -> None:
    assert topic_of("binance", b'{"stream":"btcusdt@trade","data":{}}') == "btcusdt@trade"
    assert topic_of("bybit", b'{"topic":"tickers.BTCUSDT","type":"delta"}') == "tickers.BTCUSDT"
    assert topic_of("bybit", b'{"success":true,"op":"subscribe"}') is None
    okx = b'{"arg":{"channel":"books","instId":"BTC-USDT"},"action":"update","data":[]}'
    assert topic_of("okx", okx) == "books:BTC-USDT"
    assert topic_of("okx", b'{"event":"subscribe","arg":{"channel":"books","instId":"X"}}') is None
    with pytest.raises(RecordingError, match="unknown exchange"):
        topic_of("kraken", b"{}")


def test_capture_format_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "cap.gz"
    frames = [b'{"stream":"ethusdt@trade","data":{"t":1}}', b'{"stream":"ethusdt@trade","data":{}}']
    with gzip.open(path, "wb") as f:
        f.writelines(b"%d %s\n" % (1000 + i, fr) for i, fr in enumerate(frames))
    rec = load_recording(path, "binance")
    assert rec.frames == frames and rec.recv_ns == [1000, 1001]


def test_bad_recordings_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(RecordingError, match="no such recording"):
        load_recording(tmp_path / "missing.frames.jsonl", "okx")
    lonely = tmp_path / "x.frames.jsonl"
    lonely.write_bytes(b'{"topic":"tickers.BTCUSDT"}\n')
    with pytest.raises(RecordingError, match="sidecar"):
        load_recording(lonely, "bybit")
    (tmp_path / "x.recv_ts.txt").write_text("1.5\n2.5\n")
    with pytest.raises(RecordingError, match="1 frames but 2 timestamps"):
        load_recording(lonely, "bybit")
    bad = tmp_path / "bad.gz"
    with gzip.open(bad, "wb") as f:
        f.write(b"notanumber {}\n")
    with pytest.raises(RecordingError, match=r"bad.gz:1"):
        load_recording(bad, "binance")
