"""A private redis-server per test (Unix socket in the test's tmp dir), stopped after it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.embedded_redis import EmbeddedRedis


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A running server; ``.url`` for the publisher, ``.socket_path`` for redis-py."""
    # short path: a Unix socket path must stay under 108 bytes
    with EmbeddedRedis(tmp_path / "r") as server:
        yield server
