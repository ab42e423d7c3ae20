"""One pipelined, non-blocking Redis connection with every reply matched to its command.

Commands are written as pre-encoded RESP (see :mod:`.resp`) into an output buffer that
:meth:`RedisLink.flush` hands to the socket as far as it takes it; nothing waits for a
batch's replies before the next batch is written. Redis answers in order, so an in-flight
FIFO of ``[token, replies still expected, write time, first error]`` matches each reply
(parsed by ``hiredis.Reader``) to the message it belongs to; a message may carry several
commands (PUBLISH + SET + XADD) and is confirmed when the last of its replies arrives.

A lost connection (:class:`LinkDown`) leaves its unconfirmed messages in :meth:`drop`'s
result, in order, so the publisher can send them again.
"""

from __future__ import annotations

import socket
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import hiredis

from .resp import RedisAddress

__all__ = ["LinkDown", "RedisLink"]

_RECV_BYTES = 1 << 18


class LinkDown(ConnectionError):
    """The connection to Redis failed or was closed by the server."""


OnReply = Callable[[Any, "Exception | None", int], None]


class RedisLink:
    """A connection to ``address``; ``clock`` stamps writes (ns, the bus's clock)."""

    def __init__(self, address: RedisAddress, *, connect_timeout_s: float = 0.5,
                 clock: Callable[[], int] = time.perf_counter_ns) -> None:
        self.address = address
        self.connect_timeout_s = connect_timeout_s
        self.clock = clock
        self.sock: socket.socket | None = None
        self._reader = hiredis.Reader()
        self._out = bytearray()
        # [token, replies still expected, write time ns, first error or None]
        self.inflight: deque[list[Any]] = deque()
        self.setup_errors = 0

    @property
    def connected(self) -> bool:
        """True while a socket is open."""
        return self.sock is not None

    @property
    def ready(self) -> bool:
        """True once connected and AUTH/SELECT were accepted: data written before that could
        land in the wrong database (Redis runs a pipeline's commands after a failed SELECT)."""
        # AUTH/SELECT are written first at connect (token None): while the oldest unconfirmed
        # entry is one of them, they are not accepted yet
        inflight = self.inflight
        return self.sock is not None and not (inflight and inflight[0][0] is None)

    @property
    def pending_bytes(self) -> int:
        """Bytes written by the publisher that the socket has not taken yet."""
        return len(self._out)

    def connect(self) -> None:
        """Open the socket (blocking up to ``connect_timeout_s``), then switch to
        non-blocking and queue AUTH/SELECT (:attr:`ready` once they are accepted); raises
        :class:`LinkDown` on failure."""
        if self.sock is not None:
            return
        addr = self.address
        try:
            if addr.unix_path is not None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                target: Any = addr.unix_path
            else:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                target = (addr.host, addr.port)
            sock.settimeout(self.connect_timeout_s)
            try:
                sock.connect(target)
            except OSError:
                sock.close()
                raise
        except OSError as exc:
            raise LinkDown(f"redis {self.describe()}: connect failed: {exc}") from None
        sock.setblocking(False)
        self.sock = sock
        self._reader = hiredis.Reader()
        for command in addr.setup_commands():
            self.write(command, None, 1)

    def describe(self) -> str:
        """``unix:/path`` or ``host:port``, for messages."""
        a = self.address
        return f"unix:{a.unix_path}" if a.unix_path is not None else f"{a.host}:{a.port}"

    def write(self, data: bytes, token: Any, replies: int) -> None:
        """Append ``data`` (``replies`` complete commands) for ``token``; sent by :meth:`flush`."""
        self._out += data
        self.inflight.append([token, replies, self.clock(), None])

    def flush(self) -> None:
        """Give the socket as much of the output buffer as it takes now."""
        sock = self.sock
        if sock is None or not self._out:
            return
        try:
            sent = sock.send(self._out)
        except BlockingIOError:
            return
        except OSError as exc:
            raise LinkDown(f"redis {self.describe()}: write failed: {exc}") from None
        del self._out[:sent]

    def read(self, on_reply: OnReply) -> int:
        """Parse every reply available now; ``on_reply(token, error, write_ns)`` once per
        message when its last reply arrives. Returns the number of replies parsed."""
        sock = self.sock
        if sock is None:
            return 0
        parsed = 0
        reader, inflight = self._reader, self.inflight
        while True:
            try:
                data = sock.recv(_RECV_BYTES)
            except BlockingIOError:
                return parsed
            except OSError as exc:
                raise LinkDown(f"redis {self.describe()}: read failed: {exc}") from None
            if not data:
                raise LinkDown(f"redis {self.describe()}: connection closed by the server")
            reader.feed(data)
            while True:
                reply = reader.gets()
                if reply is False:
                    break
                parsed += 1
                if not inflight:
                    raise LinkDown(f"redis {self.describe()}: a reply no command asked for")
                head = inflight[0]
                if isinstance(reply, hiredis.ReplyError) and head[3] is None:
                    head[3] = reply
                head[1] -= 1
                if head[1] == 0:
                    inflight.popleft()
                    if head[0] is None:   # AUTH / SELECT
                        if head[3] is not None:
                            self.setup_errors += 1
                            raise LinkDown(f"redis {self.describe()}: connection setup "
                                           f"refused: {head[3]}")
                    else:
                        on_reply(head[0], head[3], head[2])
            if len(data) < _RECV_BYTES:
                return parsed

    def oldest_write_ns(self) -> int:
        """Write time of the oldest unconfirmed message (0 if none)."""
        return self.inflight[0][2] if self.inflight else 0

    def drop(self) -> list[Any]:
        """Close the connection; returns the unconfirmed messages' tokens, oldest first."""
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = None
        tokens = [item[0] for item in self.inflight if item[0] is not None]
        self.inflight.clear()
        self._out.clear()
        return tokens
