"""Order books and sequence rules of the naive pipeline (:mod:`naive_pipeline`), without I/O.

Books are plain dicts, price → quantity (floats) per side; the top levels come from
``sorted()``. Each exchange's rules are the documented ones, checked on every message:

* Binance USD-M diff depth: buffer events until the REST snapshot is in, drop events with
  ``u < lastUpdateId``, the first applied event must bridge (``U <= lastUpdateId <= u``, or
  ``pu == lastUpdateId``), every later one must have ``pu ==`` the previous ``u``.
* Bybit ``orderbook.N``: a ``snapshot`` (or any message with ``u == 1``) resets the book, a
  ``delta`` must have ``u ==`` previous ``u + 1``.
* OKX ``books``: ``snapshot`` resets, an ``update`` must have ``prevSeqId ==`` the previous
  ``seqId``, and the CRC32 checksum of the top 25 levels must match after every message.

A level with quantity zero is removed; a crossed book (best bid ≥ best ask) is a break. Every
``on_*`` method returns a verdict; on a break the book is already reset and the caller resyncs
(Binance: a new snapshot; Bybit and OKX: resubscribe).
"""

from __future__ import annotations

import zlib
from typing import Any

__all__ = ["APPLIED", "CHECKSUM", "CROSSED", "GAP", "STALE", "TOP_N", "WAIT", "BinanceDepth",
           "Book", "BybitBook", "OkxBook"]

TOP_N = 20               # levels per side published
MAX_BUFFERED = 10_000    # Binance depth events kept per symbol while a snapshot is on its way
# verdicts
APPLIED = "applied"      # applied: publish ``top``
WAIT = "wait"            # syncing: buffered (Binance) or dropped until the snapshot (Bybit, OKX)
STALE = "stale"          # Binance: older than the snapshot, dropped
GAP = "gap"              # the sequence broke: resync
CROSSED = "crossed"      # the book crossed: resync
CHECKSUM = "checksum"    # OKX: checksum mismatch: resync

Levels = list[tuple[float, float]]
Event = tuple[dict[str, Any], int]   # a Binance depth event and its receive time


class Book:
    """Both sides of an L2 book: price → quantity (floats). With ``strings`` it also keeps each
    level as the exchange sent it, ``[price, size, ...]`` (the OKX checksum is over those)."""

    def __init__(self, strings: bool = False) -> None:
        self.bids: dict[float, float] = {}
        self.asks: dict[float, float] = {}
        self.rows: tuple[dict[float, list[str]], dict[float, list[str]]] | None = \
            ({}, {}) if strings else None

    def clear(self) -> None:
        """Empty both sides."""
        self.bids.clear()
        self.asks.clear()
        if self.rows is not None:
            self.rows[0].clear()
            self.rows[1].clear()

    def apply(self, bids: list[list[str]], asks: list[list[str]]) -> None:
        """Apply absolute levels ``[price, size, ...]``: a size of zero removes the level."""
        for i, (side, levels) in enumerate(((self.bids, bids), (self.asks, asks))):
            rows = self.rows[i] if self.rows is not None else None
            for level in levels:
                price, qty = float(level[0]), float(level[1])
                if qty == 0.0:
                    side.pop(price, None)
                    if rows is not None:
                        rows.pop(price, None)
                else:
                    side[price] = qty
                    if rows is not None:
                        rows[price] = level

    def top(self, n: int) -> tuple[Levels, Levels]:
        """The best ``n`` levels per side, best first: ``([(price, qty)], [(price, qty)])``."""
        return sorted(self.bids.items(), reverse=True)[:n], sorted(self.asks.items())[:n]


class _Sync:
    """A book, its sequence state and its top levels after the last applied message."""

    levels = TOP_N

    def __init__(self, strings: bool = False) -> None:
        self.book = Book(strings)
        self.top: tuple[Levels, Levels] = ([], [])

    def reset(self) -> None:
        """Forget the book (a resync starts)."""
        self.book.clear()

    def _applied(self) -> str:
        self.top = self.book.top(self.levels)
        return self._check()

    def _check(self) -> str:
        bids, asks = self.top
        if bids and asks and bids[0][0] >= asks[0][0]:
            self.reset()
            return CROSSED
        return APPLIED


