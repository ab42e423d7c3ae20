"""Binary layout of the bus: segment header offsets, enums and every record dtype.

This module is the single source of truth for the bytes in ``/dev/shm``; the README's
"Bus layout" section documents the same numbers for consumers in other languages.

Every record dtype is a numpy structured dtype built with ``align=True`` whose first field is
``seq`` (u8) and which starts with the same 48-byte common prefix (:data:`COMMON_FIELDS`).
All integers are little-endian. Timestamps are int64 nanoseconds: ``ts_exchange_ns`` is the
exchange's event time (epoch), ``ts_recv_ns`` the local wall clock at frame receipt
(``time.time_ns()``), ``ts_mono_ns`` the local monotonic clock at frame receipt
(``time.perf_counter_ns()``, system-wide on Linux) and ``ts_commit_ns`` the monotonic clock when
the writer committed the record (stamped by :class:`shm.Writer`).
"""

from __future__ import annotations

import hashlib
import json
from enum import IntEnum
from typing import Any

import numpy as np

__all__ = [
    "ANALYTICS",
    "BBO",
    "BOOK",
    "BOOK_DEPTH",
    "COMMON_FIELDS",
    "DEPTH",
    "DOORBELL_MAGIC",
    "EVENT",
    "EVENT_VALUES",
    "FLAG_CHECKSUM_OK",
    "FLAG_ID_HASHED",
    "FLAG_LAST_IN_MESSAGE",
    "FLAG_NOT_LIVE",
    "FLAG_SNAPSHOT",
    "FUNDING",
    "HEADER_SIZE",
    "LATEST_ROW_HEADER",
    "LAYOUT_VERSION",
    "LIQUIDATION",
    "MAGIC",
    "OPEN_INTEREST",
    "PAGE_SIZE",
    "STREAMS",
    "TRADE",
    "BookState",
    "Exchange",
    "Market",
    "Priority",
    "SegmentKind",
    "SegmentState",
    "Side",
    "book_dtype",
    "describe_dtype",
    "dtype_from_description",
    "dtype_hash",
    "record_dtype",
]

LAYOUT_VERSION = 1
MAGIC = int.from_bytes(b"MSTREAM1", "little")
DOORBELL_MAGIC = int.from_bytes(b"MSBELL01", "little")
PAGE_SIZE = 4096
HEADER_SIZE = PAGE_SIZE  # records start one page into the segment


class H:
    """Byte offsets of the header fields (each an aligned little-endian u64 unless noted).

    Cache line 0 is written once at creation; line 1 when a writer (re)starts; the heartbeat,
    ``tail_intent``, ``tail`` and the futex word each own a cache line so that the writer's hot
    stores do not invalidate lines readers poll for other reasons.
    """

    MAGIC = 0
    LAYOUT_VERSION = 8
    DTYPE_HASH = 16
    RECORD_SIZE = 24
    CAPACITY = 32          # rings: records (power of two); latest tables: rows
    KIND = 40              # SegmentKind
    DATA_OFFSET = 48       # byte offset of slot/row 0
    CREATED_NS = 56        # wall clock at creation
    WRITER_PID = 64
    WRITER_START_TIME = 72  # /proc/<pid>/stat field 22 (clock ticks since boot)
    GENERATION = 80        # bumped on every writer start
    STATE = 88             # SegmentState
    HEARTBEAT_NS = 128     # CLOCK_MONOTONIC (time.monotonic_ns(), system-wide)
    TAIL_INTENT = 192      # next seq the writer is about to make visible
    TAIL = 256             # next seq to write == number of records ever committed
    WAKE_SEQ = 320         # u32 futex word, bumped by the writer before FUTEX_WAKE
    WAKES = 328            # number of wake syscalls the writer issued
    NAME = 512             # segment name, NUL-padded, 256 bytes
    NAME_SIZE = 256
    DESCR = 1024           # dtype description (JSON, see describe_dtype), NUL-padded
    DESCR_SIZE = 3072


class DoorbellOffsets:
    """Byte offsets in a ``.wake`` doorbell file (a 4096-byte page, group-writable)."""

    MAGIC = 0
    PARKED = 64            # u64 bitmap: bit i set while the reader in slot i is parked
    SLOTS = 128            # SLOT_COUNT slots of SLOT_SIZE bytes: pid u32, pad, start_time u64
    SLOT_SIZE = 16
    SLOT_COUNT = 64


