"""The README's binary layout is enough for a consumer in another language: a C reader."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from bus_procs import payload

import shm

SOURCE = Path(__file__).with_name("c_reader.c")


@pytest.fixture(scope="module")
def c_reader(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler on this machine")
    exe = tmp_path_factory.mktemp("c") / "c_reader"
    subprocess.run([cc, "-O2", "-Wall", "-Werror", "-o", str(exe), str(SOURCE)], check=True)
    return exe


def test_c_consumer_reads_the_ring_from_the_documented_layout(instance: str,
                                                              c_reader: Path) -> None:
    name = shm.segment_name(instance, "binance", "trades")
    with shm.Writer(name, shm.TRADE, 64) as w:
        for first in range(0, 100, 20):  # wraps the 64-slot ring
            w.commit_batch(payload(np.arange(first, first + 20)))
        out = subprocess.run([str(c_reader), name, "10"], capture_output=True, text=True,
                             check=True, timeout=30).stdout.split("\n")
    rows = [line.split() for line in out if line]
    expected = payload(np.arange(90, 100))
    assert [int(r[0]) for r in rows] == list(range(90, 100))
    for row, rec in zip(rows, expected, strict=True):
        assert int(row[1]) == rec["symbol_id"] and int(row[2]) == rec["exchange"]
        assert float(row[3]) == rec["price"] and float(row[4]) == rec["qty"]
        assert int(row[5]) == rec["trade_id"] and int(row[6]) == rec["side"]
