"""Shared fixtures: a unique bus instance per test, and removal of everything it left."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import shm

PROCS = Path(__file__).parent / "shm" / "bus_procs.py"


@pytest.fixture
def instance() -> Iterator[str]:
    """A fresh instance name; every segment of it is removed after the test."""
    name = "t" + uuid.uuid4().hex[:10]
    yield name
    for info in shm.list_segments(name):
        try:
            os.unlink(os.path.join(shm.SHM_DIR, info.name))
        except FileNotFoundError:
            pass


def spawn(role: str, *args: object) -> subprocess.Popen[str]:
    """Start ``tests/shm/bus_procs.py ROLE ARGS...`` as an unrelated process (text pipes)."""
    return subprocess.Popen(
        [sys.executable, str(PROCS), role, *map(str, args)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
