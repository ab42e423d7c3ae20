"""The venue server: picows WebSocket connections replaying recorded frames, REST on the side.

Each connection gets its own replay from the first frame, starting when it first has a
subscription, and receives only the frames of its topics, rendered as the exchange would send
them. Pacing: the recording's receive times divided by ``speed``, or ``flood`` (as fast as the
socket takes them, waiting only while the transport asks to pause writing).

Each connection keeps its ``position`` (the timeline index it has played up to), so that a client
resynchronising mid-replay gets the book *there* (``books.py``): Binance REST depth answers with
the book at the most advanced position among the connections subscribed to that symbol's depth,
and a Bybit/OKX book topic subscribed after the replay started gets a snapshot message just
before its next frame, never a bare delta.

The send path writes pre-encoded WebSocket frames (unmasked server frames, built once per venue)
straight to the TCP transport, many frames per ``write``: one syscall per frame capped the
venue at ~164 k frames/s. picows' own replies (acks, pongs) go through the same transport, so the
byte stream stays a sequence of whole frames in order.

Intended send times for latency benchmarks are not put into the frames (clients must parse the
exchange's bytes unchanged): ``GET /venue/connections`` publishes each connection's replay start
on CLOCK_MONOTONIC (``time.perf_counter_ns()``, system-wide) and the speed, so frame ``i`` was due
at ``replay_start + (recv_ns[i] - recv_ns[0]) / speed``, computable from the same recording.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import struct
import time
from collections import deque

import msgspec
from picows import (
    WSCloseCode,
    WSFrame,
    WSListener,
    WSMsgType,
    WSTransport,
    WSUpgradeRequest,
    WSUpgradeResponse,
    WSUpgradeResponseWithListener,
    ws_create_server,
)

from .books import DepthBooks, TopicBooks
from .faults import FaultPlan, parse_faults
from .protocol import Session, VenueProtocolError, open_session
from .recording import load_recording
from .rest import RestApi, find_depth_snapshots
from .synthetic import SyntheticConfig, generate

__all__ = ["Venue", "VenueConfig"]

log = logging.getLogger("microstream.venue")
_BATCH_FRAMES = 64  # frames per transport write in flood mode


def ws_text_frame(payload: bytes) -> bytes:
    """An unmasked, final WebSocket text frame (RFC 6455 section 5.2), as a server sends it."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 1 << 16:
        return struct.pack("!BBH", 0x81, 126, n) + payload
    return struct.pack("!BBQ", 0x81, 127, n) + payload


class VenueConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What one venue serves and how fast."""

    exchange: str
    replay: list[str] = []              # recordings, or:
    synthetic: SyntheticConfig | None = None
    speed: float = 1.0                  # 1 = original pacing, 10 = ten times faster
    flood: bool = False                 # ignore pacing: as fast as the socket takes frames
    host: str = "127.0.0.1"
    port: int = 0                       # 0: any free port
    rest_weight_limit_per_min: int = 2400
    faults: str = ""                    # fault spec, see workers.venue.faults
    loop: bool = False                  # restart the timeline when it ends (soak runs)

    def __post_init__(self) -> None:
        if self.speed <= 0:
            raise ValueError(f"speed must be > 0, not {self.speed}")
        if bool(self.replay) == (self.synthetic is not None):
            raise ValueError("give recordings to replay or a synthetic market, not both")
        if self.synthetic is not None and self.synthetic.exchange != self.exchange:
            raise ValueError("the synthetic market's exchange differs from the venue's")


class Venue:
    """A local exchange endpoint; ``await start()`` then ``ws_url``/``rest_url``."""

    def __init__(self, config: VenueConfig) -> None:
        self.config = config
        if config.synthetic is not None:
            merged, state = generate(config.synthetic)
            depth: dict[str, bytes] = state["depth"]  # type: ignore[assignment]
            instruments: list[dict[str, str]] = state["instruments"]  # type: ignore[assignment]
            open_interest: dict[str, list[str]] = state["open_interest"]  # type: ignore[assignment]
        else:
            recordings = [load_recording(p, config.exchange) for p in config.replay]
            merged = list(heapq.merge(*(zip(r.recv_ns, r.topics, r.frames, strict=True)
                                        for r in recordings), key=lambda item: item[0]))
            depth = find_depth_snapshots(recordings)
            instruments, open_interest = [], {}
        self.recv_ns = [m[0] for m in merged]
        self.topics = [m[1] for m in merged]
        self.frames = [m[2] for m in merged]
        self.encoded = [ws_text_frame(f) for f in self.frames]
        self.depth_books = DepthBooks(depth, self.topics, self.frames)
        self.topic_books = TopicBooks(config.exchange, self.topics, self.frames)
        self.rest = RestApi(config.exchange, self._depth_now, config.rest_weight_limit_per_min,
                            instruments, open_interest)
        self.faults = parse_faults(config.faults)
        self.fault_log = FaultPlan(self.faults, "venue", 0)  # connection- and REST-level faults
        self.connections: list[_Connection] = []
        self.closed_connections: deque[dict[str, object]] = deque(maxlen=100)
        self.accepted = 0
        self._server: asyncio.Server | None = None
        self._started = 0.0
        self.port = 0

    @property
    def ws_url(self) -> str:
        """Base WebSocket URL (append the exchange's path)."""
        return f"ws://{self.config.host}:{self.port}"

    @property
    def rest_url(self) -> str:
        """Base REST URL (the same port)."""
        return f"http://{self.config.host}:{self.port}"

    async def start(self) -> None:
        """Listen; ``port`` holds the bound port afterwards."""
        self._server = await ws_create_server(self._accept, self.config.host, self.config.port,
                                              enable_auto_pong=True)
        self.port = self._server.sockets[0].getsockname()[1]
        self._started = time.monotonic()

    async def close(self) -> None:
        """Stop listening and drop every connection."""
        if self._server is not None:
            self._server.close()
        for conn in self.connections:
            conn.close()

    def _accept(self, request: WSUpgradeRequest
                ) -> WSListener | WSUpgradeResponseWithListener | None:
        path = request.path.decode("latin-1")
        if time.monotonic() - self._started < self.faults.refuse_s:
            self.fault_log.record("refuse", path=path)
            return WSUpgradeResponseWithListener(WSUpgradeResponse.create_error_response(
                503, b"venue refusing connections (injected)"), None)
        if request.headers.get("upgrade", "").lower() != "websocket":
            headers: dict[str, str] = {}
            if path == "/venue/connections":
                status, body = 200, msgspec.json.encode({
                    "speed": self.config.speed, "flood": self.config.flood,
                    "recv_ns": [self.recv_ns[0], self.recv_ns[-1]],
                    "rest": {"requests": self.rest.requests, "rejected": self.rest.rejected},
                    "connections": [c.describe() for c in self.connections],
                    "closed": list(self.closed_connections)})
            else:
                status, body, headers = self._rest_fault(path) or self.rest.handle(path)
            headers["Content-Type"] = "application/json"
            response = WSUpgradeResponse.create_error_response(status, body, headers) \
                if status != 200 else WSUpgradeResponse.create_ok_response(body, headers)
            return WSUpgradeResponseWithListener(response, None)
        try:
            session = open_session(self.config.exchange, path)
        except VenueProtocolError as exc:
            log.info("refused %s: %s", path, exc)
            return None  # picows answers 404
        self.accepted += 1
        plan = FaultPlan(self.faults, session.conn_id, self.accepted) if self.faults.active \
            else None
        conn = _Connection(self, session, plan)
        self.connections.append(conn)
        return conn

    def _depth_now(self, key: str, limit: int) -> dict[str, object] | None:
        """The REST depth body of ``key`` at the most advanced position among the connections
        subscribed to its depth stream (the known snapshot when there is none): the book the
        newest events any client holds continue from."""
        feeds = self.depth_books.feeds.get(key, set())
        position = max((c.position for c in self.connections
                        if not feeds.isdisjoint(c.session.topics)), default=-1)
        return self.depth_books.body(key, position, limit)

    def _rest_fault(self, path: str) -> tuple[int, bytes, dict[str, str]] | None:
        spec, draw = self.faults, self.fault_log.draw
        for status, p in ((418, spec.rest_418), (429, spec.rest_429)):
            if p and draw() < p:
                self.fault_log.record(f"rest_{status}", path=path)
                body = b'{"code":-1003,"msg":"Way too much request weight used (injected)."}'
                return status, body, {"Retry-After": "1"}
        return None


class _Connection(WSListener):
    def __init__(self, venue: Venue, session: Session, plan: FaultPlan | None) -> None:
        self.venue = venue
        self.session = session
        self.plan = plan
        self.sent = 0
        self.data_frames = 0  # data frames considered for faults, across loops
        self.loops = 0
        self.replay_starts_ns: list[int] = []
        self.finished = False
        # Timeline index played up to in the current pass (-1: none yet). Stored only where the
        # replay yields, the only moments anything else (REST, subscriptions) can look at it.
        self.position = -1
        self._replaying = False  # a pass has begun: later book subscriptions need a snapshot
        self._pending: set[str] = set()  # book topics waiting for that snapshot
        self._subscribed = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self._task: asyncio.Task[None] | None = None
        self._transport: WSTransport | None = None

    def on_ws_connected(self, transport: WSTransport) -> None:
        self._transport = transport
        if self.session.topics:
            self._subscribed.set()
        self._task = asyncio.get_running_loop().create_task(self._replay(transport))

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.TEXT:
            topics = self.session.topics
            before = set(topics)
            for reply in self.session.on_text(frame.get_payload_as_bytes()):
                transport.send(WSMsgType.TEXT, reply)
            if self._replaying:  # a book topic joining mid-timeline must start with its book
                self._pending.difference_update(before - topics)
                self._pending.update(t for t in topics - before
                                     if self.venue.topic_books.resyncs(t))
            if topics:
                self._subscribed.set()
            else:  # the replay holds at its next yield rather than run through the timeline
                self._subscribed.clear()
        elif frame.msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.close()
        if self in self.venue.connections:
            self.venue.connections.remove(self)
            self.venue.closed_connections.append(self.describe())

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._transport is not None:
            self._transport.disconnect()

    async def _replay(self, transport: WSTransport) -> None:
        await self._subscribed.wait()
        self._replaying = True
        session = self.session
        # identity rendering (most endpoints) can use the venue's pre-encoded frames
        encoded = self.venue.encoded if session.sends_as_recorded else \
            [ws_text_frame(session.render(f)) for f in self.venue.frames]
        while await self._play_once(transport, encoded) and self.venue.config.loop:
            self.loops += 1
        self.finished = True

    async def _play_once(self, transport: WSTransport, encoded: list[bytes]) -> bool:
        """One pass over the timeline; False if a fault closed the connection.

        Pacing runs on CLOCK_MONOTONIC in ns (``perf_counter_ns``, the clock of the published
        replay start): sleep until 1 ms before a frame is due (at least one event-loop pass),
        then spin to the due time, so no frame leaves early (uvloop's timers have millisecond
        resolution). ``position`` is stored before every yield: nothing else runs in between.
        """
        venue, session = self.venue, self.session
        topics, recv = venue.topics, venue.recv_ns
        subscribed, pending = session.topics, self._pending  # both only ever updated in place
        flood, speed = venue.config.flood, venue.config.speed
        write = transport.underlying_transport.write
        clock = time.perf_counter_ns
        start, base = clock(), recv[0]
        # the side table for latency benchmarks: frame i is due at start + (recv[i] - base)/speed
        self.replay_starts_ns.append(start)
        self.position = -1
        resume = 0  # paced: frames due before this fell due while nothing was subscribed
        batch: list[bytes] = []
        plan = self.plan
        held: list[bytes] = []  # frames the "reorder" fault sends after the next one
        sent_before = self.sent
        for i, frame in enumerate(encoded):
            topic = topics[i]
            if topic not in subscribed:
                continue
            if not flood:
                due = start + int((recv[i] - base) / speed)
                if due < resume:
                    continue
                if due > clock():
                    if batch:
                        write(b"".join(batch))
                        batch.clear()
                    # Yield whenever ahead of schedule, even for less than a millisecond: frames
                    # closer than that would otherwise starve acks, pings, REST and every other
                    # connection for the whole timeline. The spin then keeps "never early".
                    self.position = i - 1
                    await asyncio.sleep(max(0.0, (due - clock()) / 1e9 - 0.001))
                    if not subscribed:  # hold here, not skip the rest: a subscription may follow
                        await self._subscribed.wait()
                        resume = clock()
                    if topic not in subscribed or due < resume:  # changed meanwhile
                        continue
                    while clock() < due:
                        pass
            if pending and topic in pending:
                # (re)subscribed mid-replay: the book first, and no delta before it
                snapshot = venue.topic_books.snapshot_for(i)
                if snapshot is None:
                    continue
                pending.discard(topic)
                if snapshot:
                    batch.append(ws_text_frame(session.render(snapshot)))
                    self.sent += 1
            if plan is not None:
                kind = plan.decide(self.data_frames, topics[i])
                self.data_frames += 1
                if kind is not None:
                    if batch:
                        write(b"".join(batch))
                        batch.clear()
                    if kind == "reorder":
                        held.append(frame)
                        continue
                    self.position = i - 1  # a stall sleeps in there
                    if not await self._inject(kind, frame, session.render(venue.frames[i])):
                        return False
                    if kind != "stall":
                        continue
            batch.append(frame)
            if held:
                batch += held
                held.clear()
            self.sent += 1
            if len(batch) >= _BATCH_FRAMES:
                write(b"".join(batch))
                batch.clear()
                self.position = i
                # yield: client frames (pings, subscribes) get in; wait if the socket is full
                await (self._writable.wait() if not self._writable.is_set() else asyncio.sleep(0))
                if not subscribed:  # as above
                    await self._subscribed.wait()
                    resume = clock()
        batch += held  # a frame held back by "reorder" at the very end still goes out
        if batch:
            write(b"".join(batch))
        self.position = len(encoded) - 1
        if not flood:  # a paced timeline lasts as long as it was recorded, even if idle at its end
            await asyncio.sleep(max(0.0, (start + (recv[-1] - base) / speed - clock()) / 1e9))
        # A pass always yields; one that sent nothing (no subscribed topic in the timeline) waits,
        # so that a looping connection can never monopolise the event loop.
        await asyncio.sleep(0.05 if self.sent == sent_before else 0)
        return True

    def describe(self) -> dict[str, object]:
        """This connection for ``GET /venue/connections``."""
        return {"conn_id": self.session.conn_id, "path": self.session.path,
                "topics": sorted(self.session.topics), "sent": self.sent,
                "position": self.position,
                "loops": self.loops, "finished": self.finished,
                "replay_starts_ns": self.replay_starts_ns,
                "faults": self.plan.injected if self.plan else []}

    async def _inject(self, kind: str, frame: bytes, payload: bytes) -> bool:
        """Carry out one frame fault; False if the connection is gone afterwards.

        A stall returns True and the frame is then sent normally."""
        transport = self._transport
        assert transport is not None and self.plan is not None
        write = transport.underlying_transport.write
        if kind == "duplicate":
            write(frame + frame)
        elif kind == "corrupt":
            mid = len(payload) // 2
            # control characters are invalid anywhere in JSON, inside strings too
            write(ws_text_frame(payload[:mid] + b"\x00\x01\x02" + payload[mid + 3:]))
        elif kind == "truncate":
            write(ws_text_frame(payload[:len(payload) // 2]))
        elif kind == "error":
            write(ws_text_frame(self.session.error_frame()))
        elif kind == "stall":
            await asyncio.sleep(self.plan.spec.stall_s)
        elif kind == "close":
            transport.send_close(WSCloseCode.OK, b"closed by the venue (injected)")
            transport.disconnect()
            return False
        elif kind == "abort":
            transport.underlying_transport.abort()
            return False
        return True
