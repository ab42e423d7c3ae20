"""Named shared-memory segments on ``os.open`` + ``mmap`` (never the resource tracker).

``multiprocessing.shared_memory`` is avoided on purpose: attaching registers the segment with the
resource tracker, which can unlink a live segment when an unrelated reader exits (CPython
gh-82300), and it cannot map read-only. Writers create files ``O_CREAT|O_EXCL`` with mode 0640 and
map them ``MAP_SHARED|MAP_POPULATE``; readers open ``O_RDONLY`` and map ``PROT_READ`` so a consumer
cannot corrupt the bus.
"""

from __future__ import annotations

import mmap
import os
import re
import time

import numpy as np

from .errors import LayoutMismatch, SegmentNotFound
from .layout import HEADER_SIZE, LAYOUT_VERSION, MAGIC, H

__all__ = [
    "SHM_DIR",
    "Segment",
    "parse_segment_name",
    "process_start_time",
    "segment_name",
    "writer_alive",
]

SHM_DIR = os.environ.get("MICROSTREAM_SHM_DIR", "/dev/shm")
_PART = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
_NAME = re.compile(
    r"^microstream\.(?P<instance>[a-z0-9_-]+)\.(?P<exchange>[a-z0-9_-]+)\."
    r"(?P<stream>[a-z0-9_-]+)\.v(?P<layout>\d+)(?:\.(?P<suffix>latest|wake))?$"
)


def segment_name(instance: str, exchange: str, stream: str, layout: int = LAYOUT_VERSION,
                 suffix: str = "") -> str:
    """``microstream.<instance>.<exchange>.<stream>.v<layout>[.<suffix>]``.

    Parts are lowercase ``[a-z0-9_-]``, up to 32 characters; ValueError names the bad part.
    """
    for label, part in (("instance", instance), ("exchange", exchange), ("stream", stream)):
        if not _PART.match(part):
            raise ValueError(f"bad segment name part {label}={part!r}: use [a-z0-9_-], ≤32 chars")
    if suffix not in ("", "latest", "wake"):
        raise ValueError(f"bad segment suffix {suffix!r}")
    name = f"microstream.{instance}.{exchange}.{stream}.v{layout}"
    return f"{name}.{suffix}" if suffix else name


def parse_segment_name(name: str) -> dict[str, str] | None:
    """Split a bus file name into its parts, or ``None`` if it is not one of ours."""
    m = _NAME.match(name)
    return {k: (v or "") for k, v in m.groupdict().items()} if m else None