class SegmentKind(IntEnum):
    """What a segment holds."""

    RING = 1
    LATEST = 2


class SegmentState(IntEnum):
    """Lifecycle of a segment's writer."""

    INIT = 0
    RUNNING = 1
    CLOSED = 2


class Exchange(IntEnum):
    """Exchange ids carried in every record's ``exchange`` field."""

    NONE = 0
    BINANCE = 1
    BYBIT = 2
    OKX = 3


class Market(IntEnum):
    """Market type carried in every record's ``market`` field."""

    NONE = 0
    SPOT = 1
    LINEAR = 2     # USD(T)-margined perpetual / futures
    INVERSE = 3    # coin-margined
    OPTION = 4


class Side(IntEnum):
    """Aggressor side of a trade, side of a liquidation order, or side of a book level."""

    NONE = 0
    BUY = 1        # for book levels: bid
    SELL = -1      # for book levels: ask


class BookState(IntEnum):
    """Trust state of a book; detectors ignore records that are not LIVE."""

    NONE = 0
    SYNCING = 1
    LIVE = 2
    RESYNCING = 3
    STALE = 4


class Priority(IntEnum):
    """Publisher priority of a detector event (lower value goes first)."""

    CRITICAL = 0
    HIGH = 1
    MEDIUM = 2
    LOW = 3


# flags (u2 in the common prefix)
FLAG_LAST_IN_MESSAGE = 1 << 0   # depth: last level record of one exchange message
FLAG_NOT_LIVE = 1 << 1          # record produced while its book was not LIVE
FLAG_ID_HASHED = 1 << 2         # trade_id is a 63-bit hash of a non-numeric exchange id
FLAG_CHECKSUM_OK = 1 << 3       # book/depth: the exchange checksum of this message verified
FLAG_SNAPSHOT = 1 << 4          # depth: the batch is the full book (replace, do not apply)

COMMON_FIELDS: list[tuple[Any, ...]] = [
    ("seq", np.uint64),
    ("ts_exchange_ns", np.int64),
    ("ts_recv_ns", np.int64),
    ("ts_mono_ns", np.int64),
    ("ts_commit_ns", np.int64),
    ("symbol_id", np.uint32),
    ("exchange", np.uint8),
    ("market", np.uint8),
    ("flags", np.uint16),
]


def _record(fields: list[tuple[Any, ...]]) -> np.dtype:
    return np.dtype(COMMON_FIELDS + fields, align=True)


TRADE = _record([
    ("price", np.float64), ("qty", np.float64), ("trade_id", np.int64), ("side", np.int8),
])
BBO = _record([
    ("bid_px", np.float64), ("bid_qty", np.float64), ("ask_px", np.float64),
    ("ask_qty", np.float64), ("update_id", np.int64),
])
DEPTH = _record([  # one changed price level; qty 0 deletes the level
    ("price", np.float64), ("qty", np.float64), ("update_id", np.int64),
    ("prev_update_id", np.int64), ("epoch", np.uint32), ("side", np.int8), ("state", np.uint8),
])
LIQUIDATION = _record([  # side is the liquidation order's side: SELL = a long was liquidated
    ("price", np.float64), ("qty", np.float64), ("side", np.int8),
])
FUNDING = _record([  # NaN where an exchange does not publish a value
    ("mark_px", np.float64), ("index_px", np.float64), ("funding_rate", np.float64),
    ("predicted_rate", np.float64), ("next_funding_ns", np.int64),
])
OPEN_INTEREST = _record([  # base-asset units; value in quote currency (NaN if unknown)
    ("open_interest", np.float64), ("open_interest_value", np.float64),
])
EVENT_VALUES = 8
EVENT = _record([  # common stamps are the triggering record's, ts_commit_ns the event's
    ("kind", np.uint16), ("priority", np.uint8), ("side", np.int8), ("trigger_seq", np.uint64),
    ("trigger_commit_ns", np.int64), ("ts_detect_ns", np.int64),
    ("values", np.float64, (EVENT_VALUES,)),
])

