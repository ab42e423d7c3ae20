"""Find bus segments and remove the ones whose writer is gone (``microstream shm ls | gc``)."""

from __future__ import annotations

import os
import time

import msgspec

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
            generation=seg.get(H.GENERATION), state=SegmentState(seg.get(H.STATE)).name,
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

    A segment in state INIT with no writer yet is kept (a supervisor may have just created it);
    unreadable files named like ours are reported by ``list_segments`` but never removed.
    Returns the removed (or, with ``dry_run``, removable) names.
    """
    infos = list_segments(instance)
    rings = {i.name for i in infos if i.kind in ("ring", "latest")}
    dead = {i.name for i in infos if i.kind in ("ring", "latest") and (
        i.state == SegmentState.CLOSED.name
        or (i.state == SegmentState.RUNNING.name and not i.writer_alive))}
    doomed = sorted(dead | {i.name for i in infos if i.kind == "wake"
                            and (i.name[:-5] in dead or i.name[:-5] not in rings)})
    if not dry_run:
        for name in doomed:
            try:
                os.unlink(os.path.join(SHM_DIR, name))
            except FileNotFoundError:
                pass
    return doomed
