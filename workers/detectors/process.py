"""``microstream detect``: the detector process (pin, warm, loop until SIGTERM/SIGINT).

The loop polls every ring without waiting; when none had new records it parks on all of them
at once (``shm.wait_any``: one ``futex_waitv``), woken by the next commit on any ring or after
``idle_wait_us``. Kernels are compiled (or
loaded from numba's cache) by a warm-up batch through every one before the loop starts, so the
first real batch does not pay for compilation. Counters are logged every 10 s.
"""

from __future__ import annotations

import logging
import os
import signal
import time

import numpy as np

import shm
from engine.config import Config, DetectorsConfig, enabled_exchanges

from .events import EventBuffer
from .funding import FundingState
from .runner import STREAMS, DetectorRunner, ExchangeDetectors

__all__ = ["run_detectors", "warm_kernels"]

log = logging.getLogger("microstream.detectors")


def warm_kernels(settings: DetectorsConfig) -> None:
    """Run one record of every stream through a throwaway set of kernels (compiles them)."""
    det = ExchangeDetectors("binance", ["WARM"], settings, EventBuffer(16))
    for stream in STREAMS:
        rec = np.zeros(1, shm.record_dtype(stream))
        det.run(stream, rec, 0)
        det.forget(stream, 0)
    det.events.take()
    funding = FundingState(1, 1)
    funding.map(0, 0, 0)
    funding.update(np.zeros(1, shm.FUNDING))


def run_detectors(config: Config, duration_s: float | None = None) -> int:
    """Process entry: the exchanges enabled in ``config`` with their configured symbols."""
    cfg = config.detectors
    if cfg.cpu >= 0:
        os.sched_setaffinity(0, {cfg.cpu})
    exchanges = enabled_exchanges(config, cfg.exchanges)
    warm_kernels(cfg)
    markets = {name: [s.market for s in getattr(config.exchanges, name).symbols]
               for name in exchanges}
    runner = DetectorRunner(config.engine.instance, exchanges, cfg, markets=markets)
    stop = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.append(True))
    log.info("detectors: instance %s, exchanges %s, events ring %s", config.engine.instance,
             ", ".join(exchanges) or "none", runner.writer.name)
    idle_s = cfg.idle_wait_us / 1e6
    end = time.monotonic() + duration_s if duration_s is not None else float("inf")
    next_log = time.monotonic() + 10.0
    try:
        while not stop and time.monotonic() < end:
            runner.step(idle_s)
            now = time.monotonic()
            if now >= next_log:  # rate-limited, from the loop, never from a kernel
                next_log = now + 10.0
                log.info("detectors: %d records, %d events dropped, %d discontinuities",
                         runner.records, runner.events.dropped, runner.discontinuities)
            runner.writer.heartbeat()
    finally:
        runner.close()
    return 0
