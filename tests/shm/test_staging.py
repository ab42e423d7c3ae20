"""The allocation-free commit paths the feed workers use: ``Writer.stage`` +
``commit_staged``, ``Writer.commit_from`` (a preallocated buffer's address) and
``LatestWriter.update_raw``; each delivers exactly what the ordinary path would."""

from __future__ import annotations

import numpy as np

import shm
from workers.exchanges.records import record_struct


def test_staged_and_raw_commits_deliver_the_same_records(instance: str) -> None:
    name = shm.segment_name(instance, "binance", "trades")
    with shm.Writer(name, shm.TRADE, 64) as w, shm.Reader(name, start="oldest") as r:
        pack = record_struct(shm.TRADE).pack_into
        pack(w.stage, 0, 0, 1, 2, 3, 0, 7, 1, 2, 0, 100.5, 0.25, 42, -1)
        assert w.commit_staged() == 0
        batch = np.zeros(3, shm.TRADE)
        batch["trade_id"] = [43, 44, 45]
        assert w.commit_from(batch.ctypes.data, 3) == 3
        got = r.poll(timeout_s=1.0)
    assert got["trade_id"].tolist() == [42, 43, 44, 45] and got["seq"].tolist() == [0, 1, 2, 3]
    first = got[0]
    assert (first["price"], first["qty"], first["side"], first["symbol_id"]) == (100.5, 0.25, -1, 7)
    assert np.all(got["ts_commit_ns"] > 0)  # stamped inside the commit on every path


def test_record_struct_matches_numpy_layout() -> None:
    for dtype in (shm.TRADE, shm.BBO, shm.DEPTH, shm.LIQUIDATION, shm.FUNDING):
        packer = record_struct(dtype)
        assert packer.size == dtype.itemsize
        values = tuple(range(1, len(dtype.names) + 1))
        row = np.zeros(1, dtype)
        packer.pack_into(row, 0, *values)
        assert row[0].tolist() == values


def test_latest_update_raw(instance: str) -> None:
    name = shm.segment_name(instance, "okx", "bbo", suffix="latest")
    w = shm.LatestWriter(name, shm.BBO, 2)
    w.register(1, "BTC-USDT")
    row = np.zeros(1, shm.BBO)
    row["bid_px"], row["symbol_id"] = 99.5, 1
    w.update_raw(1, row.data.cast("B"))
    table = shm.LatestReader(name)
    try:
        assert table.get("BTC-USDT")["bid_px"] == 99.5
    finally:
        table.close()
        w.close(unlink=True)
