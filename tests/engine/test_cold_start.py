"""A fresh checkout has no numba cache: each process compiles its kernels before its first
heartbeat, so the supervisor never sees a heartbeat go stale while a kernel compiles.

Before, a feed worker created its heartbeat (the stats row) and then imported its scanners
(≈ 12 s to compile the push-trade kernel): the supervisor killed it after 5 s, before numba
wrote the cache, and ``microstream run`` on a fresh checkout crash-looped. Each test runs the
process with an empty ``NUMBA_CACHE_DIR`` (a cold cache) and watches the heartbeat's age from
the moment it first appears.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

import shm
from engine.status import probe
from workers.venue import start_venue

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workers"))
from feed_live import write_config

WATCH_S = 6.0        # after the first heartbeat; a kernel compiled in it would stall it
STALE_S = 2.0        # the supervisor's timeout is 5 s; a live process beats every 0.1 s


def _heartbeat_ages(cmd: list[str], child: str, instance: str, tmp_path: Path,
                    tick: Callable[[], None] = lambda: None) -> list[float]:
    """The child's heartbeat age every 0.1 s for WATCH_S from its first heartbeat (``tick``
    is called before each look)."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba-cache"))
    log = tmp_path / "child.log"
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=open(log, "wb"))
    try:
        deadline = time.monotonic() + 300   # the whole cold compile comes first
        while probe(instance, child).pid == 0:
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "no heartbeat within 300 s"
            time.sleep(0.05)
        ages = []
        end = time.monotonic() + WATCH_S
        while time.monotonic() < end:
            tick()
            ages.append(probe(instance, child).heartbeat_age_s)
            time.sleep(0.1)
        assert proc.poll() is None, log.read_text()[-3000:]
        return ages
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_a_feed_worker_compiles_before_its_first_heartbeat(tmp_path: Path,
                                                           instance: str) -> None:
    with start_venue("bybit", [], synthetic={"symbols": 2, "rate": 200, "seconds": 30,
                                             "seed": 3}, loop=True) as venue:
        cfg = write_config(tmp_path / "config.toml", instance, "bybit", venue.ws_url,
                           venue.rest_url, [{"symbol": "BTCUSDT", "market": "linear"}],
                           "options = {depth_levels = 50}\n")
        ages = _heartbeat_ages([sys.executable, "-m", "engine", "feed", "bybit", "-c",
                                str(cfg)], "feed:bybit", instance, tmp_path)
    assert 0 <= max(ages) < STALE_S, ages


def test_the_publisher_compiles_before_its_first_heartbeat(tmp_path: Path,
                                                           instance: str) -> None:
    """Its orderbook writer (≈ 2 s to compile) is warmed before the heartbeat exists; books
    arrive from then on."""
    cfg = tmp_path / "config.toml"   # no Redis: it keeps reconnecting, and heartbeating
    cfg.write_text(f'[engine]\ninstance = "{instance}"\n[exchanges.binance]\nenabled = true\n'
                   'symbols = [{ symbol = "BTCUSDT", market = "linear" }]\n[publisher]\n'
                   f'enabled = true\nredis_url = "unix://{tmp_path}/none.sock"\n')
    ring = shm.Writer(shm.segment_name(instance, "binance", "book"), shm.BOOK, 1024)
    book = np.zeros(1, shm.BOOK)
    book["n_bids"], book["bid_px"][0, 0], book["bid_qty"][0, 0] = 1, 100.5, 2.0
    try:
        ages = _heartbeat_ages([sys.executable, "-m", "engine", "publish", "-c", str(cfg)],
                               "publisher", instance, tmp_path,
                               tick=lambda: ring.commit(book[0]))
    finally:
        ring.close(unlink=True)
    assert 0 <= max(ages) < 1.0, ages   # it beats every 0.1 s
