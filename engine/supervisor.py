"""``microstream run``: start every enabled child, keep them alive, report health, stop in order.

One synchronous loop (10 ticks a second) does everything, so the supervisor is as simple to
reason about as its children's hot paths:

* each child's exit is noticed from its process handle, and its heartbeat from shared memory
  (:func:`engine.status.probe`); a child that exits, or stops heart-beating, is killed and
  restarted after a capped exponential backoff. Its successor takes its segments over and
  bumps their generation, so readers see a discontinuity instead of silence. More than
  ``crash_loop_restarts`` restarts of one child within ``crash_loop_window_s`` stop the service
  with exit code 1, so systemd's ``Restart=on-failure`` acts;
* readiness (``ready_when``) becomes ``READY=1`` once; ``STATUS=`` lines and the log report
  every ``status_interval_s``; ``WATCHDOG=1`` goes out at half of ``WATCHDOG_USEC``;
* the supervisor's own table (:data:`engine.status.SUPERVISOR`) is rewritten every tick.

Segment lifecycle: stale segments of the instance (closed, or whose writer died) are removed at
start; the children create theirs; at stop, after every child has exited, every segment of the
instance is removed. SIGTERM/SIGINT start the ordered shutdown (feeds, then detectors, then the
publisher with its drain, each stage bounded by ``stop_timeout_s``); a second signal SIGKILLs
whatever still runs.
"""

from __future__ import annotations

import logging
import os
import signal
import time

import shm

from .children import Child, child_specs
from .config import Config
from .health import HealthServer
from .sdnotify import Notifier
from .status import SUPERVISOR, SUPERVISOR_ROW, ChildState, Probe, probe, supervisor_table

__all__ = ["Supervisor"]

log = logging.getLogger("microstream.supervisor")

_TICK_S = 0.1


