"""Offline replay: a capture through the live decode → book → record path, records as JSON lines.

``replay(exchange, frames_file, rest_snapshots)`` loads every frame (the recordings' format,
``NAME.frames.jsonl[.gz]`` with an optional receive-time sidecar, or the engine's capture
format, gz lines ``"{ts_ns} {frame}"``), builds the exchange's feed with the symbols found in
the frames, and calls ``feed.on_frame`` for each, exactly as a worker does. Outputs are
:class:`~workers.exchanges.records.Collector`\\ s that keep records in commit order.

Binance REST snapshots (``--rest-snapshot``) are matched to symbols by file name
(``*.rest_depth_<SYMBOL>.json``, or a single ``*.rest_depth_snapshot.json`` for the only
book) and applied where the recording says the answer arrived: before the first depth event
with a later exchange time than the snapshot's ``E`` when it has one, otherwise at the start
(events before it are buffered, as live). Requests for resubscription cannot be served
offline: such a book stays RESYNCING until the stream itself sends a snapshot.
"""

from __future__ import annotations

import gzip
import math
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from shm.layout import FLAG_CHECKSUM_OK, STREAMS, BookState, Side, book_dtype

from .feed import Feed
from .records import FEED_STREAMS, Emitter

__all__ = ["ReplayError", "ReplaySink", "load_frames", "make_feed", "replay", "write_jsonl"]

# bus stream name -> the replay line's "stream"
LINE_STREAM = {"trades": "trade", "bbo": "bbo", "depth": "depth", "book": "book",
               "liquidations": "liquidation", "funding": "funding",
               "open_interest": "open_interest"}
_CAPTURE = re.compile(rb"^(\d{10,20}) (.*)$", re.S)
_SIDE = {int(Side.BUY): "BUY", int(Side.SELL): "SELL", 0: ""}


class ReplayError(ValueError):
    """A replay input is missing, unreadable or does not fit the exchange."""


class ReplaySink:
    """Outputs for every feed stream that keep ``(stream, record)`` in global commit order."""

    class _Out:
        def __init__(self, sink: ReplaySink, stream: str, dtype: np.dtype) -> None:
            self.sink, self.stream, self.dtype = sink, stream, dtype
            self._stage = np.zeros(1, self.dtype)

        @property
        def stage(self) -> np.ndarray:
            return self._stage

        def commit_staged(self) -> int:
            self.sink.chunks.append((self.stream, self._stage.copy()))
            return len(self.sink.chunks) - 1

        def commit(self, record: object) -> int:
            self._stage[0] = record
            return self.commit_staged()

        def commit_batch(self, records: np.ndarray) -> int:
            self.sink.chunks.append((self.stream, records.copy()))
            return len(self.sink.chunks) - 1

    def __init__(self, book_depth: int = 20) -> None:
        self.chunks: list[tuple[str, np.ndarray]] = []  # one per commit, in commit order
        self.outputs = {s: ReplaySink._Out(self, s, book_dtype(book_depth) if s == "book"
                                           else STREAMS[s]) for s in FEED_STREAMS}

    def records(self) -> Iterator[tuple[str, Any]]:
        """``(stream, record)`` for every committed record, in commit order."""
        for stream, chunk in self.chunks:
            for rec in chunk:
                yield stream, rec

    def count(self, stream: str) -> int:
        """Records committed to ``stream``."""
        return sum(len(c) for s, c in self.chunks if s == stream)


def load_frames(path: str | Path) -> list[tuple[int, bytes]]:
    """``(receive ns or 0, frame)`` for every line of a recording or capture file."""
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise ReplayError(f"{path}: cannot read: {exc}") from None
    lines = [line for line in raw.split(b"\n") if line.strip()]
    stamps: list[int] = []
    stem = path.name.split(".frames.jsonl")[0]
    ns_file, ts_file = path.with_name(stem + ".recv_ns.txt.gz"), path.with_name(
        stem + ".recv_ts.txt")
    if ns_file.exists():
        stamps = [int(x) for x in gzip.decompress(ns_file.read_bytes()).split()]
    elif ts_file.exists():
        stamps = [round(float(x) * 1e9) for x in ts_file.read_bytes().split()]
    out = []
    for i, line in enumerate(lines):
        m = _CAPTURE.match(line) if not line.startswith((b"{", b"[")) else None
        if m:
            out.append((int(m.group(1)), m.group(2)))
        else:
            out.append((stamps[i] if i < len(stamps) else 0, line))
    return out


def feed_class(exchange: str) -> type[Feed]:
    """The feed class of ``exchange``."""
    if exchange == "binance":
        from .binance import BinanceFeed
        return BinanceFeed
    if exchange == "bybit":
        from .bybit import BybitFeed
        return BybitFeed
    if exchange == "okx":
        from .okx import OkxFeed
        return OkxFeed
    raise ReplayError(f"unknown exchange {exchange!r}; use binance, bybit or okx")


def make_feed(exchange: str, frames: list[bytes], emitter: Emitter,
              market: str | None = None) -> Feed:
    """The feed of ``exchange`` for the symbols and streams found in ``frames`` (default
    endpoints; no I/O happens). ``market`` overrides what the frames suggest."""
    cls = feed_class(exchange)
    symbols, options = cls.discover(frames, market)
    if not symbols:
        raise ReplayError(f"no {exchange} market data frames found")
    return cls(symbols, emitter, **options)


def _snapshot_symbol(path: Path, books: list[str]) -> str:
    m = re.search(r"\.rest_depth_([A-Za-z0-9_-]+)\.json$", path.name)
    tag = m.group(1).upper() if m else ""
    if tag and tag != "SNAPSHOT":
        return tag
    if len(books) == 1:
        return books[0]
    raise ReplayError(f"{path}: cannot tell which symbol this snapshot belongs to "
                      f"(books: {', '.join(books) or 'none'}); name it *.rest_depth_SYMBOL.json")


