"""A full-speed writer and three readers in separate processes: no torn record ever delivered."""

from __future__ import annotations

import json

from conftest import spawn

import shm


def test_full_speed_writer_three_readers(instance: str) -> None:
    name = shm.segment_name(instance, "stress", "trades")
    writer = spawn("writer", name, 4, 1024)  # small ring: laps and overwrites are frequent
    assert writer.stdout is not None
    assert writer.stdout.readline().strip() == "ready", writer.stderr and writer.stderr.read()
    readers = {mode: spawn("reader", name, mode) for mode in ("spin", "park", "slow")}
    out, err = writer.communicate(timeout=60)
    assert writer.returncode == 0, err
    tail = json.loads(out)["tail"]
    results = {}
    for mode, proc in readers.items():
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, f"{mode} reader failed: {err}"
        results[mode] = json.loads(out)

    assert tail > 100_000, f"writer too slow to stress anything: {tail} records"
    for mode, r in results.items():
        assert r["bad"] == 0, f"{mode} reader got torn/mixed records: {r}"
        assert r["order_errors"] == 0, f"{mode} reader got records out of order: {r}"
        # every record from where the reader started is accounted for: delivered or lost
        assert r["delivered"] + r["lost"] + r["invalid"] == tail - r["first"], (mode, r, tail)
        assert r["invalid"] == 0, (mode, r)
        assert r["delivered"] > 0, (mode, r)
    slow = results["slow"]
    assert slow["lapped"] > 0 and slow["lost"] > 0, f"slow reader was never lapped: {slow}"