def process_start_time(pid: int) -> int:
    """Start time of ``pid`` in clock ticks since boot (``/proc/<pid>/stat`` field 22), or 0."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return 0
    # The command name (field 2) may contain spaces and ')': split after the last ')'.
    return int(stat[stat.rindex(b")") + 2:].split()[19])


def writer_alive(pid: int, start_time: int) -> bool:
    """True if ``pid`` runs and is the process that started at ``start_time`` (not a reused pid)."""
    return pid > 0 and process_start_time(pid) == start_time != 0


class Segment:
    """One mapped bus file: header accessors plus the raw mapping.

    ``words`` is a u64 view of the header page; ``base`` is the mapping's address for the
    kernels in :mod:`shm.atomics`. Stores made through ``words`` from Python are separate C
    stores in program order; on x86-64 (TSO) that keeps them ordered for other processes.
    """

    __slots__ = ("_bytes", "_mm", "base", "inode", "name", "path", "size", "words", "writable")

    def __init__(self, name: str, path: str, mm: mmap.mmap, writable: bool, inode: int):
        self.name = name
        self.path = path
        self.writable = writable
        self.size = len(mm)
        self.inode = inode
        self._mm = mm
        self._bytes = np.frombuffer(mm, dtype=np.uint8)
        self.words = self._bytes[:HEADER_SIZE].view(np.uint64)
        self.base = int(self._bytes.ctypes.data)

    # -- creation and opening -------------------------------------------------------------
    @classmethod
    def from_fd(cls, name: str, fd: int, writable: bool) -> Segment:
        """Map the whole file behind ``fd`` (the caller keeps and closes ``fd``).

        Writers map ``MAP_SHARED|MAP_POPULATE`` so that the hot path never page-faults.
        """
        st = os.fstat(fd)
        if writable:
            flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
            mm = mmap.mmap(fd, st.st_size, flags=flags, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        else:
            mm = mmap.mmap(fd, st.st_size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
        return cls(name, os.path.join(SHM_DIR, name), mm, writable, st.st_ino)

    @classmethod
    def open(cls, name: str, writable: bool = False, magic: int = MAGIC) -> Segment:
        """Map an existing segment, read-only unless ``writable``, and check its magic.

        A file that is empty or whose magic is still 0 is a segment its writer is creating
        (the header is written magic last): :class:`SegmentNotFound`, like a missing one, so a
        consumer that attaches early simply retries."""
        path = os.path.join(SHM_DIR, name)
        try:
            fd = os.open(path, os.O_RDWR if writable else os.O_RDONLY)
        except FileNotFoundError:
            raise SegmentNotFound(f"segment {name} not found in {SHM_DIR}") from None
        try:
            size = os.fstat(fd).st_size
            if size == 0:
                raise SegmentNotFound(f"segment {name} is being created")
            if size < HEADER_SIZE:
                raise LayoutMismatch(f"segment {name}: {size} bytes is smaller than a header")
            seg = cls.from_fd(name, fd, writable)
        finally:
            os.close(fd)
        if seg.get(H.MAGIC) != magic:
            found = seg.get(H.MAGIC)
            seg.close()
            if found == 0:
                raise SegmentNotFound(f"segment {name} is being created")
            raise LayoutMismatch(f"segment {name}: bad magic (not a microstream segment)")
        if magic == MAGIC and seg.get(H.LAYOUT_VERSION) != LAYOUT_VERSION:
            version = seg.get(H.LAYOUT_VERSION)
            seg.close()
            raise LayoutMismatch(f"segment {name}: layout v{version}, this build reads "
                                 f"v{LAYOUT_VERSION}")
        return seg

    # -- header access --------------------------------------------------------------------
    def get(self, offset: int) -> int:
        """Load the u64 header field at byte ``offset``."""
        return int(self.words[offset >> 3])

    def set(self, offset: int, value: int) -> None:
        """Store the u64 header field at byte ``offset`` (writer only)."""
        self.words[offset >> 3] = value

    def get_text(self, offset: int, size: int) -> str:
        """Read a NUL-padded UTF-8 string from the header."""
        return bytes(self._bytes[offset:offset + size]).split(b"\0", 1)[0].decode()

    def set_text(self, offset: int, size: int, text: str) -> None:
        """Store a NUL-padded UTF-8 string into the header; ValueError if it does not fit."""
        raw = text.encode()
        if len(raw) >= size:
            raise ValueError(f"segment {self.name}: {len(raw)}-byte header text exceeds {size - 1}")
        self._bytes[offset:offset + size] = 0
        self._bytes[offset:offset + len(raw)] = np.frombuffer(raw, np.uint8)

    def view(self, offset: int, dtype: np.dtype, count: int) -> np.ndarray:
        """A numpy view of ``count`` ``dtype`` items at byte ``offset`` (read-only if mapped so)."""
        return np.frombuffer(self._mm, dtype=dtype, count=count, offset=offset)

    def memory(self) -> memoryview:
        """A memoryview of the whole mapping; release it before :meth:`close`."""
        return memoryview(self._mm)

    def path_inode(self) -> int:
        """Inode now at this segment's path (0 if removed); differs from ``inode`` if recreated."""
        try:
            return os.stat(self.path).st_ino
        except FileNotFoundError:
            return 0

    def heartbeat(self) -> None:
        """Store the monotonic clock into the heartbeat field (writer's idle tick)."""
        self.set(H.HEARTBEAT_NS, time.monotonic_ns())

    # -- teardown -------------------------------------------------------------------------
    def unlink(self) -> None:
        """Remove the file; existing mappings stay valid until closed."""
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def close(self) -> None:
        """Unmap. If a caller still holds a view, the mapping closes when that view and this
        object are both gone."""
        self.words = self._bytes = None  # type: ignore[assignment]
        try:
            self._mm.close()
        except BufferError:
            pass  # views exported to the caller keep the mapping alive; GC closes it
