"""Order books at a point of the replay timeline, for clients that (re)synchronise mid-replay.

Every connection replays the shared timeline from its start; its ``position`` (see ``server.py``)
says how far it got. Two things need the book *there*, not at the start of the timeline:

* Binance REST depth (``/api/v3/depth``, ``/fapi/v1/depth``): the known snapshot (the recording's
  REST file, or the synthetic start book) advanced by the symbol's diff-depth events with
  ``u > lastUpdateId`` up to the position, its ``lastUpdateId`` then the ``u`` of the last event
  applied. Binance's documented bridge then holds for the events the client receives next (USD-M
  ``U <= id <= u`` or ``pu == id``; spot ``U <= id + 1 <= u``), so a resync after a gap works.
* Bybit ``orderbook.N`` and OKX ``books``/``books-l2-tbt``/``books50-l2-tbt`` topics subscribed
  after the replay started: a snapshot message built from the topic's last snapshot frame before
  the next frame plus the deltas since, so that next delta continues the sequence (Bybit
  ``u + 1``, OKX ``prevSeqId == seqId``) and OKX checksums verify. Channels whose every message
  is a whole book (OKX ``bbo-tbt``, ``books5``) need nothing.

Levels keep the exchange's exact price and size strings (a size of only zeros deletes); prices are
compared as floats, which is exact for the few significant digits exchanges quote. Books are kept
between requests: a request at or after the previous one's position applies only the frames in
between; an earlier position (a ``--loop`` restart, a connection behind another) starts over from
the nearest snapshot. That work runs on the event loop: a first request far into a long timeline
applies everything before it at once (the 6,551 USD-M depth events of the BTCUSDT recording take
about half a second), later ones only what the replay sent since.
"""

from __future__ import annotations

import heapq
import re
from bisect import bisect_right
from collections.abc import Callable
from typing import Any

import msgspec

from .synthetic import okx_checksum

__all__ = ["DepthBooks", "TopicBooks"]

_json = msgspec.json.Encoder()
Rows = list[list[str]]


class _Book:
    """Both sides of a book: float price → the exchange's row, exact strings as received."""

    __slots__ = ("_sorted", "asks", "bids")

    def __init__(self, bids: Rows | None = None, asks: Rows | None = None) -> None:
        self.bids: dict[float, list[str]] = {}
        self.asks: dict[float, list[str]] = {}
        self._sorted: tuple[Rows, Rows] | None = None
        self.apply(bids or [], asks or [])

    def apply(self, bids: Rows, asks: Rows) -> None:
        """Apply absolute levels: each size replaces the level's, a zero (``0.000``) deletes."""
        for side, rows in ((self.bids, bids), (self.asks, asks)):
            for row in rows:
                if row[1].strip("0."):
                    side[float(row[0])] = row
                else:
                    side.pop(float(row[0]), None)
        self._sorted = None

    def levels(self, limit: int | None = None) -> tuple[Rows, Rows]:
        """The best ``limit`` (default all) levels per side, best first. A full sort is cached
        until the next change; a few levels of a deep book are picked without sorting it."""
        if self._sorted is None and limit is not None and limit * 8 < len(self.bids) + len(
                self.asks):
            return ([self.bids[p] for p in heapq.nlargest(limit, self.bids)],
                    [self.asks[p] for p in heapq.nsmallest(limit, self.asks)])
        if self._sorted is None:
            self._sorted = ([self.bids[p] for p in sorted(self.bids, reverse=True)],
                            [self.asks[p] for p in sorted(self.asks)])
        bids, asks = self._sorted
        return (bids, asks) if limit is None else (bids[:limit], asks[:limit])


# -- Binance REST depth ---------------------------------------------------------------------
# Diff-depth streams only: the partial-depth streams (btcusdt@depth20@100ms) carry whole books.
_DIFF_DEPTH = re.compile(r"[a-z0-9]+@depth(@\d+ms)?")


class _DepthEvent(msgspec.Struct):
    U: int
    u: int
    b: Rows
    a: Rows
    E: int | None = None
    T: int | None = None


