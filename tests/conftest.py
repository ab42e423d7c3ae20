"""Shared fixtures: a unique bus instance per test, and removal of everything it left; a private
redis-server per test."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import shm
from engine.embedded_redis import EmbeddedRedis

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


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A running redis-server on a Unix socket in the test's tmp dir, stopped after the test;
    ``.url`` for the publisher, ``.socket_path`` for redis-py."""
    with EmbeddedRedis(tmp_path / "r") as server:
        yield server
