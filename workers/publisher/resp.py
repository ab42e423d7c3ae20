"""Pre-encoded RESP2 commands and Redis URLs.

redis-py spends ≈ 7.5 µs per command even pipelined (DESIGN.md §7); the publisher writes the
RESP bytes itself. Everything about a command except its payload is known when a channel is
first seen, so :class:`CommandPrefixes` builds those prefixes once per key and a message costs
one length header and three concatenations.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import parse_qs, unquote, urlsplit

import msgspec

__all__ = ["CommandPrefixes", "RedisAddress", "encode_command", "parse_redis_url"]


def encode_command(*parts: bytes | str | int) -> bytes:
    """One RESP2 array of bulk strings: ``encode_command("SET", "k", b"v")``."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        data = part if isinstance(part, bytes) else str(part).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def _head(*parts: bytes | str | int, args_after: int) -> bytes:
    """The array header and the first bulk strings of a command that takes ``args_after``
    more arguments (the payload last)."""
    body = encode_command(*parts)
    n = len(parts) + args_after
    return b"*%d\r\n" % n + body[body.index(b"\r\n") + 2:]


class CommandPrefixes:
    """The constant parts of the commands for one key (``exchange:symbol:event_type``).

    ``publish(payload)``, ``set_latest(payload)`` and ``xadd(payload)`` return the complete
    RESP bytes of ``PUBLISH key payload``, ``SET latest:key payload PX ttl`` and
    ``XADD stream:key MAXLEN ~ n * data payload``."""

    __slots__ = ("_publish", "_set", "_set_tail", "_xadd", "key")

    def __init__(self, key: str, latest_ttl_ms: int, stream_maxlen: int) -> None:
        self.key = key
        self._publish = _head("PUBLISH", key, args_after=1)
        self._set = _head("SET", f"latest:{key}", args_after=3)
        self._set_tail = encode_command("PX", latest_ttl_ms)[4:]   # the two bulk strings
        self._xadd = _head("XADD", f"stream:{key}", "MAXLEN", "~", stream_maxlen, "*", "data",
                           args_after=1)

    def publish(self, payload: bytes) -> bytes:
        """``PUBLISH key payload``."""
        return b"%s$%d\r\n%s\r\n" % (self._publish, len(payload), payload)

    def set_latest(self, payload: bytes) -> bytes:
        """``SET latest:key payload PX ttl``."""
        return b"%s$%d\r\n%s\r\n%s" % (self._set, len(payload), payload, self._set_tail)

    def xadd(self, payload: bytes) -> bytes:
        """``XADD stream:key MAXLEN ~ n * data payload``."""
        return b"%s$%d\r\n%s\r\n" % (self._xadd, len(payload), payload)

    def builder(self, publish: bool, latest: bool, xadd: bool) -> Callable[[bytes], bytes]:
        """``f(payload)`` → the commands of the chosen surfaces, in that order, built with one
        ``%`` format (the publisher calls it per record)."""
        parts = [(head, tail) for head, tail, on in ((self._publish, b"", publish),
                                                     (self._set, self._set_tail, latest),
                                                     (self._xadd, b"", xadd)) if on]
        fmt = b"".join(b"%s$%d\r\n%s\r\n" + tail.replace(b"%", b"%%") for _, tail in parts)
        heads = [head for head, _ in parts]
        if len(heads) == 1:
            h0 = heads[0]
            return lambda payload: fmt % (h0, len(payload), payload)
        if len(heads) == 2:
            h0, h1 = heads
            return lambda payload: fmt % (h0, len(payload), payload, h1, len(payload), payload)
        if len(heads) == 3:
            h0, h1, h2 = heads
            return lambda payload: fmt % (h0, len(payload), payload, h1, len(payload), payload,
                                          h2, len(payload), payload)
        return lambda payload: b""


class RedisAddress(msgspec.Struct, frozen=True):
    """Where Redis is: a Unix socket path or a TCP host/port, and the database/password."""

    unix_path: str | None = None
    host: str = "127.0.0.1"
    port: int = 6379
    db: int = 0
    password: str | None = None
    username: str | None = None

    def setup_commands(self) -> list[bytes]:
        """Commands to send first on every new connection (AUTH, SELECT)."""
        out = []
        if self.password is not None:
            auth = ("AUTH", self.username, self.password) if self.username else \
                ("AUTH", self.password)
            out.append(encode_command(*auth))
        if self.db:
            out.append(encode_command("SELECT", self.db))
        return out


def parse_redis_url(url: str) -> RedisAddress:
    """``redis://[[user]:password@]host[:port][/db]`` or ``unix:///path/to.sock[?db=N]``;
    raises ValueError naming the URL for anything else."""
    parts = urlsplit(url)
    try:
        if parts.scheme == "unix":
            if not parts.path:
                raise ValueError("no socket path")
            db = int(parse_qs(parts.query).get("db", ["0"])[0])
            return RedisAddress(unix_path=parts.path, db=db,
                                password=unquote(parts.password) if parts.password else None)
        if parts.scheme == "redis":
            path = parts.path.strip("/")
            return RedisAddress(host=parts.hostname or "127.0.0.1", port=parts.port or 6379,
                                db=int(path) if path else 0,
                                password=unquote(parts.password) if parts.password else None,
                                username=unquote(parts.username) if parts.username else None)
        raise ValueError(f"unsupported scheme {parts.scheme!r} (redis:// or unix://)")
    except ValueError as exc:
        raise ValueError(f"redis url {url!r}: {exc}") from None