class _DepthFrame(msgspec.Struct):
    data: _DepthEvent


class _DepthState:
    """One REST key's book after the first ``applied`` of its depth frames."""

    def __init__(self, start: dict[str, Any]) -> None:
        self.book = _Book(start["bids"], start["asks"])
        self.applied = 0
        self.last_id: int = start["lastUpdateId"]
        self.times: dict[str, int] = {}  # E and T of the last event applied


class DepthBooks:
    """Binance REST depth bodies at a timeline position, keyed ``api:SYMBOL``/``fapi:SYMBOL``."""

    def __init__(self, snapshots: dict[str, bytes], topics: list[str],
                 frames: list[bytes]) -> None:
        self._start: dict[str, dict[str, Any]] = {
            key: msgspec.json.decode(body) for key, body in snapshots.items()}
        self._topics, self._frames = topics, frames
        self.feeds: dict[str, set[str]] = {}  # REST key → the diff-depth topics moving its book
        for topic in set(topics):
            if _DIFF_DEPTH.fullmatch(topic):
                first = frames[topics.index(topic)]  # USD-M events carry pu, spot ones do not
                market = "fapi" if b'"pu":' in first else "api"
                self.feeds.setdefault(f"{market}:{topic.split('@')[0].upper()}", set()).add(topic)
        self._indices: dict[str, list[int]] = {}  # REST key → timeline indices of its events
        self._state: dict[str, _DepthState] = {}
        self._decode = msgspec.json.Decoder(_DepthFrame)

    def body(self, key: str, position: int, limit: int) -> dict[str, object] | None:
        """The REST body for ``key`` once the timeline is played up to index ``position``
        (``-1``: the known snapshot itself), best ``limit`` levels per side; None: no such key."""
        start = self._start.get(key)
        if start is None:
            return None
        state = self._advance(key, start, position)
        body = dict(start)
        body["lastUpdateId"] = state.last_id
        body.update((k, v) for k, v in state.times.items() if k in body)
        body["bids"], body["asks"] = state.book.levels(limit)
        return body

    def _advance(self, key: str, start: dict[str, Any], position: int) -> _DepthState:
        indices = self._indices.get(key)
        if indices is None:
            feeds = self.feeds.get(key, set())
            indices = self._indices[key] = [i for i, t in enumerate(self._topics) if t in feeds]
        state = self._state.get(key)
        if state is None or (state.applied and indices[state.applied - 1] > position):
            state = self._state[key] = _DepthState(start)  # first request, or went backwards
        start_id = start["lastUpdateId"]
        stop = bisect_right(indices, position)
        for i in indices[state.applied:stop]:
            event = self._decode.decode(self._frames[i]).data
            if event.u <= start_id:  # older than the snapshot: Binance says drop it
                continue
            state.book.apply(event.b, event.a)
            state.last_id = event.u
            state.times = {k: v for k, v in (("E", event.E), ("T", event.T)) if v is not None}
        state.applied = max(state.applied, stop)
        return state


# -- Bybit and OKX snapshot messages --------------------------------------------------------
_OKX_INCREMENTAL = {"books", "books-l2-tbt", "books50-l2-tbt"}  # snapshot, then updates
_SNAPSHOT_MARK = {"bybit": b'"type":"snapshot"', "okx": b'"action":"snapshot"'}


class _BybitData(msgspec.Struct):
    s: str
    b: Rows
    a: Rows
    u: int
    seq: int | None = None


class _BybitBook(msgspec.Struct):
    type: str
    ts: int
    data: _BybitData
    cts: int | None = None


class _OkxLevels(msgspec.Struct):
    asks: Rows
    bids: Rows
    ts: str
    seqId: int | None = None


class _OkxBook(msgspec.Struct):
    arg: dict[str, str]
    data: list[_OkxLevels]
    action: str = ""


def _incremental(exchange: str, topic: str) -> bool:
    """A topic sent as a snapshot followed by deltas (rather than a whole book each time)."""
    if exchange == "bybit":
        return topic.startswith("orderbook.")
    return exchange == "okx" and topic.split(":")[0] in _OKX_INCREMENTAL


