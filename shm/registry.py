"""Find bus segments and remove the ones whose writer is gone (``microstream shm ls | gc``)."""

from __future__ import annotations

import os
import time

import msgspec

from .claim import remove_if_dead
from .errors import ShmError
from .layout import H, SegmentKind, SegmentState
from .segment import SHM_DIR, Segment, parse_segment_name, writer_alive

__all__ = ["SegmentInfo", "gc_segments", "list_segments"]


class SegmentInfo(msgspec.Struct, frozen=True):
    """What ``shm ls`` shows about one segment file."""

    name: str
    instance: str
    exchange: str
    stream: str
    kind: str             # "ring", "latest", "wake" or "invalid"
    size_bytes: int
    capacity: int = 0
    record_size_bytes: int = 0
    tail: int = 0
    generation: int = 0
    state: str = ""
    writer_pid: int = 0
    writer_alive: bool = False
    heartbeat_age_s: float = -1.0
    error: str = ""


def _state_name(value: int) -> str:
    try:
        return SegmentState(value).name
    except ValueError:
        return f"UNKNOWN({value})"


def _info(name: str, parts: dict[str, str]) -> SegmentInfo:
    size = os.stat(os.path.join(SHM_DIR, name)).st_size
    base = SegmentInfo(name=name, instance=parts["instance"], exchange=parts["exchange"],
                       stream=parts["stream"], kind="wake", size_bytes=size)
    if parts["suffix"] == "wake":
        return base
    try:
        seg = Segment.open(name)
    except (ShmError, OSError) as exc:
        return msgspec.structs.replace(base, kind="invalid", error=str(exc))
    try:
        pid = seg.get(H.WRITER_PID)
        kind = seg.get(H.KIND)
        return msgspec.structs.replace(
            base, kind=SegmentKind(kind).name.lower() if kind in (1, 2) else "invalid",
            capacity=seg.get(H.CAPACITY),
            record_size_bytes=seg.get(H.RECORD_SIZE), tail=seg.get(H.TAIL),
            generation=seg.get(H.GENERATION), state=_state_name(seg.get(H.STATE)),
            writer_pid=pid, writer_alive=writer_alive(pid, seg.get(H.WRITER_START_TIME)),
            heartbeat_age_s=round((time.monotonic_ns() - seg.get(H.HEARTBEAT_NS)) / 1e9, 3))
    finally:
        seg.close()


def list_segments(instance: str | None = None) -> list[SegmentInfo]:
    """Every ``microstream.*`` file in the shared-memory directory, optionally of one instance."""
    out = []
    for name in sorted(os.listdir(SHM_DIR)):
        parts = parse_segment_name(name)
        if parts is None or (instance is not None and parts["instance"] != instance):
            continue
        try:
            out.append(_info(name, parts))
        except FileNotFoundError:
            continue  # removed while we looked
    return out


def gc_segments(instance: str | None = None, dry_run: bool = False) -> list[str]:
    """Remove segments that were closed or whose writer died, with their doorbells.

    Each file is re-checked under its writer lock just before it is removed (see
    :mod:`shm.claim`), so a writer that claims a segment while gc runs keeps it. A segment in
    state INIT (created, no writer yet) is kept, and files named like ours but unreadable are
    reported by ``list_segments`` and never removed. Returns the names removed (with
    ``dry_run``: the names that looked removable).
    """
    infos = list_segments(instance)
    names = {i.name for i in infos}
    if dry_run:
        dead = {i.name for i in infos if i.kind in ("ring", "latest") and (
            i.state == SegmentState.CLOSED.name
            or (i.state == SegmentState.RUNNING.name and not i.writer_alive))}
        return sorted(dead | {i.name for i in infos if i.kind == "wake"
                              and (i.name[:-5] in dead or i.name[:-5] not in names)})
    removed = [i.name for i in infos if i.kind in ("ring", "latest") and remove_if_dead(i.name)]
    removed += [i.name for i in infos
                if i.kind == "wake" and remove_if_dead(i.name, ring_name=i.name[:-5])]
    return sorted(removed)
