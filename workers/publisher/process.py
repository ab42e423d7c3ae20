"""``microstream publish``: the publisher process (pin, loop until SIGTERM/SIGINT, drain).

On SIGTERM/SIGINT it stops taking records and keeps pumping until everything queued is
confirmed or ``drain_s`` passes, then closes. Counters are logged every 10 s; the stats row
in shared memory is refreshed every 100 ms.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import time

import numpy as np

from engine.config import Config, enabled_exchanges

from .payloads import warm_kernels
from .publisher import Publisher

__all__ = ["run_publisher"]

log = logging.getLogger("microstream.publisher")


def run_publisher(config: Config, duration_s: float | None = None, drain_s: float = 2.0) -> int:
    """Process entry: drain the rings of the exchanges enabled in ``config``."""
    cfg = config.publisher
    if cfg.cpu >= 0:
        os.sched_setaffinity(0, {cfg.cpu})
    exchanges = enabled_exchanges(config, cfg.exchanges)
    warm_kernels()   # before the stats row (the heartbeat) exists
    publisher = Publisher(config.engine.instance, exchanges, cfg)
    # numba and numpy leave ~100 k long-lived objects; a full collection of them takes
    # ~30 ms here. Frozen, the collector never walks them again (the loop's own garbage is
    # short-lived and goes in the young generations).
    gc.collect()
    gc.freeze()
    stop: list[bool] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.append(True))
    log.info("publisher: instance %s, exchanges %s, redis %s", config.engine.instance,
             ", ".join(exchanges) or "none", cfg.redis_url)
    idle_s = cfg.idle_wait_us / 1e6
    end = time.monotonic() + duration_s if duration_s is not None else float("inf")
    next_log = time.monotonic() + 10.0
    try:
        while not stop and time.monotonic() < end:
            publisher.step(idle_s)
            now = time.monotonic()
            if now >= next_log:   # rate-limited, from the loop
                next_log = now + 10.0
                log.info("publisher: %d records, sent %s, confirmed %s, breaker %s",
                         publisher.counts["records"], publisher.sent.tolist(),
                         publisher.confirmed.tolist(), publisher.breaker.state.name)
        if not publisher.drain(drain_s):
            log.warning("publisher: drain incomplete after %.1f s", drain_s)
    finally:
        publisher.close()
        if cfg.latency_samples_file:
            _save_latencies(publisher, cfg.latency_samples_file)
    return 0


def _save_latencies(publisher: Publisher, path: str) -> None:
    """``latency_samples_file``: :meth:`Publisher.latency_samples` as .npy. Written to a
    temporary name first, so that a reader never sees half a file; a failure is logged (the
    exit it runs in must not fail for it)."""
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        samples = publisher.latency_samples()
        with open(tmp, "wb") as f:
            np.save(f, samples)
        os.replace(tmp, path)
    except Exception as exc:   # at exit, after the work: report, never raise
        log.warning("publisher: latency samples not saved to %s: %s", path, exc)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        return
    log.info("publisher: %d latency samples saved to %s", len(samples), path)
