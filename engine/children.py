"""The supervisor's children: which processes a config asks for, how each one starts, and its
restart policy (capped exponential backoff, crash-loop detection).

Every child is a ``multiprocessing`` *spawn* process (a fresh interpreter: no forked numba or
uvloop state) running :func:`child_main`, which calls the same entry point as the foreground
commands (``microstream feed|detect|publish``). A child leaves the supervisor's process group,
so a terminal's Ctrl-C reaches only the supervisor (which stops the children in order), and
asks the kernel for SIGTERM should the supervisor die (``PR_SET_PDEATHSIG``): no orphan keeps
writing to the bus.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import time
from collections import deque
from multiprocessing.process import BaseProcess

import msgspec

from .config import Config, ExchangesConfig
from .status import ChildState

__all__ = ["Child", "ChildSpec", "child_main", "child_specs"]

log = logging.getLogger("microstream.supervisor")

_PR_SET_PDEATHSIG = 1
STOP_ORDER = {"feed": 0, "detectors": 1, "publisher": 2}   # ingest first, the publisher last


class ChildSpec(msgspec.Struct, frozen=True):
    """One supervised process: ``name`` is ``feed:EXCHANGE``, ``detectors`` or ``publisher``."""

    name: str
    kind: str
    exchange: str = ""

    @property
    def stop_stage(self) -> int:
        """Shutdown stage: feeds (0), then detectors (1), then the publisher (2)."""
        return STOP_ORDER[self.kind]


def child_specs(config: Config) -> list[ChildSpec]:
    """The children ``config`` enables, in start order (feeds, detectors, publisher)."""
    specs = [ChildSpec(f"feed:{name}", "feed", name)
             for name in ExchangesConfig.__struct_fields__
             if getattr(config.exchanges, name).enabled]
    if config.detectors.enabled:
        specs.append(ChildSpec("detectors", "detectors"))
    if config.publisher.enabled:
        specs.append(ChildSpec("publisher", "publisher"))
    return specs


def child_main(spec: ChildSpec, config: Config, log_level: int = logging.INFO,
               supervisor_pid: int = 0) -> None:
    """Spawn target: detach from the terminal's signals, log to stderr, run the entry point."""
    os.setpgid(0, 0)
    # NotifyAccess=main: only the supervisor speaks to systemd (a child's message is refused)
    os.environ.pop("NOTIFY_SOCKET", None)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux/glibc: the supervisor's shutdown still stops us
    if supervisor_pid and os.getppid() != supervisor_pid:
        sys.exit(1)   # the supervisor died before prctl took effect (we were re-parented)
    logging.basicConfig(level=log_level, stream=sys.stderr,
                        format=f"%(asctime)s %(levelname)s {spec.name}: %(message)s")
    logging.getLogger("picows").setLevel(logging.WARNING)
    if spec.kind == "feed":
        from workers.exchanges.worker import run_worker

        code = run_worker(spec.exchange, config)
    elif spec.kind == "detectors":
        from workers.detectors.process import run_detectors

        code = run_detectors(config)
    else:
        from workers.publisher.process import run_publisher

        code = run_publisher(config, drain_s=config.service.drain_timeout_s)
    sys.exit(code)


class Child:
    """One supervised process slot: the current process, its state and restart bookkeeping."""

    def __init__(self, spec: ChildSpec, config: Config) -> None:
        self.spec = spec
        self.config = config
        self.cfg = config.service
        self.process: BaseProcess | None = None
        self.state = ChildState.STOPPED
        self.started_at = 0.0
        self.missing_since = 0.0    # RUNNING, but its heartbeat segment is not its own
        self.restarts = 0
        self.failures = 0           # consecutive; reset after healthy_after_s of uptime
        self.restart_at = 0.0
        self.last_exit = 0
        self._restart_times: deque[float] = deque()

    @property
    def pid(self) -> int:
        """The running process's pid, or 0."""
        p = self.process
        return p.pid or 0 if p is not None and p.exitcode is None else 0

    def start(self, now: float) -> None:
        """Spawn the process (state STARTING until its first heartbeat)."""
        ctx = multiprocessing.get_context("spawn")
        level = logging.getLogger().getEffectiveLevel()
        self.process = ctx.Process(target=child_main,
                                   args=(self.spec, self.config, level, os.getpid()),
                                   name=f"microstream-{self.spec.name}", daemon=False)
        self.process.start()
        self.started_at = now
        self.missing_since = 0.0
        self.state = ChildState.STARTING
        log.info("%s: started, pid %d", self.spec.name, self.process.pid)

    def exited(self) -> int | None:
        """The exit code if the process has ended (a signal as its negative number)."""
        p = self.process
        return None if p is None else p.exitcode

    def died(self, now: float, code: int, why: str) -> bool:
        """Record an unexpected end and schedule the restart; False when this was one restart
        too many within the crash-loop window (the child is then FAILED)."""
        self.last_exit = code
        self._reap()
        if now - self.started_at >= self.cfg.healthy_after_s:
            self.failures = 0
        self.failures += 1
        times = self._restart_times
        times.append(now)
        while times and now - times[0] > self.cfg.crash_loop_window_s:
            times.popleft()
        if len(times) > self.cfg.crash_loop_restarts:
            self.state = ChildState.FAILED
            log.error("%s: %s; crash loop: %d restarts within %.0f s, giving up",
                      self.spec.name, why, len(times) - 1, self.cfg.crash_loop_window_s)
            return False
        delay = min(self.cfg.restart_backoff_max_s,
                    self.cfg.restart_backoff_initial_s * 2 ** (self.failures - 1))
        self.restart_at = now + delay
        self.state = ChildState.BACKOFF
        log.warning("%s: %s; restarting in %.1f s", self.spec.name, why, delay)
        return True

    def restart_due(self, now: float) -> bool:
        """True when a BACKOFF child's delay has passed."""
        return self.state == ChildState.BACKOFF and now >= self.restart_at

    def restarted(self, now: float) -> None:
        """Start the next process after a death (counts a restart)."""
        self.restarts += 1
        self.start(now)

    def kill(self) -> None:
        """SIGKILL the process (a stuck child: no heartbeat)."""
        p = self.process
        if p is not None and p.exitcode is None:
            p.kill()
            p.join(2.0)

    def terminate(self) -> None:
        """SIGTERM: the child's own ordered stop (the publisher drains)."""
        p = self.process
        if self.state != ChildState.FAILED:
            self.state = ChildState.STOPPING
        if p is not None and p.exitcode is None:
            p.terminate()

    def wait(self, deadline: float) -> bool:
        """Wait for the process to end until ``deadline`` (monotonic); True if it ended."""
        p = self.process
        if p is None:
            if self.state == ChildState.STOPPING:
                self.state = ChildState.STOPPED
            return True
        p.join(max(0.0, deadline - time.monotonic()))
        if p.exitcode is None:
            return False
        self.last_exit = p.exitcode
        if self.state != ChildState.FAILED:
            self.state = ChildState.STOPPED
        self._reap()
        return True

    def _reap(self) -> None:
        p = self.process
        if p is not None and p.exitcode is not None:
            p.close()
            self.process = None
