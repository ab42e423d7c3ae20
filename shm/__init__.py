"""microstream's shared-memory bus: single-writer rings and latest-value tables in ``/dev/shm``.

Local consumers need only this package::

    import shm
    with shm.Reader.attach("binance", "trades", instance="prod") as reader:
        while True:
            records = reader.poll(timeout_s=1.0)   # structured ndarray copy, maybe empty
            ...

See the README's "Bus layout" section for the binary format (for C, Rust, ... consumers).
"""

from .errors import LayoutMismatch, SegmentNotFound, ShmError, WriterBusy, WriterGone
from .latest import LatestReader, LatestWriter
from .layout import (
    ANALYTICS,
    BBO,
    BOOK,
    BOOK_DEPTH,
    DEPTH,
    EVENT,
    FUNDING,
    LAYOUT_VERSION,
    LIQUIDATION,
    OPEN_INTEREST,
    STREAMS,
    TRADE,
    BookState,
    Exchange,
    Market,
    Priority,
    Side,
    book_dtype,
    record_dtype,
)
from .reader import Reader, ReaderStats, wait_any
from .registry import SegmentInfo, gc_segments, list_segments
from .ring import Writer
from .segment import SHM_DIR, parse_segment_name, segment_name

__all__ = [
    "ANALYTICS",
    "BBO",
    "BOOK",
    "BOOK_DEPTH",
    "DEPTH",
    "EVENT",
    "FUNDING",
    "LAYOUT_VERSION",
    "LIQUIDATION",
    "OPEN_INTEREST",
    "SHM_DIR",
    "STREAMS",
    "TRADE",
    "BookState",
    "Exchange",
    "LatestReader",
    "LatestWriter",
    "LayoutMismatch",
    "Market",
    "Priority",
    "Reader",
    "ReaderStats",
    "SegmentInfo",
    "SegmentNotFound",
    "ShmError",
    "Side",
    "Writer",
    "WriterBusy",
    "WriterGone",
    "book_dtype",
    "gc_segments",
    "list_segments",
    "parse_segment_name",
    "record_dtype",
    "segment_name",
    "wait_any",
]