class BinanceDepth(_Sync):
    """One symbol's USD-M diff-depth book, synced to REST snapshots."""

    def __init__(self) -> None:
        super().__init__()
        self.snapshot_id = -1   # lastUpdateId of the snapshot in use, -1 while waiting for one
        self.last_u = -1        # u of the last applied event, -1 before the bridge
        self.buffer: list[Event] = []

    def reset(self) -> None:
        super().reset()
        self.snapshot_id = self.last_u = -1
        self.buffer.clear()

    def on_event(self, d: dict[str, Any], ts: int) -> str:
        """One depth event: WAIT (no snapshot: buffered), STALE, APPLIED, GAP (buffered for
        the next snapshot) or CROSSED."""
        if self.snapshot_id < 0:
            self.buffer.append((d, ts))
            del self.buffer[:-MAX_BUFFERED]
            return WAIT
        first, last, prev = d["U"], d["u"], d["pu"]
        if self.last_u < 0:
            if last < self.snapshot_id:
                return STALE
            ok = first <= self.snapshot_id <= last or prev == self.snapshot_id
        else:
            ok = prev == self.last_u
        if not ok:
            self.reset()
            self.buffer.append((d, ts))
            return GAP
        self.book.apply(d["b"], d["a"])
        self.last_u = last
        return self._applied()

    def on_snapshot(self, body: dict[str, Any]) -> tuple[str, Event | None]:
        """Apply a REST depth snapshot, then the buffered events. ``(APPLIED, last applied
        event)``; ``(WAIT, None)``: no event bridged yet (the next ones will); ``(GAP or
        CROSSED, None)``: a new snapshot is needed (later events stay buffered)."""
        self.book.clear()
        self.book.apply(body["bids"], body["asks"])
        self.snapshot_id, self.last_u = body["lastUpdateId"], -1
        buffered, self.buffer = self.buffer, []
        verdict, last = WAIT, None
        for i, (d, ts) in enumerate(buffered):
            v = self.on_event(d, ts)
            if v == APPLIED:
                verdict, last = v, (d, ts)
            elif v in (GAP, CROSSED):
                self.buffer += buffered[i + 1:]
                return v, None
        return verdict, last


class BybitBook(_Sync):
    """One symbol's ``orderbook.N`` book."""

    def __init__(self) -> None:
        super().__init__()
        self.last_u = -1    # -1: waiting for a snapshot

    def reset(self) -> None:
        super().reset()
        self.last_u = -1

    def on_message(self, kind: str, d: dict[str, Any]) -> str:
        """One message (``kind`` "snapshot" or "delta"): APPLIED, WAIT, GAP or CROSSED."""
        u = d["u"]
        if kind == "snapshot" or u == 1:
            self.book.clear()
        elif self.last_u < 0:
            return WAIT
        elif u != self.last_u + 1:
            self.reset()
            return GAP
        self.book.apply(d["b"], d["a"])
        self.last_u = u
        return self._applied()


class OkxBook(_Sync):
    """One instrument's ``books`` book; ``top`` holds 25 levels (the checksum's)."""

    levels = 25

    def __init__(self) -> None:
        super().__init__(strings=True)
        self.last_seq = -1  # -1: waiting for a snapshot

    def reset(self) -> None:
        super().reset()
        self.last_seq = -1

    def on_message(self, action: str, d: dict[str, Any]) -> str:
        """One ``data`` item (``action`` "snapshot" or "update"): APPLIED, WAIT, GAP, CHECKSUM
        or CROSSED."""
        if action == "snapshot":
            self.book.clear()
        elif self.last_seq < 0:
            return WAIT
        elif "prevSeqId" in d and d["prevSeqId"] != self.last_seq:
            self.reset()
            return GAP
        self.book.apply(d["bids"], d["asks"])
        # books before mid-2022 carry no seqId (the recording's): the checksum alone checks
        # them, as in the engine
        self.last_seq = d.get("seqId", 0)
        self.top = self.book.top(self.levels)
        if self.checksum() != d["checksum"]:
            self.reset()
            return CHECKSUM
        return self._check()

    def checksum(self) -> int:
        """OKX's checksum of the top 25 levels: signed CRC32 of ``bid1px:bid1sz:ask1px:ask1sz:
        ...``, over the exchange's own strings."""
        (bids, asks), rows = self.top, self.book.rows
        assert rows is not None
        parts: list[str] = []
        for i in range(25):
            if i < len(bids):
                parts += rows[0][bids[i][0]][:2]
            if i < len(asks):
                parts += rows[1][asks[i][0]][:2]
        crc = zlib.crc32(":".join(parts).encode())
        return crc - (1 << 32) if crc >= 1 << 31 else crc
