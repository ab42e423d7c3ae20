"""Bus records → Redis payloads: one documented shape per event type.

Every payload is an object with ``exchange``, ``symbol`` (the exchange-native symbol,
lowercase), ``event_type``, ``timestamp`` (exchange time, ms), ``seq`` (the record's ring
sequence number) and ``ts_recv_ns`` (frame receipt, the bus's clock), plus the fields of its
type (the README's "Redis payloads" table). NaN values (a field an exchange does not
publish) are encoded as ``null``. ``encoding`` is ``"json"`` (default) or ``"msgpack"``.

:class:`PayloadEncoder` turns one batch of ring records into ``(event_type, symbol id,
payload, commit stamp)`` tuples; records are converted with one ``tolist()`` per batch and
the hot trade shape is a ``msgspec.Struct`` (no dict per message).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import msgspec
import numpy as np

from shm.layout import (
    ANALYTICS,
    BBO,
    BOOK,
    EVENT,
    FUNDING,
    LIQUIDATION,
    OPEN_INTEREST,
    TRADE,
    BookState,
    Market,
    Priority,
)

from ..detectors.events import VALUE_NAMES, EventKind
from .book_json import encode_books, payload_bound, text_table

__all__ = ["ANALYTICS_TYPES", "DEFAULT_PRIORITIES", "EVENT_TYPES", "STREAM_TYPES",
           "PayloadEncoder", "event_type_of", "warm_kernels"]

#: event type of each bus stream's records
STREAM_TYPES = {"trades": "trade", "bbo": "bbo", "book": "orderbook",
                "liquidations": "liquidation", "funding": "funding",
                "open_interest": "open_interest"}
#: event type of each detector event kind
EVENT_TYPES = {
    EventKind.WHALE_TRADE: "whale_alert", EventKind.WHALE_BURST: "whale_burst",
    EventKind.CANDLE: "candle", EventKind.BOOK_STATE: "book_state",
    EventKind.BOOK_CROSSED: "book_crossed", EventKind.LIQUIDATION: "liquidation_alert",
    EventKind.LIQUIDATION_CASCADE: "liquidation_cascade", EventKind.MOMENTUM: "momentum",
    EventKind.VOLATILITY: "volatility", EventKind.MEAN_REVERSION: "mean_reversion",
    EventKind.REGIME: "regime", EventKind.SPOOF: "spoof", EventKind.ICEBERG: "iceberg",
    EventKind.CHANNEL_SILENT: "channel_silent"}
assert set(EVENT_TYPES) == set(EventKind)
#: event types made from each analytics row, and the row's fields each carries
ANALYTICS_TYPES: dict[str, tuple[str, ...]] = {
    "cvd": ("cvd_1m", "cvd_5m", "cvd_15m", "cvd_session", "trade_count"),
    "stats_24h": ("volume_24h", "quote_volume_24h", "high_24h", "low_24h", "last",
                  "change_24h_pct"),
    "imbalance": ("imbalance", "mid", "spread"),
    "walls": ("bid_wall_px", "bid_wall_qty", "bid_wall_since_ns", "ask_wall_px", "ask_wall_qty",
              "ask_wall_since_ns"),
    "open_interest_delta": ("open_interest", "oi_delta_5m", "oi_delta_1h"),
    "funding_summary": ("funding_rate", "funding_predicted", "funding_spread", "basis"),
}
_C, _H, _M, _L = (int(p) for p in Priority)
#: default class of every event type (``[publisher] priorities`` overrides)
DEFAULT_PRIORITIES: dict[str, int] = {
    "liquidation_cascade": _C, "whale_alert": _C, "whale_burst": _C, "book_state": _C,
    "book_crossed": _C, "channel_silent": _C,
    "trade": _H, "bbo": _H, "liquidation": _H, "liquidation_alert": _H, "momentum": _H,
    "volatility": _H, "mean_reversion": _H, "regime": _H, "spoof": _H, "iceberg": _H,
    "funding": _M, "open_interest": _M, "candle": _M,
    **dict.fromkeys(ANALYTICS_TYPES, _M),
    "orderbook": _L,
}
_SIDES = {1: "BUY", -1: "SELL"}
_RENAME = {"qty": "quantity"}   # detector value names → payload field names
_MARKETS = {int(m): m.name.lower() for m in Market}
_STATES = {int(s): s.name for s in BookState}
_KINDS = {int(k): k for k in EventKind}
_PRIORITIES = {int(p): p.name for p in Priority}
_MS = 1_000_000


def event_type_of(stream: str, kind: int = 0) -> str:
    """The event type of a ``stream`` record (``events``: of detector event ``kind``)."""
    return EVENT_TYPES[EventKind(kind)] if stream == "events" else STREAM_TYPES[stream]


def _index(dtype: np.dtype) -> dict[str, int]:
    return {name: i for i, name in enumerate(dtype.names or ())}


class TradePayload(msgspec.Struct, gc=False):
    """``trade``."""

    exchange: str
    symbol: str
    event_type: str
    price: float
    quantity: float
    side: str | None
    timestamp: int
    trade_id: int
    market: str
    seq: int
    ts_recv_ns: int


_B, _K = _index(BBO), _index(BOOK)
_TRADE = ("symbol_id", "price", "qty", "side", "ts_exchange_ns", "trade_id", "market", "seq",
          "ts_recv_ns", "ts_commit_ns")
_COLUMNS_FROM = 32   # records in a batch from which _trades converts columns
assert [list(TRADE.fields or ())[i] for i in (5, 9, 10, 12, 1, 11, 7, 0, 2, 4)] == list(_TRADE)
_LQ, _F, _OI, _E = _index(LIQUIDATION), _index(FUNDING), _index(OPEN_INTEREST), _index(EVENT)
Item = tuple[str, int, bytes, int]   # event type, symbol id, payload, ring commit ns


class PayloadEncoder:
    """Payloads of one exchange whose symbols are ``names`` (by symbol id, as configured);
    ``compiled=False`` encodes JSON books through msgspec too (the reference the tests compare
    the compiled writer with)."""

    def __init__(self, exchange: str, names: Sequence[str], encoding: str = "json",
                 compiled: bool = True) -> None:
        if encoding not in ("json", "msgpack"):
            raise ValueError(f"encoding must be 'json' or 'msgpack', got {encoding!r}")
        self.exchange = exchange
        self.names = [n.lower() for n in names]
        self.unknown_kinds = 0   # event records skipped: a kind not in EventKind
        self.encode = (msgspec.json.Encoder() if encoding == "json"
                       else msgspec.msgpack.Encoder()).encode
        # orderbook JSON through the compiled writer (book_json: the same bytes)
        self.compiled_books = encoding == "json" and compiled
        prefixes = [msgspec.json.encode({"exchange": exchange, "symbol": n,
                                         "event_type": "orderbook", "timestamp": 0})[:-2]
                    for n in self.names]
        self._prefixes = text_table(prefixes)
        self._markets = text_table([msgspec.json.encode(_MARKETS.get(c, "none"))
                                    for c in range(256)])
        self._states = text_table([msgspec.json.encode(_STATES.get(c, "NONE"))
                                   for c in range(256)])
        self._book_out = np.zeros(0, np.uint8)
        self._book_ends = np.zeros(0, np.int64)
        self.books_declined = 0   # book records the compiled writer left to msgspec

    def symbol(self, sid: int) -> str:
        """Lowercase symbol of a symbol id (``sid<N>`` for one the config does not know)."""
        return self.names[sid] if 0 <= sid < len(self.names) else f"sid{sid}"

    def _base(self, event_type: str, row: Sequence[Any], ix: dict[str, int],
              sid: int) -> dict[str, Any]:
        return {"exchange": self.exchange, "symbol": self.symbol(sid), "event_type": event_type,
                "timestamp": row[ix["ts_exchange_ns"]] // _MS,
                "market": _MARKETS.get(row[ix["market"]], "none"), "seq": row[ix["seq"]],
                "ts_recv_ns": row[ix["ts_recv_ns"]]}

    def records(self, stream: str, records: np.ndarray) -> Iterator[Item]:
        """``(event type, symbol id, payload, commit ns)`` of each record of a ring batch."""
        if stream == "trades":
            return self._trades(records)
        if stream == "book" and self.compiled_books:
            return self._books(records)
        return getattr(self, "_" + stream)(records.tolist())

    def _trades(self, records: np.ndarray) -> Iterator[Item]:
        # the hot stream. A large batch goes column by column (≈ 10× cheaper per record than
        # rows from tolist()); a small one row by row (ten column views cost ≈ 5 µs)
        ex, enc, names = self.exchange, self.encode, self.names
        known = len(names)
        if len(records) < _COLUMNS_FROM:
            for r in records.tolist():   # positions: shm.TRADE's field order (checked below)
                sid = r[5]
                yield "trade", sid, enc(TradePayload(
                    ex, names[sid] if sid < known else self.symbol(sid), "trade", r[9], r[10],
                    _SIDES.get(r[12]), r[1] // _MS, r[11], _MARKETS.get(r[7], "none"), r[0],
                    r[2])), r[4]
            return
        for sid, price, qty, side, ts, trade_id, market, seq, recv, commit in zip(
                *[records[name].tolist() for name in _TRADE], strict=True):
            yield "trade", sid, enc(TradePayload(
                ex, names[sid] if sid < known else self.symbol(sid), "trade", price, qty,
                _SIDES.get(side), ts // _MS, trade_id, _MARKETS.get(market, "none"), seq,
                recv)), commit

    def _bbo(self, rows: list[tuple[Any, ...]]) -> Iterator[Item]:
        for r in rows:
            sid = r[_B["symbol_id"]]
            p = self._base("bbo", r, _B, sid)
            p.update(bid_price=r[_B["bid_px"]], bid_quantity=r[_B["bid_qty"]],
                     ask_price=r[_B["ask_px"]], ask_quantity=r[_B["ask_qty"]],
                     update_id=r[_B["update_id"]])
            yield "bbo", sid, self.encode(p), r[_B["ts_commit_ns"]]

    def _book(self, rows: list[tuple[Any, ...]]) -> Iterator[Item]:
        for r in rows:
            sid = r[_K["symbol_id"]]
            nb, na = r[_K["n_bids"]], r[_K["n_asks"]]
            p = self._base("orderbook", r, _K, sid)
            # sub-array fields come out of tolist() as arrays: their own tolist() gives floats;
            # (price, qty) tuples encode as JSON arrays (1.4 µs a side less than lists)
            p.update(last_update_id=r[_K["update_id"]],
                     bids=list(zip(r[_K["bid_px"]][:nb].tolist(), r[_K["bid_qty"]][:nb].tolist(),
                                   strict=True)),
                     asks=list(zip(r[_K["ask_px"]][:na].tolist(), r[_K["ask_qty"]][:na].tolist(),
                                   strict=True)),
                     state=_STATES.get(r[_K["state"]], "NONE"), epoch=r[_K["epoch"]])
            yield "orderbook", sid, self.encode(p), r[_K["ts_commit_ns"]]

    def _books(self, records: np.ndarray) -> Iterator[Item]:
        # the compiled writer; a record it declines goes through _book (msgspec)
        n = len(records)
        if not records.flags.c_contiguous:
            records = np.ascontiguousarray(records)
        need = n * payload_bound(self._prefixes[0].shape[1], records.dtype["bid_px"].shape[0])
        if len(self._book_out) < need:
            self._book_out = np.empty(max(need, 2 * len(self._book_out)), np.uint8)
        if len(self._book_ends) < n:
            self._book_ends = np.empty(max(n, 2 * len(self._book_ends)), np.int64)
        out, ends = self._book_out, self._book_ends
        self.books_declined += encode_books(records, *self._prefixes, *self._markets,
                                            *self._states, out, ends)
        start = 0
        for i, (end, sid, commit) in enumerate(zip(
                ends[:n].tolist(), records["symbol_id"].tolist(),
                records["ts_commit_ns"].tolist(), strict=True)):
            if end < 0:
                yield from self._book(records[i:i + 1].tolist())
                continue
            yield "orderbook", sid, out[start:end].tobytes(), commit
            start = end

    def _liquidations(self, rows: list[tuple[Any, ...]]) -> Iterator[Item]:
        for r in rows:
            sid = r[_LQ["symbol_id"]]
            p = self._base("liquidation", r, _LQ, sid)
            price, qty = r[_LQ["price"]], r[_LQ["qty"]]
            p.update(price=price, quantity=qty, usd_value=price * qty,
                     side=_SIDES.get(r[_LQ["side"]]))
            yield "liquidation", sid, self.encode(p), r[_LQ["ts_commit_ns"]]

    def _funding(self, rows: list[tuple[Any, ...]]) -> Iterator[Item]:
        for r in rows:
            sid = r[_F["symbol_id"]]
            p = self._base("funding", r, _F, sid)
            p.update(mark_price=r[_F["mark_px"]], index_price=r[_F["index_px"]],
                     funding_rate=r[_F["funding_rate"]],
                     predicted_rate=r[_F["predicted_rate"]],
                     next_funding_time=r[_F["next_funding_ns"]] // _MS)
            yield "funding", sid, self.encode(p), r[_F["ts_commit_ns"]]

    def _open_interest(self, rows: list[tuple[Any, ...]]) -> Iterator[Item]:
        for r in rows:
            sid = r[_OI["symbol_id"]]
            p = self._base("open_interest", r, _OI, sid)
            p.update(open_interest=r[_OI["open_interest"]],
                     open_interest_value=r[_OI["open_interest_value"]])
            yield "open_interest", sid, self.encode(p), r[_OI["ts_commit_ns"]]

    def _events(self, rows: list[tuple[Any, ...]]) -> Iterator[Item]:
        for r in rows:
            kind = _KINDS.get(r[_E["kind"]])
            if kind is None:   # a kind this publisher does not know (a newer detector)
                self.unknown_kinds += 1
                continue
            event_type = EVENT_TYPES[kind]
            sid = r[_E["symbol_id"]]
            p = self._base(event_type, r, _E, sid)
            if kind == EventKind.CHANNEL_SILENT:   # an exchange-level event
                p["symbol"] = "all"
            values = r[_E["values"]].tolist()
            for i, name in enumerate(VALUE_NAMES[kind]):
                p[_RENAME.get(name, name)] = values[i]
            p.update(side=_SIDES.get(r[_E["side"]]),
                     priority=_PRIORITIES.get(r[_E["priority"]], "UNKNOWN"),
                     trigger_seq=r[_E["trigger_seq"]],
                     trigger_commit_ns=r[_E["trigger_commit_ns"]],
                     ts_detect_ns=r[_E["ts_detect_ns"]])
            p["seq"] = r[_E["seq"]]
            yield event_type, sid, self.encode(p), r[_E["ts_commit_ns"]]

    def analytics(self, sid: int, row: np.void) -> Iterator[Item]:
        """The analytics event types of one ``shm.ANALYTICS`` latest row."""
        r = row.tolist()
        ix = _A
        for event_type, fields in ANALYTICS_TYPES.items():
            p = self._base(event_type, r, ix, sid)
            for name in fields:
                p[name] = r[ix[name]]
            yield event_type, sid, self.encode(p), r[ix["ts_commit_ns"]]


_A = _index(ANALYTICS)


def warm_kernels() -> None:
    """Compile (or load from numba's cache) the orderbook writer: a process calls this before
    its first heartbeat, because a cold compile (≈ 2 s, more on a busy host) on the first book
    would stall the heartbeat and the supervisor would kill it before the cache is written."""
    for _ in PayloadEncoder("warm", ["warm"]).records("book", np.zeros(1, BOOK)):
        pass
