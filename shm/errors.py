"""Errors raised by the bus. Every message names the segment it concerns."""

from __future__ import annotations

__all__ = ["LayoutMismatch", "SegmentNotFound", "ShmError", "WriterBusy", "WriterGone"]


class ShmError(Exception):
    """Base class of every bus error."""


class SegmentNotFound(ShmError, FileNotFoundError):
    """No segment of that name exists under the shared-memory directory."""


class LayoutMismatch(ShmError):
    """The segment's magic, layout version, dtype or geometry is not what the caller expects."""


class WriterGone(ShmError):
    """The segment's writer closed it or died, and no new writer has replaced it."""


class WriterBusy(ShmError):
    """Another live process already writes this segment (the bus is single-writer)."""
