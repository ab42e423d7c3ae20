"""A small asyncio HTTP/1.1 GET client for exchange REST snapshots, with a weight budget.

The feeds need a handful of public GETs (Binance depth snapshots and USD-M open interest), so
a full HTTP stack is not worth a dependency: one request per connection (``Connection:
close``), ``Content-Length`` or chunked bodies, TLS for ``https``. :class:`RestBudget` keeps
the request weight inside a per-minute budget, follows ``X-MBX-USED-WEIGHT-1M`` when the
exchange reports it, and stops every request until ``Retry-After`` has passed after a 429 or
418 (Binance bans IPs that keep going).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from urllib.parse import urlsplit

import msgspec

__all__ = ["RestBudget", "RestError", "RestResponse", "http_get"]

_MAX_BODY = 16 << 20


class RestError(Exception):
    """A REST request failed before an HTTP status arrived (connect, TLS, protocol)."""


class RestResponse(msgspec.Struct, frozen=True):
    """Status, lower-cased headers and body of one answer."""

    status: int
    headers: dict[str, str]
    body: bytes


async def http_get(url: str, timeout_s: float = 10.0) -> RestResponse:
    """GET ``url``; raises :class:`RestError` on transport or protocol failure."""
    try:
        return await asyncio.wait_for(_get(url), timeout_s)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # any malformed answer is a failed request, never a dead task
        raise RestError(f"GET {url}: {type(exc).__name__}: {exc}") from None


async def _get(url: str) -> RestResponse:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    secure = parts.scheme == "https"
    port = parts.port or (443 if secure else 80)
    reader, writer = await asyncio.open_connection(
        parts.hostname, port, ssl=ssl.create_default_context() if secure else None)
    try:
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        writer.write(f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nUser-Agent: "
                     "microstream\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
                     .encode())
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            key, sep, value = line.partition(":")
            if sep:
                headers[key.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    break
                body += await reader.readexactly(size)
                await reader.readexactly(2)
                if len(body) > _MAX_BODY:
                    raise ValueError("body too large")
        elif "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        else:  # no length: the body ends with the connection
            chunks = bytearray()
            while chunk := await reader.read(65536):
                chunks += chunk
                if len(chunks) > _MAX_BODY:
                    raise ValueError("body too large")
            body = bytes(chunks)
        return RestResponse(status, headers, body)
    finally:
        writer.close()


class RestBudget:
    """Per-minute request weight budget shared by one exchange's REST calls."""

    def __init__(self, weight_per_min: int) -> None:
        if weight_per_min <= 0:
            raise ValueError("weight_per_min must be > 0")
        self.weight_per_min = weight_per_min
        self.used = 0                # weight spent in the current minute (ours or reported)
        self._minute = self._now_minute()
        self.blocked_until = 0.0     # monotonic seconds; set by 429/418 Retry-After
        self.rejections = 0

    @staticmethod
    def _now_minute() -> int:
        return int(time.time() // 60)

    def delay_s(self, weight: int) -> float:
        """Seconds to wait before a request of ``weight`` fits (0: go now)."""
        now = time.monotonic()
        if now < self.blocked_until:
            return self.blocked_until - now
        minute = self._now_minute()
        if minute != self._minute:
            self._minute, self.used = minute, 0
        if self.used + weight <= self.weight_per_min:
            return 0.0
        return 60.0 - time.time() % 60 + 0.05

    async def acquire(self, weight: int) -> None:
        """Wait until ``weight`` fits in the budget, then spend it."""
        while (delay := self.delay_s(weight)) > 0:
            await asyncio.sleep(delay)
        self.used += weight

    def observe(self, response: RestResponse) -> bool:
        """Take the exchange's view of our usage from an answer; False for 429/418 (then
        nothing is sent until ``Retry-After``, at least 1 s)."""
        used = response.headers.get("x-mbx-used-weight-1m")
        if used is not None and used.isdigit():
            self.used = max(self.used, int(used))
        if response.status in (418, 429):
            self.rejections += 1
            try:
                retry = float(response.headers.get("retry-after", "1"))
            except ValueError:
                retry = 1.0
            self.blocked_until = time.monotonic() + max(1.0, retry)
            return False
        return True