ANALYTICS = _record([  # the detectors' continuous values per symbol (a latest table only)
    ("cvd_1m", np.float64), ("cvd_5m", np.float64), ("cvd_15m", np.float64),
    ("cvd_session", np.float64), ("trade_count", np.int64),
    ("volume_24h", np.float64), ("quote_volume_24h", np.float64), ("high_24h", np.float64),
    ("low_24h", np.float64), ("last", np.float64), ("change_24h_pct", np.float64),
    ("imbalance", np.float64), ("mid", np.float64), ("spread", np.float64),
    ("open_interest", np.float64), ("oi_delta_5m", np.float64), ("oi_delta_1h", np.float64),
    ("bid_wall_px", np.float64), ("bid_wall_qty", np.float64), ("ask_wall_px", np.float64),
    ("ask_wall_qty", np.float64), ("bid_wall_since_ns", np.int64),
    ("ask_wall_since_ns", np.int64), ("regime", np.int64),
    ("funding_rate", np.float64), ("funding_spread", np.float64), ("basis", np.float64),
    ("funding_predicted", np.float64),
])

BOOK_DEPTH = 20


def book_dtype(depth: int = BOOK_DEPTH) -> np.dtype:
    """Top-N book snapshot dtype; best level first, unused levels have price NaN."""
    if not 1 <= depth <= 255:
        raise ValueError(f"book depth must be in 1..255, got {depth}")
    return _record([
        ("update_id", np.int64), ("epoch", np.uint32), ("state", np.uint8),
        ("n_bids", np.uint8), ("n_asks", np.uint8),
        ("bid_px", np.float64, (depth,)), ("bid_qty", np.float64, (depth,)),
        ("ask_px", np.float64, (depth,)), ("ask_qty", np.float64, (depth,)),
    ])


BOOK = book_dtype()

STREAMS: dict[str, np.dtype] = {
    "trades": TRADE, "bbo": BBO, "depth": DEPTH, "book": BOOK, "liquidations": LIQUIDATION,
    "funding": FUNDING, "open_interest": OPEN_INTEREST, "events": EVENT,
    "analytics": ANALYTICS,
}

# A latest-table row: 64-byte row header, then the record (row stride is a multiple of 64).
LATEST_ROW_HEADER = np.dtype([
    ("version", np.uint64),     # seqlock: odd while the row is being written
    ("updates", np.uint64),     # number of writes to this row
    ("name", "S48"),            # exchange-native symbol, NUL-padded
])
assert LATEST_ROW_HEADER.itemsize == 64


def record_dtype(stream: str) -> np.dtype:
    """The dtype of a named stream (``trades``, ``bbo``, ...); KeyError names the choices."""
    try:
        return STREAMS[stream]
    except KeyError:
        raise KeyError(f"unknown stream {stream!r}; known: {', '.join(STREAMS)}") from None


def describe_dtype(dtype: np.dtype) -> str:
    """Canonical JSON description of a structured dtype, stored in each segment header.

    ``{"itemsize": N, "fields": [[name, base typestr, shape, offset], ...]}`` with numpy
    typestrs such as ``"<u8"`` and ``"<f8"``; readers in any language can rebuild the layout.
    """
    if dtype.names is None or dtype.names[0] != "seq" or dtype["seq"] != np.uint64:
        raise ValueError("bus records need a structured dtype whose first field is seq (u8)")
    fields = []
    for name in dtype.names:
        sub, offset = dtype.fields[name][:2]  # type: ignore[index]
        base, shape = (sub.base, list(sub.shape)) if sub.shape else (sub, [])
        fields.append([name, base.str, shape, offset])
    return json.dumps({"itemsize": dtype.itemsize, "fields": fields}, separators=(",", ":"))


def dtype_from_description(text: str) -> np.dtype:
    """Rebuild a dtype from :func:`describe_dtype` output."""
    d = json.loads(text)
    return np.dtype({
        "names": [f[0] for f in d["fields"]],
        "formats": [(f[1], tuple(f[2])) if f[2] else f[1] for f in d["fields"]],
        "offsets": [f[3] for f in d["fields"]],
        "itemsize": d["itemsize"],
    })


def dtype_hash(dtype: np.dtype) -> int:
    """64-bit hash (BLAKE2b of the canonical description) used to detect layout mismatches."""
    digest = hashlib.blake2b(describe_dtype(dtype).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")