def replay(exchange: str, frames_file: str | Path, rest_snapshots: list[str | Path] = (),  # type: ignore[assignment]
           book_depth: int = 20, market: str | None = None, emitter: Emitter | None = None,
           on_frame: Callable[[int], None] | None = None) -> tuple[Feed, ReplaySink]:
    """Run a capture through the feed; returns the feed (counters, books) and the sink.

    ``emitter`` replaces the sink's (its outputs get the records; the sink stays empty);
    ``on_frame(i)`` is called after frame ``i`` (for example to drain rings)."""
    frames = load_frames(frames_file)
    sink = ReplaySink(book_depth)
    if emitter is None:
        emitter = Emitter(_exchange_id(exchange), sink.outputs, book_depth=book_depth)
    try:
        feed = make_feed(exchange, [f for _, f in frames], emitter, market)
    except ReplayError as exc:
        raise ReplayError(f"{frames_file}: {exc}") from None
    by_name = {feed.symbols[sid].symbol: sid for sid in feed.books}
    snapshots: dict[int, tuple[bytes, int]] = {}   # sid -> (body, apply before exchange ms)
    for snap in rest_snapshots:
        snap = Path(snap)
        try:
            body = snap.read_bytes()
        except OSError as exc:
            raise ReplayError(f"{snap}: cannot read: {exc.strerror}") from None
        name = _snapshot_symbol(snap, sorted(by_name))
        if name not in by_name:
            raise ReplayError(f"{snap}: symbol {name} has no book in {frames_file}")
        head = msgspec.json.decode(body, type=dict[str, Any]) if body.strip() else {}
        snapshots[by_name[name]] = (body, int(head.get("E", 0)) if isinstance(head, dict)
                                    else 0)
    conn = "*"
    for i, (recv, frame) in enumerate(frames):
        for sid, (body, at_ms) in list(snapshots.items()):
            if at_ms == 0 or _event_ms(frame, feed.symbols[sid].symbol) > at_ms:
                _serve_snapshot(feed, sid, body, recv)
                del snapshots[sid]
        feed.on_frame(conn, frame, recv, 0)
        if on_frame is not None:
            on_frame(i)
    for sid, (body, _) in snapshots.items():  # never reached in the stream: apply at the end
        _serve_snapshot(feed, sid, body, frames[-1][0] if frames else 0)
    return feed, sink


def _serve_snapshot(feed: Feed, sid: int, body: bytes, recv: int) -> None:
    on_snapshot = getattr(feed, "on_snapshot", None)
    if on_snapshot is None:
        raise ReplayError(f"{feed.name}: REST snapshots are not used by this exchange")
    on_snapshot(sid, body, recv, 0)
    for req in list(feed.pending):
        if req.symbol_id == sid and req.kind == "snapshot":
            feed.done(req)


def _event_ms(frame: bytes, symbol: str) -> int:
    """Exchange time of a Binance depth event of ``symbol`` in ``frame`` (0 otherwise)."""
    if b"depthUpdate" not in frame or f'"s":"{symbol}"'.encode() not in frame:
        return 0
    m = re.search(rb'"E":(\d+)', frame)
    return int(m.group(1)) if m else 0


def _exchange_id(exchange: str) -> int:
    from shm.layout import Exchange
    try:
        return int(Exchange[exchange.upper()])
    except KeyError:
        raise ReplayError(f"unknown exchange {exchange!r}; use binance, bybit or okx") from None


def lines(feed: Feed, sink: ReplaySink) -> Iterator[dict[str, Any]]:
    """One dict per committed record (see the module docstring for the shape)."""
    names = {sid: s.symbol for sid, s in feed.symbols.items()}
    for stream, chunk in sink.chunks:
        fields = [f for f in chunk.dtype.names or () if stream != "book" or f not in _ARRAYS]
        for rec, values in zip(chunk, chunk[fields].tolist(), strict=True):
            yield _line(feed.name, stream, names, rec, dict(zip(fields, values, strict=True)))


_ARRAYS = ("bid_px", "bid_qty", "ask_px", "ask_qty", "n_bids", "n_asks")


def _line(exchange: str, stream: str, names: dict[int, str], rec: Any,
          values: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"stream": LINE_STREAM[stream],
                               "symbol": names.get(values["symbol_id"], "")}
        for key, value in values.items():
            out[key] = None if isinstance(value, float) and math.isnan(value) else value
        if "side" in out:
            out["side"] = _SIDE.get(out["side"], out["side"]) if stream != "depth" else (
                "bid" if out["side"] > 0 else "ask")
        if "state" in out:
            out["state"] = BookState(out["state"]).name
        if stream == "book":
            nb_, na = int(rec["n_bids"]), int(rec["n_asks"])
            out["bids"] = [[float(p), float(q)] for p, q in zip(rec["bid_px"][:nb_],
                                                                  rec["bid_qty"][:nb_],
                                                                  strict=True)]
            out["asks"] = [[float(p), float(q)] for p, q in zip(rec["ask_px"][:na],
                                                                  rec["ask_qty"][:na],
                                                                  strict=True)]
            if exchange == "okx":
                out["checksum_ok"] = bool(int(rec["flags"]) & FLAG_CHECKSUM_OK)
        return out


def write_jsonl(feed: Feed, sink: ReplaySink, out: str | Path) -> int:
    """Write :func:`lines` to ``out``; returns the number of lines."""
    enc = msgspec.json.Encoder()
    n = 0
    with open(out, "wb") as f:
        for line in lines(feed, sink):
            f.write(enc.encode(line) + b"\n")
            n += 1
    return n
