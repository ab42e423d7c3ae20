"""Helpers for live feed-worker tests: a config pointing a worker at a local venue, the worker
as a subprocess (``microstream feed``), and readers of its rings and stats in this process."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

import shm
from workers.exchanges.worker import STATS

URL_KEYS = {"binance": ("futures_ws", "futures_rest"), "bybit": ("linear_ws", None),
            "okx": ("public_ws", "rest")}
WS_PATH = {"binance": "", "bybit": "/v5/public/linear", "okx": "/ws/v5/public"}


def write_config(path: Path, instance: str, exchange: str, ws_url: str, rest_url: str,
                 symbols: list[dict[str, Any]], extra: str = "") -> Path:
    """A config.toml with only ``exchange`` enabled, aimed at the venue."""
    ws_key, rest_key = URL_KEYS[exchange]
    urls = f'{ws_key} = "{ws_url}{WS_PATH[exchange]}"'
    if rest_key:
        urls += f', {rest_key} = "{rest_url}"'
    syms = ", ".join("{" + ", ".join(f'{k} = {_toml(v)}' for k, v in s.items()) + "}"
                     for s in symbols)
    path.write_text(f"""[engine]
instance = "{instance}"

[exchanges.{exchange}]
enabled = true
symbols = [{syms}]
urls = {{{urls}}}
open_interest_poll_s = 0.5
silent_after_s = 5.0
{extra}
[exchanges.{exchange}.connection]
backoff_initial_s = 0.05
backoff_max_s = 0.3
stale_after_s = 5.0
""")
    return path


def _toml(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return str(value)


def start_worker(exchange: str, config: Path, log: Path) -> subprocess.Popen[bytes]:
    """``microstream feed EXCHANGE -c CONFIG`` with stderr to ``log``."""
    return subprocess.Popen([sys.executable, "-m", "engine", "feed", exchange, "-c", str(config)],
                            stdout=subprocess.DEVNULL, stderr=open(log, "wb"))


def stop_worker(proc: subprocess.Popen[bytes]) -> int:
    """SIGTERM, then wait; the exit code."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def stats(instance: str, exchange: str) -> dict[str, int] | None:
    """The worker's counters row, or None before the worker created it."""
    try:
        table = shm.LatestReader(shm.segment_name(instance, exchange, "stats", suffix="latest"))
    except shm.ShmError:
        return None
    try:
        row = table.get(0)
    finally:
        table.close()
    if row is None:
        return None
    return {name: int(row[name]) for name in STATS.names or ()}


def wait_for(check: Any, timeout_s: float = 30.0, what: str = "condition") -> Any:
    """Poll ``check()`` until truthy (returned) or fail naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")


def drain(reader: shm.Reader, out: list[np.ndarray], seconds: float) -> None:
    """Poll ``reader`` for ``seconds``, keeping every batch."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        batch = reader.poll(timeout_s=0.05)
        if len(batch):
            out.append(batch)