class _TopicState:
    """One topic's book after the first ``applied`` of its frames, and the last one's fields."""

    def __init__(self) -> None:
        self.book = _Book()
        self.applied = 0
        self.last: _BybitBook | _OkxBook | None = None


class TopicBooks:
    """Snapshot messages of Bybit/OKX incremental book topics at a point of the timeline."""

    def __init__(self, exchange: str, topics: list[str], frames: list[bytes]) -> None:
        self.exchange = exchange
        self._topics, self._frames = topics, frames
        self._mark = _SNAPSHOT_MARK.get(exchange, b"")
        self._books = {t for t in set(topics) if _incremental(exchange, t)}
        self._indices: dict[str, tuple[list[int], list[int]]] = {}  # all frames, snapshots
        self._state: dict[str, _TopicState] = {}
        self._decode: Callable[[bytes], _BybitBook | _OkxBook] = (
            msgspec.json.Decoder(_BybitBook) if exchange == "bybit" else
            msgspec.json.Decoder(_OkxBook)).decode

    def resyncs(self, topic: str) -> bool:
        """True for a topic of this timeline whose deltas need a snapshot first."""
        return topic in self._books

    def snapshot_for(self, i: int) -> bytes | None:
        """The message to send before frame ``i`` to a connection without that topic's book:
        a snapshot of the book just before frame ``i``; ``b""`` if frame ``i`` is itself a
        snapshot (nothing to add); None if no snapshot of the topic precedes it (nothing to
        build from: the frame must not be sent either)."""
        if self._frames[i].find(self._mark, 0, 256) >= 0:
            return b""
        topic = self._topics[i]
        indices, snapshots = self._index(topic)
        last_snapshot = bisect_right(snapshots, i - 1) - 1
        if last_snapshot < 0:
            return None
        first = bisect_right(indices, snapshots[last_snapshot] - 1)  # the snapshot's slot
        stop = bisect_right(indices, i - 1)
        state = self._state.get(topic)
        if state is None or not first < state.applied <= stop:  # nothing reusable
            state = self._state[topic] = _TopicState()
            state.applied = first
        for j in indices[state.applied:stop]:
            msg = self._decode(self._frames[j])
            if isinstance(msg, _BybitBook):
                snapshot, changes = msg.type == "snapshot", [(msg.data.b, msg.data.a)]
            else:
                snapshot, changes = msg.action == "snapshot", [(d.bids, d.asks) for d in msg.data]
            if snapshot:
                state.book = _Book()
            for bids, asks in changes:
                state.book.apply(bids, asks)
            state.last = msg
        state.applied = stop
        return self._render(topic, state)

    def _index(self, topic: str) -> tuple[list[int], list[int]]:
        found = self._indices.get(topic)
        if found is None:
            indices = [i for i, t in enumerate(self._topics) if t == topic]
            snapshots = [i for i in indices if self._frames[i].find(self._mark, 0, 256) >= 0]
            found = self._indices[topic] = (indices, snapshots)
        return found

    def _render(self, topic: str, state: _TopicState) -> bytes:
        bids, asks = state.book.levels()
        last = state.last
        if isinstance(last, _BybitBook):
            data: dict[str, object] = {"s": last.data.s, "b": bids, "a": asks, "u": last.data.u}
            if last.data.seq is not None:
                data["seq"] = last.data.seq
            msg: dict[str, object] = {"topic": topic, "type": "snapshot", "ts": last.ts,
                                      "data": data}
            if last.cts is not None:
                msg["cts"] = last.cts
            return _json.encode(msg)
        assert isinstance(last, _OkxBook)
        newest = last.data[-1]
        levels: dict[str, object] = {"asks": asks, "bids": bids, "ts": newest.ts,
                                     "checksum": okx_checksum(bids, asks)}
        if newest.seqId is not None:  # current OKX streams; the 2021/2022 recordings predate it
            levels.update(prevSeqId=-1, seqId=newest.seqId)
        return _json.encode({"arg": last.arg, "action": "snapshot", "data": [levels]})
