"""The systemd notify protocol without a dependency: datagrams to ``$NOTIFY_SOCKET``.

``READY=1``, ``STATUS=...``, ``WATCHDOG=1`` and ``STOPPING=1`` are single ``AF_UNIX``
``SOCK_DGRAM`` messages (sd_notify(3)); a socket path starting with ``@`` is in the abstract
namespace. Without ``NOTIFY_SOCKET`` (not under systemd) every call is a no-op, so the
supervisor calls it unconditionally.
"""

from __future__ import annotations

import os
import socket

__all__ = ["Notifier"]


class Notifier:
    """Sends notify messages to the socket systemd named in the environment (or nowhere)."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        path = env.get("NOTIFY_SOCKET", "")
        if path.startswith("@"):
            path = "\0" + path[1:]
        self._address = path
        self._sock: socket.socket | None = None
        if path:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.sent = 0
        self.failed = 0
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        # the watchdog is ours only when no WATCHDOG_PID names another process
        mine = not pid or pid == str(os.getpid())
        self.watchdog_s = int(usec) / 1e6 if usec.isdigit() and int(usec) > 0 and mine else 0.0

    @property
    def enabled(self) -> bool:
        """True under systemd (``NOTIFY_SOCKET`` was set)."""
        return self._sock is not None

    def notify(self, *fields: str) -> bool:
        """Send ``fields`` (e.g. ``"READY=1"``, ``"STATUS=..."``) as one message; True if sent.

        A failed send is counted, never raised: supervision must go on without systemd.
        """
        if self._sock is None:
            return False
        msg = "\n".join(f.replace("\n", " ") for f in fields).encode()
        try:
            self._sock.sendto(msg, self._address)
        except OSError:
            self.failed += 1
            return False
        self.sent += 1
        return True

    def ready(self, status: str = "") -> bool:
        """``READY=1`` (with a status line when given)."""
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        """``STATUS=text``: the line ``systemctl status`` shows."""
        return self.notify(f"STATUS={text}")

    def watchdog(self) -> bool:
        """``WATCHDOG=1``: call every ``watchdog_s / 2`` seconds from the supervisor loop."""
        return self.notify("WATCHDOG=1")

    def stopping(self) -> bool:
        """``STOPPING=1``: the ordered shutdown began."""
        return self.notify("STOPPING=1")

    def close(self) -> None:
        """Close the socket."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
