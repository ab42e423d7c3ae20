"""The ``microstream`` command, run as a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

import shm

REPO = Path(__file__).resolve().parents[2]


def microstream(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "engine", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO)


def test_run_demo_moves_records_between_processes_and_cleans_up(instance: str) -> None:
    out = microstream("run", "--instance", instance, "--duration", "2", "--rate", "2000")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "not built yet" in lines[0]
    final = [line for line in lines if line.startswith("committed=")][-1]
    fields = dict(kv.split("=") for kv in final.split()[:4])
    assert int(fields["committed"]) == int(fields["delivered"]) > 3000
    assert fields["lost"] == "0"
    assert lines[-1].startswith("done:")
    assert shm.list_segments(instance) == []


def test_bad_config_names_file_and_key_and_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[demo]\nring_capacity = 1000\n")
    out = microstream("run", "-c", str(bad))
    assert out.returncode == 2
    assert str(bad) in out.stderr and "$.demo" in out.stderr and "power of two" in out.stderr
    bad.write_text("[demo]\nrate = 5\n")
    out = microstream("run", "-c", str(bad))
    assert out.returncode == 2 and "unknown field `rate`" in out.stderr


def test_shipped_config_is_valid() -> None:
    from engine.config import load_config

    assert load_config(REPO / "config.toml").engine.instance == "demo"


def test_shm_ls_and_gc(instance: str) -> None:
    name = shm.segment_name(instance, "binance", "trades")
    w = shm.Writer(name, shm.TRADE, 8)
    w.commit_batch(np.zeros(3, shm.TRADE))
    listed = json.loads(microstream("shm", "ls", "--json", "--instance", instance).stdout)
    ring = next(i for i in listed if i["name"] == name)
    assert ring["tail"] == 3 and ring["writer_alive"] and ring["writer_pid"] == os.getpid()
    assert json.loads(microstream("shm", "gc", "--json", "--instance", instance).stdout)[
        "removed"] == []
    w.close()
    dry = microstream("shm", "gc", "--dry-run", "--instance", instance)
    assert f"would remove {name}" in dry.stdout
    assert os.path.exists(os.path.join(shm.SHM_DIR, name))
    gone = json.loads(microstream("shm", "gc", "--json", "--instance", instance).stdout)
    assert gone["removed"] == [name, name + ".wake"]
    assert shm.list_segments(instance) == []
    table = microstream("shm", "ls", "--instance", instance)
    assert table.returncode == 0 and "no microstream segments" in table.stdout
