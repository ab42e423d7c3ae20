"""Keeping one exchange WebSocket connection up: connect, subscribe, ping, watch, rotate, retry.

The picows listener is the hot path: ``on_ws_frame`` stamps the frame (wall clock and
monotonic), hands the payload to ``Feed.on_frame`` and returns — no awaits, no logging.
Everything else runs in :meth:`FeedConnection.run`, an asyncio task per connection:

* reconnect with capped exponential backoff and full jitter (reset once a connection lived);
* a stale watchdog: no frame for ``stale_after_s`` → close and reconnect;
* the exchange's application ping (Bybit ``{"op":"ping"}``, OKX text ``ping``);
* proactive rotation before ``max_lifetime_s`` (Binance cuts at 24 h): a second connection is
  opened and subscribed while the first keeps feeding, both feed for ``overlap_s`` (the feeds
  drop what they already have by sequence and id), then the old one closes — no book loss.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable

import msgspec
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from .feed import ConnectionSpec, Count, Feed

__all__ = ["ConnectionSettings", "FeedConnection"]

log = logging.getLogger("microstream.connection")


class ConnectionSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Timing of reconnects and watchdogs (seconds)."""

    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    stale_after_s: float = 30.0
    handshake_timeout_s: float = 10.0
    overlap_s: float = 2.0
    healthy_after_s: float = 10.0   # a connection that lived this long resets the backoff

    def __post_init__(self) -> None:
        for name in ("backoff_initial_s", "backoff_max_s", "stale_after_s",
                     "handshake_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0")


class _Listener(WSListener):
    """Hot path: stamp, hand over, return."""

    def __init__(self, key: str, on_frame: Callable[[str, bytes, int, int], None]) -> None:
        self.key = key
        self.on_frame = on_frame
        self.last_frame_ns = time.monotonic_ns()
        self.disconnected = asyncio.Event()

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        mono = time.perf_counter_ns()
        recv = time.time_ns()
        self.last_frame_ns = mono
        kind = frame.msg_type
        if kind is WSMsgType.TEXT or kind is WSMsgType.BINARY:
            self.on_frame(self.key, frame.get_payload_as_bytes(), recv, mono)
        elif kind is WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.disconnected.set()


