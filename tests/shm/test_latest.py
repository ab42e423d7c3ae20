"""Latest-value tables: torn-free reads under a concurrent writer in another process."""

from __future__ import annotations

import json

import numpy as np
import pytest
from bus_procs import mismatches, payload
from conftest import spawn

import shm


def test_no_torn_read_under_concurrent_writer(instance: str) -> None:
    name = shm.segment_name(instance, "binance", "trades", suffix="latest")
    proc = spawn("latest_writer", name, 3)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    table = shm.LatestReader(name)
    reads = bad = 0
    seen = set()
    while proc.poll() is None:
        record = table.get("BTCUSDT")
        if record is None:
            continue
        reads += 1
        bad += mismatches(np.array([record], shm.TRADE))
        seen.add(int(record["seq"]))
    out, err = proc.communicate(timeout=30)
    table.close()
    assert proc.returncode == 0, err
    assert json.loads(out)["updates"] > 10_000
    assert reads > 1_000 and len(seen) > 100, (reads, len(seen))  # really concurrent
    assert bad == 0, f"{bad} torn rows out of {reads} reads"


def test_rows_names_and_errors(instance: str) -> None:
    name = shm.segment_name(instance, "okx", "bbo", suffix="latest")
    w = shm.LatestWriter(name, shm.TRADE, 3)
    w.register(0, "BTC-USDT-SWAP")
    table = shm.LatestReader(name)
    assert table.get(0) is None and table.get(2) is None  # registered / untouched, no record
    w.update(0, payload(np.array([7]))[0])
    assert table.get("BTC-USDT-SWAP")["trade_id"] == 22
    assert set(table.snapshot()) == {0}
    with pytest.raises(KeyError, match="ETH"):
        table.get("ETH-USDT")
    with pytest.raises(IndexError, match="symbol id 3"):
        w.update(3, payload(np.array([1]))[0])
    with pytest.raises(ValueError, match="longer than 47"):
        w.register(1, "X" * 48)
    table.close()
    w.close(unlink=True)


def test_reader_latest_uses_the_companion_table(instance: str) -> None:
    ring = shm.segment_name(instance, "bybit", "trades")
    with shm.Writer(ring, shm.TRADE, 8), shm.Reader(ring) as r:
        w = shm.LatestWriter(ring + ".latest", shm.TRADE, 2)
        w.register(1, "ETHUSDT")
        w.update(1, payload(np.array([3]))[0])
        assert r.latest("ETHUSDT")["price"] == 0.75
        w.close(unlink=True)
