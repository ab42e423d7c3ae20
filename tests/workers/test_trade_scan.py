"""The compiled trade paths (``trade_scan``: Binance trade/aggTrade, Bybit publicTrade,
OKX trades) against msgspec, the general path's decoder: on every recorded trade frame they
commit exactly the records the general path would, and on 100,000 mutated frames per exchange
they either agree with msgspec or decline without committing anything (never accepting what
msgspec rejects)."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from pathlib import Path

import msgspec
import numpy as np
import pytest
from test_feed_fuzz import mutate

import shm
from shm.layout import FLAG_ID_HASHED
from workers.exchanges import binance, bybit
from workers.exchanges.binance_scan import scan_binance_trade
from workers.exchanges.bybit_wire import aggressor_side, trade_id
from workers.exchanges.feed import Count, SymbolSpec
from workers.exchanges.json_scan import DECLINED, parse_decimal
from workers.exchanges.okx_wire import decode_trade_push
from workers.exchanges.push_scan import scan_push_trades
from workers.exchanges.records import Collector, Emitter
from workers.exchanges.replay import load_frames, replay

DATA = Path(__file__).resolve().parents[1] / "data" / "recorded" / "binance"
BYBIT = DATA.parent / "bybit" / "cryptofeed_linear_v5_20260809.frames.jsonl"
OKX = [DATA.parent / "okx" / f"cryptofeed_{name}.frames.jsonl"
       for name in ("books_3inst_20220513", "books-l2-tbt_10inst_20210722_conn1")]
_CONTRACT = 0.01   # OKX: sizes are contracts of 0.01 base (or, inverse, of 0.01 quote)
RECORDINGS = ("hftbacktest_usdm_btcusdt_20240808.frames.jsonl.gz",
              "hftbacktest_spot_btcusdt_20240808.frames.jsonl.gz",
              "cryptofeed_usdm_4sym_20210722.frames.jsonl")
_FIELDS = ("ts_exchange_ns", "ts_recv_ns", "ts_mono_ns", "symbol_id", "exchange", "market",
           "flags", "price", "qty", "trade_id", "side")


def _trade_frames() -> list[tuple[str, bytes]]:
    """``(id key, frame)`` of every trade (``t``) and aggTrade (``a``) frame recorded."""
    out = []
    for name in RECORDINGS:
        for _, frame in load_frames(DATA / name):
            stream = frame[11:frame.find(b'"', 11)]
            if stream.endswith(b"@trade"):
                out.append(("t", frame))
            elif stream.endswith(b"@aggTrade"):
                out.append(("a", frame))
    return out


def _bybit_frames() -> list[tuple[str, bytes]]:
    return [("i", f) for _, f in load_frames(BYBIT) if f.startswith(b'{"topic":"publicTrade.')]


def _okx_frames() -> list[tuple[str, bytes]]:
    frames = [f for path in OKX for _, f in load_frames(path)
              if f.startswith(b'{"arg":{"channel":"trades"')]
    # every push twice: contracts of a linear and of an inverse instrument
    return [(k, f) for f in frames for k in ("okx", "okx-inverse")]


class Ring:
    """A trades ring and the route rows of symbol 0 (market 2) for both id keys."""

    def __init__(self) -> None:
        self.name = shm.segment_name("t" + uuid.uuid4().hex[:8], "binance", "trades")
        self.writer = shm.Writer(self.name, shm.TRADE, 1 << 16)
        self.emitter = Emitter(1, {"trades": self.writer})
        self.routes = {k: self.emitter.trade_route(0, 2, fmt)
                       for k, fmt in (("t", "trade"), ("a", "aggTrade"), ("i", "bybit"))}
        for key, inverse in (("okx", False), ("okx-inverse", True)):
            self.routes[key] = self.emitter.trade_route(0, 2, "okx")
            self.emitter.set_trade_contract(self.routes[key], _CONTRACT, inverse)
        self.reader = shm.Reader(self.name)

    def scan(self, id_key: str, frame: bytes, n: int) -> tuple[int, np.ndarray]:
        """The kernel's result and what it committed."""
        if id_key == "i":
            result = scan_push_trades(frame, frame.find(b'"', 10), self.routes["i"],
                                      1000 + n, n)
        elif id_key.startswith("okx"):
            result = scan_push_trades(frame, frame.find(b"}", 19), self.routes[id_key],
                                      1000 + n, n)
        else:
            result = scan_binance_trade(frame, frame.find(b'"', 11), self.routes[id_key],
                                        1000 + n, n)
        return result, self.reader.poll()

    def close(self) -> None:
        self.emitter.close()
        self.reader.close()
        self.writer.close(unlink=True)


