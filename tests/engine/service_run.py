"""Helpers for the service tests: ``microstream run --simulate`` as a real process, its
sd_notify messages on a datagram socket, its HTTP endpoints and its status."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def write_config(path: Path, instance: str, extra: str = "") -> Path:
    """A small simulated engine: one symbol per exchange at 100 events/s, fast restarts."""
    path.write_text(f"""[engine]
instance = "{instance}"

[simulate]
symbols = 1
rate_hz = 100.0
timeline_s = 60.0
whale_min_usd = 5000.0

[detectors]
enabled = true

[publisher]
enabled = true
redis_url = "embedded"
breaker_rtt_p99_ms = 50.0

[service]
http_port = 0
heartbeat_timeout_s = 3.0
restart_backoff_initial_s = 0.2
restart_backoff_max_s = 1.0
status_interval_s = 1.0
drain_timeout_s = 2.0
{extra}
""")
    return path


class NotifyListener:
    """A datagram socket standing in for systemd's ``NOTIFY_SOCKET``; collects messages."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="ms-notify-")
        self.path = os.path.join(self.dir, "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.messages: list[str] = []
        self._stop = False
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except TimeoutError:
                continue
            except OSError:
                return

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)
        self.sock.close()
        os.unlink(self.path)
        os.rmdir(self.dir)


class Engine:
    """``microstream run --simulate -c CONFIG`` with stdout parsed for its URLs."""

    def __init__(self, config: Path, log: Path, env: dict[str, str] | None = None,
                 simulate: bool = True) -> None:
        args = [sys.executable, "-m", "engine", "run", "-c", str(config)]
        self.log = log
        self.proc = subprocess.Popen(args + (["--simulate"] if simulate else []),
                                     stdout=subprocess.PIPE, stderr=open(log, "wb"), text=True,
                                     cwd=REPO, env={**os.environ, **(env or {})})
        self.banner = ""
        self.metrics_url = self.redis_socket = ""

    def read_banner(self, timeout_s: float = 60.0) -> str:
        """The "where to look" lines (ends with the Ctrl-C line)."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise AssertionError(f"engine exited: {self.log_tail()}")
            self.banner += line
            if line.startswith("Ctrl-C"):
                break
        m = re.search(r"(http://[\d.:]+)/metrics", self.banner)
        self.metrics_url = m.group(1) if m else ""
        m = re.search(r"redis-cli -s (\S+)", self.banner)
        self.redis_socket = m.group(1) if m else ""
        return self.banner

    def http(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.metrics_url + path, timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def log_tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:]

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 90.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def status(instance: str) -> dict[str, Any]:
    """``microstream status --json``."""
    out = subprocess.run([sys.executable, "-m", "engine", "status", "--json", "--instance",
                          instance], capture_output=True, text=True, timeout=60, cwd=REPO)
    return json.loads(out.stdout)


def wait_until(what: str, check: Callable[[], Any], timeout_s: float, engine: Engine) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        if engine.proc.poll() is not None:
            raise AssertionError(f"engine exited {engine.proc.returncode} while waiting for "
                                 f"{what}: {engine.log_tail()}")
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}: {engine.log_tail()}")
