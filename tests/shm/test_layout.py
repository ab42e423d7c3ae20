"""Record layouts: the binary contract other languages rely on."""

from __future__ import annotations

import numpy as np
import pytest

import shm
from shm.layout import COMMON_FIELDS, describe_dtype, dtype_from_description, dtype_hash


@pytest.mark.parametrize("stream", sorted(shm.STREAMS))
def test_every_stream_has_the_common_prefix(stream: str) -> None:
    dtype = shm.STREAMS[stream]
    assert dtype.names is not None
    assert dtype.names[: len(COMMON_FIELDS)] == tuple(n for n, _ in COMMON_FIELDS)
    offsets = [dtype.fields[n][1] for n, _ in COMMON_FIELDS]
    assert offsets == [0, 8, 16, 24, 32, 40, 44, 45, 46]  # documented in the README
    assert dtype.itemsize % 8 == 0
    assert dtype_from_description(describe_dtype(dtype)) == dtype


def test_documented_record_sizes() -> None:
    sizes = {name: dt.itemsize for name, dt in shm.STREAMS.items()}
    assert sizes == {"trades": 80, "bbo": 88, "depth": 88, "book": 704, "liquidations": 72,
                     "funding": 88, "open_interest": 64, "events": 144, "analytics": 272}


def test_book_depth_changes_the_hash() -> None:
    assert shm.book_dtype(20) == shm.BOOK
    assert dtype_hash(shm.book_dtype(10)) != dtype_hash(shm.BOOK)
    assert shm.book_dtype(5)["bid_px"].shape == (5,)
    with pytest.raises(ValueError, match=r"1\.\.255"):
        shm.book_dtype(0)


def test_record_dtype_names_the_choices() -> None:
    assert shm.record_dtype("trades") is shm.TRADE
    with pytest.raises(KeyError, match="known: trades"):
        shm.record_dtype("nope")


def test_describe_rejects_records_without_seq() -> None:
    with pytest.raises(ValueError, match="seq"):
        describe_dtype(np.dtype([("price", "<f8")]))