@pytest.fixture
def ring() -> Iterator[Ring]:
    r = Ring()
    yield r
    r.close()


def _reference(id_key: str, frame: bytes, n: int) -> list[tuple[object, ...]] | None:
    """The general path's record fields for ``frame`` (None where msgspec rejects it)."""
    if id_key == "i":
        try:
            items = bybit._decode_trades(frame).data
        except (msgspec.DecodeError, ValueError):
            return None
        out = []
        for t in items:
            tid, hashed = trade_id(t.i)
            if not 0 <= t.T * 1_000_000 < 2**63:
                return None   # the general path's pack refuses it (a decode error)
            out.append((t.T * 1_000_000, 1000 + n, n, 0, 1, 2, FLAG_ID_HASHED if hashed else 0,
                        t.p, t.v, tid, aggressor_side(t.S)))
        return out
    if id_key.startswith("okx"):
        try:
            push = decode_trade_push(frame)
            if push.event:
                return None   # the general path answers events: the kernel must decline
            out = []
            for t in push.data:
                base = t.sz * _CONTRACT if id_key == "okx" else \
                    t.sz * _CONTRACT / t.px if t.px > 0 else float("nan")
                if not 0 <= t.ts * 1_000_000 < 2**63:
                    return None
                out.append((t.ts * 1_000_000, 1000 + n, n, 0, 1, 2, 0, t.px, base,
                            int(t.tradeId), 1 if t.side == "buy" else -1))
            return out
        except (msgspec.DecodeError, ValueError):
            return None
    decode = binance._DECODERS[binance._AGG if id_key == "a" else binance._TRADE]
    try:
        ev = decode(frame).data
    except (msgspec.DecodeError, ValueError):
        return None
    return [(ev.T * 1_000_000, 1000 + n, n, 0, 1, 2, 0, ev.p, ev.q,
             ev.a if id_key == "a" else ev.t, -1 if ev.m else 1)]


def _fields(rec: np.void) -> tuple[object, ...]:
    return tuple(rec[f].item() for f in _FIELDS)


def _same(a: tuple[object, ...], b: tuple[object, ...]) -> bool:
    # floats compared bit for bit: -0.0 and 0.0 differ, NaN never comes out of the kernel
    return [np.float64(x).tobytes() if isinstance(x, float) else x for x in a] == \
        [np.float64(x).tobytes() if isinstance(x, float) else x for x in b]


def _agree(got: np.ndarray, ref: list[tuple[object, ...]]) -> bool:
    return len(got) == len(ref) and all(_same(_fields(g), r) for g, r in zip(got, ref,
                                                                              strict=True))


def test_every_recorded_trade_is_committed_as_msgspec_decodes_it(ring: Ring) -> None:
    frames = _trade_frames()
    assert sum(k == "t" for k, _ in frames) == 21_313 + 9_757   # README: usdm + spot trades
    assert sum(k == "a" for k, _ in frames) == 91               # cryptofeed aggTrade
    bybit_frames = _bybit_frames()
    assert len(bybit_frames) == 102                             # README
    okx_frames = _okx_frames()
    assert len(okx_frames) == 2 * (74 + 36)
    multi = 0
    for n, (id_key, frame) in enumerate(frames + bybit_frames + okx_frames):
        result, got = ring.scan(id_key, frame, n)
        ref = _reference(id_key, frame, n)
        assert ref is not None and result != DECLINED, frame
        assert _agree(got, ref), (frame, got, ref)
        assert result == (got[0]["trade_id"] if id_key in "ta" else len(got))
        multi += len(got) > 1
    assert multi > 10   # Bybit pushes carrying several trades were among them


