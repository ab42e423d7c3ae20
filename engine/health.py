"""HTTP health and metrics on loopback: ``/metrics``, ``/healthz``, ``/readyz``.

A ``ThreadingHTTPServer`` on a daemon thread of the supervisor. It only reads: shared memory
(through :mod:`engine.status` and :mod:`engine.metrics`) and the supervisor's last tick time.

* ``/healthz``: 200 while the supervisor loop ticked within the last 2 s, else 503;
* ``/readyz``: 200 when every child is ready (feeds connected with no silent channel, detector
  kernels warm, publisher connected with its breaker not OPEN), else 503;
* both answer JSON with per-component status; ``/metrics`` is Prometheus text format.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import msgspec

from .metrics import MetricsExporter
from .status import read_status

__all__ = ["HealthServer"]

log = logging.getLogger("microstream.health")

_ALIVE_NS = 2_000_000_000


class HealthServer:
    """Serves one instance's health on ``host:port`` (``port`` 0: any free port; see
    :attr:`port` after construction). ``last_tick_ns`` returns the supervisor loop's last
    tick on ``time.monotonic_ns``."""

    def __init__(self, instance: str, host: str, port: int,
                 last_tick_ns: Callable[[], int]) -> None:
        self.instance = instance
        self.exporter = MetricsExporter(instance)
        self._lock = threading.Lock()   # the exporter's readers are not thread-safe
        self._last_tick_ns = last_tick_ns
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                try:
                    code, ctype, body = server.answer(self.path.split("?", 1)[0])
                except Exception as exc:   # a scrape must never take the supervisor down
                    log.exception("health: %s failed", self.path)
                    code, ctype, body = 500, "text/plain", f"error: {exc!r}\n".encode()
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass   # scrapes every few seconds would flood the journal

        self._httpd = ThreadingHTTPServer((host, port), Handler)
        self._httpd.daemon_threads = True
        self.host, self.port = host, self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="health",
                                        daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """``http://host:port``."""
        return f"http://{self.host}:{self.port}"

    def answer(self, path: str) -> tuple[int, str, bytes]:
        """Status code, content type and body for ``path``."""
        if path == "/metrics":
            with self._lock:
                text = self.exporter.render()
            return 200, "text/plain; version=0.0.4; charset=utf-8", text.encode()
        if path in ("/healthz", "/readyz"):
            status = read_status(self.instance)
            age = time.monotonic_ns() - self._last_tick_ns()
            alive = status.running and age < _ALIVE_NS
            ok = alive if path == "/healthz" else alive and status.ready
            body = {"status": "ok" if ok else "unavailable", "instance": self.instance,
                    "supervisor_loop_age_s": round(age / 1e9, 3), "ready": status.ready,
                    "components": {c.name: {"state": c.state, "ready": c.ready, "pid": c.pid,
                                            "restarts": c.restarts,
                                            "heartbeat_age_s": c.heartbeat_age_s}
                                   for c in status.components}}
            return (200 if ok else 503), "application/json", msgspec.json.encode(body)
        return 404, "text/plain", b"not found: try /metrics, /healthz or /readyz\n"

    def close(self) -> None:
        """Stop serving and close the exporter's readers."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5.0)
        with self._lock:
            self.exporter.close()