class Supervisor:
    """Runs the children of ``config`` (see the module docstring)."""

    def __init__(self, config: Config, notifier: Notifier | None = None) -> None:
        self.config = config
        self.cfg = config.service
        self.instance = config.engine.instance
        self.children = [Child(spec, config) for spec in child_specs(config)]
        self.notifier = notifier or Notifier()
        self.probes: dict[str, Probe] = {}
        self.ready = False
        self.ready_sent = False
        self.exit_code = 0
        self.signals = 0
        self.stopping = False
        self.started_ns = time.monotonic_ns()
        self.last_tick_ns = 0
        self._table: shm.LatestWriter | None = None
        self.http: HealthServer | None = None

    # -- lifecycle ------------------------------------------------------------------------
    def open(self) -> None:
        """Claim the instance (its supervisor table), remove stale segments of it.

        Raises :class:`shm.WriterBusy` when a live supervisor already runs this instance.
        """
        name = supervisor_table(self.instance)
        self._table = shm.LatestWriter(name, SUPERVISOR, 1 + len(self.children), replace=True)
        self._table.register(0, SUPERVISOR_ROW)
        for i, child in enumerate(self.children, 1):
            self._table.register(i, child.spec.name)
        removed = [n for n in shm.gc_segments(self.instance) if n != name]
        if removed:
            log.info("removed %d stale segments of instance %s", len(removed), self.instance)
        if self.cfg.http_port >= 0:
            try:
                self.http = HealthServer(self.instance, self.cfg.http_host, self.cfg.http_port,
                                         lambda: self.last_tick_ns)
            except OSError as exc:
                self.close()
                raise OSError(f"[service] http {self.cfg.http_host}:{self.cfg.http_port}: "
                              f"{exc.strerror}") from None
        self.last_tick_ns = time.monotonic_ns()
        self._write_table()

    def run(self, duration_s: float | None = None) -> int:
        """Start the children and supervise until a signal, ``duration_s`` or a crash loop;
        then stop in order. Returns the exit code (0, or 1 after a crash loop or a forced stop).
        """
        if self._table is None:
            self.open()
        previous = {sig: signal.signal(sig, self._on_signal)
                    for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            now = time.monotonic()
            for child in self.children:
                child.start(now)
            end = now + duration_s if duration_s is not None else float("inf")
            next_status = now + self.cfg.status_interval_s
            next_watchdog = now
            while not self.signals and self.exit_code == 0 and time.monotonic() < end:
                try:
                    self.tick()
                except Exception:   # supervision goes on: a bad tick must not orphan children
                    log.exception("supervisor tick failed")
                now = time.monotonic()
                if now >= next_status:
                    next_status = now + self.cfg.status_interval_s
                    text = self.status_line()
                    self.notifier.status(text)
                    log.info("status: %s", text)
                if self.notifier.watchdog_s and now >= next_watchdog:
                    next_watchdog = now + self.notifier.watchdog_s / 2
                    self.notifier.watchdog()
                time.sleep(_TICK_S)
        finally:
            self.shutdown()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return self.exit_code

    def _on_signal(self, signum: int, _frame: object) -> None:
        # flags only: the loop and shutdown() act on them within one tick (a handler that
        # killed and reaped here could interrupt shutdown() in the middle of a reap)
        self.signals += 1
        if self.signals > 1:  # the second signal forces: shutdown() SIGKILLs what is left
            self.exit_code = 1

    # -- the loop -------------------------------------------------------------------------
    def tick(self) -> None:
        """One supervision pass: exits, heartbeats, restarts, readiness, the table."""
        now = time.monotonic()
        for child in self.children:
            self._supervise(child, now)
            if child.state == ChildState.FAILED:
                self.exit_code = 1
        self._update_ready()
        self.last_tick_ns = time.monotonic_ns()
        self._write_table()

    def _supervise(self, child: Child, now: float) -> None:
        name = child.spec.name
        if child.state in (ChildState.STARTING, ChildState.RUNNING):
            code = child.exited()
            if code is not None:
                child.died(now, code, f"exited with code {code}")
                self.probes.pop(name, None)
                return
            p = self.probes[name] = probe(self.instance, name)
            fresh = p.pid == child.pid and 0 <= p.heartbeat_age_s < self.cfg.heartbeat_timeout_s
            if child.state == ChildState.STARTING:
                if fresh:
                    child.state = ChildState.RUNNING
                    log.info("%s: running (pid %d)", name, child.pid)
                elif now - child.started_at > self.cfg.startup_timeout_s:
                    self._stuck(child, now, f"no heartbeat within {self.cfg.startup_timeout_s:g} "
                                            "s of start")
            elif p.pid == child.pid and not fresh:
                self._stuck(child, now, f"no heartbeat for {p.heartbeat_age_s:.1f} s")
            elif p.pid != child.pid:
                # its segment is gone or no longer its own: a child failing or stopping on
                # its own removes its segments just before it exits; give it the heartbeat
                # timeout to do so (its exit is then seen above) before calling it stuck
                child.missing_since = child.missing_since or now
                if now - child.missing_since > self.cfg.heartbeat_timeout_s:
                    self._stuck(child, now, "its heartbeat segment is gone")
            else:
                child.missing_since = 0.0
        elif child.restart_due(now):
            child.restarted(now)

    def _stuck(self, child: Child, now: float, why: str) -> None:
        child.kill()
        code = child.exited()
        child.died(now, code if code is not None else -9, f"{why}: killed")
        self.probes.pop(child.spec.name, None)

    def _update_ready(self) -> None:
        running = all(c.state == ChildState.RUNNING for c in self.children)
        if self.cfg.ready_when == "connected":
            running = running and all(self.probes[c.spec.name].ready for c in self.children)
        self.ready = running and not self.stopping
        if self.ready and not self.ready_sent:
            self.ready_sent = True
            line = self.status_line()
            self.notifier.ready(line)
            log.info("ready: %s", line)

    def status_line(self) -> str:
        """One line for ``STATUS=`` and the log: each child's state and the breaker."""
        parts = []
        for child in self.children:
            p = self.probes.get(child.spec.name)
            d = p.detail if p is not None else {}
            state = child.state.name.lower()
            if child.spec.kind == "feed" and child.state == ChildState.RUNNING:
                state = (f"{d.get('books_live', 0)}/{d.get('books', 0)} books live, "
                         f"{d.get('connections_up', 0)}/{d.get('connections', 0)} connected")
            elif child.spec.kind == "publisher" and child.state == ChildState.RUNNING:
                from workers.publisher.breaker import BreakerState

                state = (f"breaker {BreakerState(d.get('breaker_state', 0)).name}, "
                         f"redis {'up' if d.get('connected') else 'down'}")
            restarts = f" ({child.restarts} restarts)" if child.restarts else ""
            parts.append(f"{child.spec.name} {state}{restarts}")
        head = "ready" if self.ready else ("stopping" if self.stopping else "starting")
        return f"{head}; " + "; ".join(parts)

    def _write_table(self) -> None:
        table = self._table
        if table is None:
            return
        table.update(0, (0, time.time_ns(), os.getpid(), int(ChildState.RUNNING), 0, 0,
                         self.started_ns, int(self.ready),
                         self.http.port if self.http is not None else -1))
        for i, c in enumerate(self.children, 1):
            table.update(i, (0, time.time_ns(), c.pid, int(c.state), c.restarts, c.last_exit,
                             int(c.started_at * 1e9), int(c.state == ChildState.RUNNING and (
                                 c.spec.name in self.probes and self.probes[c.spec.name].ready)),
                             -1))
        table.heartbeat()

    # -- shutdown -------------------------------------------------------------------------
    def shutdown(self) -> None:
        """Stop the children in order, then remove every segment of the instance."""
        self.stopping = True
        self.ready = False
        self.notifier.stopping()
        log.info("stopping: feeds, then detectors, then the publisher (drain ≤ %g s)",
                 self.cfg.drain_timeout_s)
        for stage in sorted({c.spec.stop_stage for c in self.children}):
            group = [c for c in self.children if c.spec.stop_stage == stage]
            running = {c.spec.name for c in group if c.pid}
            for child in group:
                child.terminate()
            limit = self.cfg.stop_timeout_s + (self.cfg.drain_timeout_s if stage == 2 else 0)
            deadline = time.monotonic() + limit
            for child in group:
                while not child.wait(min(deadline, time.monotonic() + _TICK_S)):
                    self._write_table()
                    if self.signals > 1 or time.monotonic() >= deadline:
                        log.warning("%s: still running %s: SIGKILL", child.spec.name,
                                    "at a second signal" if self.signals > 1
                                    else f"after {limit:g} s")
                        child.kill()
                        child.wait(time.monotonic() + 2.0)
                        break
                if child.spec.name in running and child.last_exit not in (0, -signal.SIGTERM):
                    log.warning("%s: exited with code %d at stop", child.spec.name,
                                child.last_exit)
        self.close()

    def close(self) -> None:
        """Release the supervisor table and remove every segment the instance left."""
        if self.http is not None:
            self.http.close()
            self.http = None
        if self._table is not None:
            self._write_table()
            self._table.close(unlink=True)
            self._table = None
        left = shm.gc_segments(self.instance)
        log.info("stopped; removed %d segments of instance %s", len(left), self.instance)
        self.notifier.close()