@pytest.mark.parametrize("exchange", ["binance", "bybit", "okx"])
def test_mutated_frames_agree_with_msgspec_or_are_declined(ring: Ring, exchange: str) -> None:
    frames = {"binance": _trade_frames, "bybit": _bybit_frames, "okx": _okx_frames}[exchange]()
    rng = random.Random(20261122)
    accepted = declined = rejected = 0
    for n in range(100_000):
        id_key, frame = frames[rng.randrange(len(frames))]
        bad = mutate(rng, frame)
        tid, got = ring.scan(id_key, bad, n)
        ref = _reference(id_key, bad, n)
        if tid == DECLINED:
            assert len(got) == 0, bad   # nothing committed
            declined += 1
            rejected += ref is None
            continue
        assert ref is not None, bad     # never accepts what msgspec rejects
        assert _agree(got, ref), (bad, got, ref)
        accepted += 1
    # both sides were reached: valid mutations (digits, unknown keys) and broken ones
    assert accepted > 10_000 and declined > 10_000 and rejected > 10_000


def test_decimals_convert_exactly_or_not_at_all() -> None:
    rng = random.Random(7)
    for _ in range(20_000):
        whole = str(rng.randrange(10 ** rng.randrange(1, 10)))
        frac = "".join(rng.choice("0123456789") for _ in range(rng.randrange(0, 9)))
        text = ("-" if rng.random() < 0.2 else "") + whole + ("." + frac if frac else "")
        buf = text.encode()
        value = parse_decimal(buf, 0, len(buf))
        significant = len((whole + frac).lstrip("0"))
        if significant == 0 and text.startswith("-"):
            assert value != value, text   # negative zero: left to msgspec
        elif significant <= 15:
            assert value == float(text) and np.signbit(value) == np.signbit(float(text)), text
        else:
            assert value != value, text   # NaN: left to msgspec
    for text in (b"1.", b"1..2", b"0.00000000000000000000001"):   # malformed, 23 decimals
        assert parse_decimal(text, 0, len(text)) != parse_decimal(text, 0, len(text))


def test_a_closed_emitter_and_a_collector_take_the_general_path(ring: Ring) -> None:
    frame = _trade_frames()[0][1]
    assert ring.scan("t", frame, 0)[0] != DECLINED
    ring.emitter.close()
    tid, got = ring.scan("t", frame, 1)
    assert tid == DECLINED and len(got) == 0
    assert Emitter(1, {"trades": Collector(shm.TRADE)}).trade_route(0, 2, "trade") == 0


@pytest.mark.parametrize("exchange", ["binance", "bybit", "okx"])
def test_the_feed_commits_through_the_kernel_what_replay_produces(exchange: str) -> None:
    """The whole feed: a feed writing a ring (fast path) and the offline replay (Collector:
    general path) give the same trades for a recording."""
    if exchange == "binance":
        path = DATA / RECORDINGS[0]
        snapshots = [DATA / "hftbacktest_usdm_btcusdt_20240808.rest_depth_snapshot.json"]
        expected_count = 21_313
    elif exchange == "bybit":
        path, snapshots, expected_count = BYBIT, [], 113   # 102 pushes, several multi-trade
    else:
        path, snapshots, expected_count = OKX[0], [], 74
    _, sink = replay(exchange, path, snapshots)
    expected = np.concatenate([c for stream, c in sink.chunks if stream == "trades"])
    name = shm.segment_name("t" + uuid.uuid4().hex[:8], exchange, "trades")
    writer = shm.Writer(name, shm.TRADE, 1 << 16)
    reader = shm.Reader(name)
    emitter = Emitter(int(expected[0]["exchange"]), {"trades": writer})
    try:
        feed, _ = replay(exchange, path, snapshots, emitter=emitter)
        assert all(feed._fast_trades.values())   # type: ignore[attr-defined]
        batches = [reader.poll()]
        while len(batches[-1]):
            batches.append(reader.poll())
        got = np.concatenate(batches)
        assert feed.counts[Count.DECODE_ERRORS] == 0
        assert len(got) == len(expected) >= expected_count
        for f in _FIELDS:
            assert np.array_equal(got[f], expected[f]), f
    finally:
        emitter.close()
        reader.close()
        writer.close(unlink=True)


def test_spec_without_trades_has_no_route() -> None:
    feed = binance.BinanceFeed([SymbolSpec("BTCUSDT", "linear", ("bbo",), 0)],
                               Emitter(1, {}))
    assert feed._fast_trades == {}   # type: ignore[attr-defined]


def test_an_unknown_frame_format_is_refused_by_name(ring: Ring) -> None:
    with pytest.raises(ValueError, match="format 'kraken' is not one of"):
        ring.emitter.trade_route(0, 2, "kraken")
