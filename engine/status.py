"""What runs, read from shared memory only: the supervisor's table and the children's stats.

The supervisor writes one row per child (and one for itself) into the latest-value table
``microstream.<instance>.engine.supervisor.v1.latest`` (dtype :data:`SUPERVISOR`); each child
proves it is alive through the heartbeat field of one of its own segments (the feed worker's
and the publisher's ``stats`` tables, the detectors' events ring). ``microstream status``,
``/readyz`` and the supervisor's own readiness all use :func:`probe` and :func:`read_status`,
so they agree, and ``status`` works when HTTP does not.
"""

from __future__ import annotations

import time
from enum import IntEnum

import msgspec
import numpy as np

import shm
from shm.layout import H
from shm.segment import Segment, writer_alive

__all__ = [
    "SUPERVISOR",
    "ChildState",
    "Component",
    "EngineStatus",
    "Probe",
    "heartbeat_segment",
    "probe",
    "read_status",
    "supervisor_table",
]

SUPERVISOR = np.dtype([("seq", np.uint64), ("ts_ns", np.int64), ("pid", np.int64),
                       ("state", np.int64), ("restarts", np.int64), ("last_exit", np.int64),
                       ("started_ns", np.int64), ("ready", np.int64), ("http_port", np.int64)],
                      align=True)
SUPERVISOR_ROW = "supervisor"   # row 0: the supervisor itself; the children follow


class ChildState(IntEnum):
    """Lifecycle of a supervised child (the supervisor's row ``state``)."""

    STARTING = 1   # spawned, no heartbeat yet (warming kernels, connecting)
    RUNNING = 2    # heart-beating
    BACKOFF = 3    # exited or killed; restarts after its backoff
    STOPPING = 4   # asked to stop (shutdown)
    STOPPED = 5    # exited during shutdown
    FAILED = 6     # crash loop: not restarted


class Probe(msgspec.Struct, frozen=True):
    """A child's own view in shared memory: heartbeat, readiness and counters."""

    pid: int                  # the writer of its heartbeat segment (0: none yet)
    heartbeat_age_s: float    # -1: no heartbeat segment
    ready: bool
    detail: dict[str, int]


class Component(msgspec.Struct, frozen=True):
    """One child as ``microstream status`` shows it."""

    name: str
    state: str
    pid: int
    restarts: int
    last_exit: int
    ready: bool
    heartbeat_age_s: float
    detail: dict[str, int]


class EngineStatus(msgspec.Struct, frozen=True):
    """The whole engine: ``running`` is False when no live supervisor owns the instance."""

    instance: str
    running: bool
    pid: int = 0
    ready: bool = False
    http_port: int = -1
    components: list[Component] = []


def supervisor_table(instance: str) -> str:
    """Name of the supervisor's table for ``instance``."""
    return shm.segment_name(instance, "engine", "supervisor", suffix="latest")


def heartbeat_segment(instance: str, child: str) -> str:
    """The segment whose heartbeat proves ``child`` (``feed:EXCHANGE``, ``detectors``,
    ``publisher``) alive; the detectors create it only after their kernels are warm."""
    kind, _, exchange = child.partition(":")
    if kind == "feed":
        return shm.segment_name(instance, exchange, "stats", suffix="latest")
    if kind == "detectors":
        return shm.segment_name(instance, "detectors", "events")
    if kind == "publisher":
        return shm.segment_name(instance, "publisher", "stats", suffix="latest")
    raise ValueError(f"unknown child {child!r}")


def _row(name: str) -> dict[str, int] | None:
    """Row 0 of a stats table, or None (absent, never written, or left mid-update by a
    stopped or killed writer: a probe must not wait for it)."""
    try:
        table = shm.LatestReader(name)
    except shm.ShmError:
        return None
    table.give_up_ns = 5_000_000
    try:
        row = table.get(0)
    except shm.ShmError:
        return None
    finally:
        table.close()
    if row is None:
        return None
    names = row.dtype.names or ()
    return {n: int(row[n]) for n in names if n not in ("seq", "ts_ns")}


def probe(instance: str, child: str) -> Probe:
    """Read ``child``'s heartbeat and readiness (reopened on every call: a restarted child
    may have recreated its segments)."""
    name = heartbeat_segment(instance, child)
    try:
        seg = Segment.open(name)
    except (shm.ShmError, OSError):
        return Probe(0, -1.0, False, {})
    try:
        pid = seg.get(H.WRITER_PID)
        if not writer_alive(pid, seg.get(H.WRITER_START_TIME)):
            pid = 0
        age = (time.monotonic_ns() - seg.get(H.HEARTBEAT_NS)) / 1e9
    finally:
        seg.close()
    kind = child.partition(":")[0]
    detail = (_row(name) or {}) if kind != "detectors" and pid > 0 else {}
    if detail.get("pid", pid) != pid:
        # a successor took the table over and has not written its own row yet: the row
        # is its dead predecessor's (connected, ...) and says nothing about this process
        detail = {}
    if kind == "feed":
        ready = (detail.get("connections", 0) > 0
                 and detail.get("connections_up") == detail.get("connections")
                 and detail.get("channels_silent", 0) == 0)
    elif kind == "publisher":
        from workers.publisher.breaker import BreakerState

        ready = bool(detail.get("connected")) and \
            detail.get("breaker_state") != int(BreakerState.OPEN)
    else:
        ready = pid > 0   # the events ring exists once the kernels are warm
    return Probe(pid, round(age, 3), ready and pid > 0, detail)


def read_status(instance: str) -> EngineStatus:
    """The engine of ``instance`` as the supervisor last recorded it, with each child's probe."""
    try:
        table = shm.LatestReader(supervisor_table(instance))
    except shm.ShmError:
        return EngineStatus(instance, running=False)
    try:
        seg_pid, alive = _writer(table.name)
        rows = table.snapshot()
        names = table.names()
    finally:
        table.close()
    if not alive or 0 not in rows:
        return EngineStatus(instance, running=False, pid=seg_pid)
    own = rows.pop(0)
    components = []
    for i, row in sorted(rows.items()):
        name = names.get(i, f"row{i}")
        p = probe(instance, name)
        state = ChildState(int(row["state"])).name.lower()
        components.append(Component(name, state, int(row["pid"]), int(row["restarts"]),
                                    int(row["last_exit"]), bool(row["ready"]),
                                    p.heartbeat_age_s, p.detail))
    return EngineStatus(instance, True, int(own["pid"]), bool(own["ready"]),
                        int(own["http_port"]), components)


def _writer(name: str) -> tuple[int, bool]:
    seg = Segment.open(name)
    try:
        pid = seg.get(H.WRITER_PID)
        state = seg.get(H.STATE)
        return pid, writer_alive(pid, seg.get(H.WRITER_START_TIME)) and \
            state == int(shm.layout.SegmentState.RUNNING)
    finally:
        seg.close()