class FeedConnection:
    """One :class:`ConnectionSpec` of a feed, kept up by :meth:`run` until :meth:`stop`."""

    def __init__(self, feed: Feed, spec: ConnectionSpec,
                 settings: ConnectionSettings = ConnectionSettings()) -> None:  # noqa: B008
        self.feed = feed
        self.spec = spec
        self.settings = settings
        self.connected = False
        self.connects = 0
        self.connected_at_ns = 0   # time.monotonic_ns() of the current connection's start
        self.rotations = 0
        self.transport: WSTransport | None = None
        self._stop = asyncio.Event()
        self._last_log = -1e9
        self.suppressed = 0

    def _log(self, level: int, msg: str, *args: object) -> None:
        if level >= logging.WARNING:  # rate-limited: a flapping venue must not flood the log
            now = time.monotonic()
            if now - self._last_log < 5.0:
                self.suppressed += 1
                return
            self._last_log = now
            if self.suppressed:
                msg += f" ({self.suppressed} similar messages suppressed)"
                self.suppressed = 0
        log.log(level, "%s/%s: " + msg, self.feed.name, self.spec.key, *args)

    def send(self, frame: bytes) -> bool:
        """Send a text frame on the live connection (False if there is none)."""
        if self.transport is None or not self.connected:
            return False
        self.transport.send(WSMsgType.TEXT, frame)
        return True

    def stop(self) -> None:
        """Close the connection and end :meth:`run`."""
        self._stop.set()
        if self.transport is not None:
            self.transport.disconnect()

    async def _open(self) -> tuple[WSTransport, _Listener]:
        key, on_frame = self.spec.key, self.feed.on_frame
        transport, listener = await ws_connect(
            lambda: _Listener(key, on_frame), self.spec.url,
            websocket_handshake_timeout=self.settings.handshake_timeout_s,
            enable_auto_pong=True)
        for frame in self.spec.subscribe:
            transport.send(WSMsgType.TEXT, frame)
        return transport, listener  # type: ignore[return-value]

    async def run(self) -> None:
        """Connect and keep connecting until stopped."""
        try:
            await self._run(None)
        finally:
            self.connected = False
            if self.transport is not None:  # also a rotation's successor: never leaked
                self.transport.disconnect()

    async def _run(self, current: tuple[WSTransport, _Listener] | None) -> None:
        attempt = 0
        s = self.settings
        while not self._stop.is_set():
            if current is None:
                try:
                    current = await self._open()
                except Exception as exc:  # any connect failure: retry with backoff
                    self._log(logging.WARNING, "connect failed (%s: %s)", type(exc).__name__,
                              exc)
                    attempt += 1
                    await self._sleep(self._backoff(attempt))
                    continue
                if self.connects:
                    self.feed.counts[Count.RECONNECTS] += 1
                self.connects += 1
                self._log(logging.INFO, "connected to %s", self.spec.url)
            transport, listener = current
            if not self.connected:
                self.connected_at_ns = time.monotonic_ns()
            self.transport, self.connected = transport, True
            opened = time.monotonic()
            reason, successor = await self._watch(transport, listener, opened)
            transport.disconnect()
            if successor is not None:  # rotated: the successor is already subscribed
                current = successor
                self.transport = successor[0]
                self.rotations += 1
                continue
            current = None
            self.connected = False
            self.feed.on_disconnect(self.spec.key, time.time_ns(), time.perf_counter_ns())
            if self._stop.is_set():
                break
            self._log(logging.WARNING, "disconnected (%s)", reason)
            attempt = 1 if time.monotonic() - opened >= s.healthy_after_s else attempt + 1
            await self._sleep(self._backoff(attempt))

    async def _watch(self, transport: WSTransport, listener: _Listener, opened: float
                     ) -> tuple[str, tuple[WSTransport, _Listener] | None]:
        """Wait until the connection ends or is rotated; returns why (and the successor)."""
        s, spec = self.settings, self.spec
        next_ping = time.monotonic() + spec.ping_interval_s
        tick = min(1.0, s.stale_after_s / 4, spec.ping_interval_s / 4)
        while True:
            try:
                await asyncio.wait_for(listener.disconnected.wait(), tick)
                return "closed by peer", None
            except TimeoutError:
                pass
            if self._stop.is_set():
                return "stopped", None
            now = time.monotonic()
            if (time.monotonic_ns() - listener.last_frame_ns) / 1e9 > s.stale_after_s:
                self.feed.counts[Count.STALE_CONNECTIONS] += 1
                return f"stale: no frame for {s.stale_after_s:g} s", None
            if spec.ping is not None and now >= next_ping:
                transport.send(WSMsgType.TEXT, spec.ping)
                self.feed.counts[Count.PINGS] += 1
                next_ping = now + spec.ping_interval_s
            if spec.max_lifetime_s > 0 and now - opened >= spec.max_lifetime_s:
                successor = await self._successor()
                if successor is not None:
                    return "rotated", successor
                opened = time.monotonic() - spec.max_lifetime_s + 60.0  # retry in a minute

    async def _successor(self) -> tuple[WSTransport, _Listener] | None:
        """Make-before-break: open and subscribe the successor and let both connections feed
        for ``overlap_s`` (the feed drops what it already has); None if it cannot open."""
        self.feed.begin_overlap()  # repeats of what the old connection delivered are expected
        try:
            try:
                successor = await self._open()
            except Exception as exc:
                self._log(logging.WARNING, "rotation: successor failed (%s)", exc)
                return None
            await self._sleep(self.settings.overlap_s)
        finally:
            self._end_overlap()
        self._log(logging.INFO, "rotating after %.0f s", self.spec.max_lifetime_s)
        return successor

    def _end_overlap(self) -> None:
        # frames of the old connection still in flight arrive just after it is closed
        asyncio.get_running_loop().call_later(0.5, self._overlap_done)

    def _overlap_done(self) -> None:
        self.feed.end_overlap(time.time_ns(), time.perf_counter_ns())

    def _backoff(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(cap, initial * 2^attempt)]."""
        s = self.settings
        return random.uniform(0, min(s.backoff_max_s, s.backoff_initial_s * 2 ** attempt))

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stop.wait(), seconds)
        except TimeoutError:
            pass
