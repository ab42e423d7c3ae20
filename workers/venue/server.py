"""The venue server: picows WebSocket connections replaying recorded frames, REST on the side.

Each connection gets its own replay from the first frame, starting when it first has a
subscription, and receives only the frames of its topics, rendered as the exchange would send
them. Pacing: the recording's receive times divided by ``speed``, or ``flood`` (as fast as the
socket takes them, waiting only while the transport asks to pause writing).

With ``shared_clock`` (paced only) there is one timeline for everybody, as on a live exchange:
it starts at the first subscription any connection makes (so that a venue started ahead of its
clients does not spend the recording's beginning on nobody), and from then on runs whether
anybody listens or not, pass after pass with ``loop``. A topic subscribed at time ``t`` gets the
frames due at or after ``t``, never one due before: a second connection opened later receives
the same bytes as the first from its join on, which is what a feed rotating its connections
(make-before-break) needs to be tested against.

Each connection keeps its ``position`` (the timeline index it has played up to), so that a client
resynchronising mid-replay gets the book *there* (``books.py``): Binance REST depth answers with
the book at the most advanced position among the connections subscribed to that symbol's depth
(shared clock: at the position due now, the book a live exchange would answer with), and a
Bybit/OKX book topic subscribed after the replay started (shared clock: any subscription) gets a
snapshot message just before its next frame, never a bare delta.

The send path writes pre-encoded WebSocket frames (unmasked server frames, built once per venue)
straight to the TCP transport, many frames per ``write``: one syscall per frame capped the
venue at ~164 k frames/s. picows' own replies (acks, pongs) go through the same transport, so the
byte stream stays a sequence of whole frames in order.

Intended send times for latency benchmarks are not put into the frames (clients must parse the
exchange's bytes unchanged): ``GET /venue/connections`` publishes each connection's replay start
on CLOCK_MONOTONIC (``time.perf_counter_ns()``, system-wide) and the speed, so frame ``i`` was due
at ``replay_start + (recv_ns[i] - recv_ns[0]) / speed``, computable from the same recording.
With a shared clock the replay starts are the shared timeline's pass starts (``clock_start_ns +
k * period_ns``, also published), the same for every connection.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import struct
import time
from bisect import bisect_left, bisect_right
from collections import deque
from itertools import islice

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
from .timer import DeadlineTimer
from .timer import available as timer_available

__all__ = ["Venue", "VenueConfig"]

log = logging.getLogger("microstream.venue")
_BATCH_FRAMES = 64  # frames per transport write in flood mode
_TIMERFD = timer_available()  # paced replay wakes on a timerfd (else: ms timer + spin)
_MIN_PERIOD_NS = 50_000_000  # shared clock + loop: a pass lasts at least this long (no busy loop)


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
    shared_clock: bool = False          # one timeline for all connections, as live (paced only)

    def __post_init__(self) -> None:
        if self.speed <= 0:
            raise ValueError(f"speed must be > 0, not {self.speed}")
        if self.shared_clock and self.flood:
            raise ValueError("a shared clock needs paced replay (--speed): flood mode has no "
                             "due times for connections to share")
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
        # shared clock: the timeline's start (set by the first subscription) and a pass's length
        self.clock_start_ns: int | None = None
        self.period_ns = max(int((self.recv_ns[-1] - self.recv_ns[0]) / config.speed),
                             _MIN_PERIOD_NS)
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
                shared = {"start_ns": self.clock_start_ns, "period_ns": self.period_ns} \
                    if self.config.shared_clock else None
                status, body = 200, msgspec.json.encode({
                    "speed": self.config.speed, "flood": self.config.flood,
                    "shared_clock": shared, "recv_ns": [self.recv_ns[0], self.recv_ns[-1]],
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
        newest events any client holds continue from.

        Shared clock: at the last frame due now, as a live exchange answers, whoever is
        connected. Connections can only be behind that (frames never leave early), and a client
        subscribed before asking gets every event after it, so its bridge holds."""
        if self.config.shared_clock:
            position = self.position_due(time.perf_counter_ns())
        else:
            feeds = self.depth_books.feeds.get(key, set())
            position = max((c.position for c in self.connections
                            if not feeds.isdisjoint(c.session.topics)), default=-1)
        return self.depth_books.body(key, position, limit)

    # -- the shared clock --------------------------------------------------------------------
    def start_clock(self, now: int) -> None:
        """Shared clock: the timeline starts at the first subscription (``now``, ns)."""
        if self.clock_start_ns is None:
            self.clock_start_ns = now

    def pass_start(self, now: int) -> int | None:
        """Shared clock: when the pass of the timeline running at ``now`` started; None when
        the timeline is over (no ``loop``). Passes follow each other every ``period_ns``."""
        start = self.clock_start_ns
        assert start is not None, "the shared clock starts with the first subscription"
        k = max(0, (now - start) // self.period_ns)
        if k and not self.config.loop:
            return None
        return start + k * self.period_ns

    def _due(self, start: int) -> _DueTimes:
        return _DueTimes(start, self.recv_ns, self.config.speed)

    def first_due(self, start: int, t: int) -> int:
        """Index of the first frame due at or after ``t`` in the pass that started at ``start``
        (``len(frames)``: none). Due times are computed exactly as the replay computes them."""
        return bisect_left(self._due(start), t)

    def position_due(self, now: int) -> int:
        """Shared clock: index of the last frame due at ``now`` (-1: the timeline has not
        started, or its current pass has nothing due yet)."""
        if self.clock_start_ns is None:
            return -1
        start = self.pass_start(now)
        if start is None:  # over: the book stays where the timeline ended
            return len(self.recv_ns) - 1
        return bisect_right(self._due(start), now) - 1

    def _rest_fault(self, path: str) -> tuple[int, bytes, dict[str, str]] | None:
        spec, draw = self.faults, self.fault_log.draw
        for status, p in ((418, spec.rest_418), (429, spec.rest_429)):
            if p and draw() < p:
                self.fault_log.record(f"rest_{status}", path=path)
                body = b'{"code":-1003,"msg":"Way too much request weight used (injected)."}'
                return status, body, {"Retry-After": "1"}
        return None


class _DueTimes:
    """The due times of one pass as a read-only sequence (for ``bisect``), computed on access
    with the replay's own formula, so that both agree to the nanosecond."""

    __slots__ = ("_base", "_recv", "_speed", "_start")

    def __init__(self, start: int, recv: list[int], speed: float) -> None:
        self._start, self._recv, self._speed, self._base = start, recv, speed, recv[0]

    def __len__(self) -> int:
        return len(self._recv)

    def __getitem__(self, i: int) -> int:
        return self._start + int((self._recv[i] - self._base) / self._speed)


def _release(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


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
        # a pass has begun: later book subscriptions need a snapshot (shared clock: every
        # subscription joins a running timeline)
        self._replaying = venue.config.shared_clock
        self._pending: set[str] = set()  # book topics waiting for that snapshot
        # Shared clock only: when each subscribed topic joined (perf_counter_ns; its frames due
        # earlier are not sent), the topics subscribed since the replay last looked, the index
        # up to which each older topic's frames were dealt with in the current pass (see
        # _rewind), and the future a pacing sleep waits on (a subscription ends it early).
        self._joined: dict[str, int] = {}
        self._added: set[str] = set()
        self._upto: dict[str, int] = {}
        self._waker: asyncio.Future[None] | None = None
        self._timer: DeadlineTimer | None = None   # paced replay's wake-up (timer.py)
        self._timer_failed = False
        self._subscribed = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self._task: asyncio.Task[None] | None = None
        self._transport: WSTransport | None = None

    def on_ws_connected(self, transport: WSTransport) -> None:
        self._transport = transport
        if self.session.topics:  # subscribed in the URL (Binance combined streams)
            if self.venue.config.shared_clock:
                self._joined_now(set(), self.session.topics)
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
            if self.venue.config.shared_clock and topics != before:
                self._joined_now(before, topics)
            if topics:
                self._subscribed.set()
            else:  # the replay holds at its next yield rather than run through the timeline
                self._subscribed.clear()
        elif frame.msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()

    def _joined_now(self, before: set[str], topics: set[str]) -> None:
        """Shared clock: the topics in ``topics`` but not ``before`` join the timeline now (the
        first subscription of the venue starts it); a pacing sleep is cut short, as the new
        topics' frames may be due before the frame the replay waits for."""
        now = time.perf_counter_ns()
        self.venue.start_clock(now)
        for topic in before - topics:
            self._joined.pop(topic, None)
        for topic in topics - before:
            self._joined[topic] = now
            self._added.add(topic)
        if topics - before:
            if self._waker is not None:
                _release(self._waker)
            if self._timer is not None:
                self._timer.wake()

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
        if self._timer is not None:
            self._timer.close()
            self._timer = None
        if self._transport is not None:
            self._transport.disconnect()

    async def _replay(self, transport: WSTransport) -> None:
        await self._subscribed.wait()
        self._replaying = True
        session = self.session
        # identity rendering (most endpoints) can use the venue's pre-encoded frames
        encoded = self.venue.encoded if session.sends_as_recorded else \
            [ws_text_frame(session.render(f)) for f in self.venue.frames]
        if self.venue.config.shared_clock:
            await self._replay_shared(transport, encoded)
        else:
            done = len(encoded)
            while await self._play_once(transport, encoded) == done and self.venue.config.loop:
                self.loops += 1
        self.finished = True

    async def _replay_shared(self, transport: WSTransport, encoded: list[bytes]) -> None:
        """Shared clock: join the venue's timeline where it is now, then follow it pass after
        pass (``loop``). A pass is entered at the first frame due since the earliest
        subscription (found by bisection, not by walking everything before it)."""
        venue, subscribed, joined = self.venue, self.session.topics, self._joined
        clock, done = time.perf_counter_ns, len(encoded)
        start = venue.pass_start(clock())
        while start is not None:
            if not subscribed:  # nothing to play: wait, then join whichever pass runs by then
                await self._subscribed.wait()
                start = venue.pass_start(clock())
                continue
            self.replay_starts_ns.append(start)
            self.position = -1
            self._upto.clear()
            self._added.clear()  # these joins are in `joined`, which decides where to begin
            first = venue.first_due(start, min(joined[t] for t in subscribed))
            while 0 <= first < done:
                first = await self._play_once(transport, encoded, start, first)
            if first < 0 or not venue.config.loop:
                return
            self.loops += 1
            # the next pass on the shared schedule; passes already over are skipped
            start = venue.pass_start(max(start + venue.period_ns, clock()))

    async def _play_once(self, transport: WSTransport, encoded: list[bytes],
                         start: int | None = None, first: int = 0) -> int:
        """One pass over the timeline: ``len(encoded)`` when done, -1 if a fault closed the
        connection, or (shared clock) the index to continue this pass from (see _rewind).

        Pacing runs on CLOCK_MONOTONIC in ns (``perf_counter_ns``, the clock of the published
        replay start): sleep until 1 ms before a frame is due (at least one event-loop pass),
        then spin to the due time, so no frame leaves early (uvloop's timers have millisecond
        resolution). ``position`` is stored before every yield: nothing else runs in between.

        Without ``start`` the pass starts now, at the first frame. With it (shared clock: the
        pass's start on the venue's schedule) it begins at index ``first``, and a frame goes out
        only if due at or after its topic joined and not already dealt with before a rewind.
        """
        venue, session = self.venue, self.session
        topics, recv = venue.topics, venue.recv_ns
        subscribed, pending = session.topics, self._pending  # both only ever updated in place
        joined, upto = self._joined, self._upto  # shared clock, likewise
        flood, speed = venue.config.flood, venue.config.speed
        write = transport.underlying_transport.write
        clock = time.perf_counter_ns
        shared = start is not None
        base = recv[0]
        if start is None:
            start = clock()
            # the side table for latency benchmarks: frame i is due at start + (recv[i] - base)
            # / speed
            self.replay_starts_ns.append(start)
            self.position = -1
        redo = max(upto.values(), default=0)  # shared: before this, some topics' frames are done
        resume = 0  # paced: frames due before this fell due while nothing was subscribed
        batch: list[bytes] = []
        plan = self.plan
        held: list[bytes] = []  # frames the "reorder" fault sends after the next one
        sent_before = self.sent
        frames = enumerate(islice(encoded, first, None), first) if first else enumerate(encoded)
        for i, frame in frames:
            topic = topics[i]
            if topic not in subscribed:
                continue
            if not flood:
                due = start + int((recv[i] - base) / speed)
                if shared:
                    if due < joined[topic] or (i < redo and i < upto.get(topic, 0)):
                        continue
                elif due < resume:
                    continue
                if due > clock():
                    if batch:
                        write(b"".join(batch))
                        batch.clear()
                    # Yield whenever ahead of schedule, even for less than a millisecond: frames
                    # closer than that would otherwise starve acks, pings, REST and every other
                    # connection for the whole timeline. The spin then keeps "never early".
                    self.position = i - 1
                    await self._sleep_until(due, shared)
                    if not subscribed:  # hold here, not skip the rest: a subscription may follow
                        await self._subscribed.wait()
                        resume = clock()
                    if shared and self._added:  # subscribed meanwhile: go back for its frames
                        return self._rewind(start, i, held)
                    if topic not in subscribed or due < resume:  # changed meanwhile
                        continue
                    while clock() < due:   # woken early, or the fallback's last ms (spin)
                        if self._timer is not None:
                            await self._timer.wait_until(due)
                    if topic not in subscribed:   # unsubscribed during that wait
                        continue
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
                        return -1
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
                if shared and self._added:
                    return self._rewind(start, i + 1, held)
        batch += held  # a frame held back by "reorder" at the very end still goes out
        if batch:
            write(b"".join(batch))
        done = len(encoded)
        self.position = done - 1
        if shared:  # the pass lasts its period on the shared schedule, whoever listens
            await self._nap(max(0.0, (start + venue.period_ns - clock()) / 1e9))
            return self._rewind(start, done, []) if self._added else done
        if not flood:  # a paced timeline lasts as long as it was recorded, even if idle at its end
            await asyncio.sleep(max(0.0, (start + (recv[-1] - base) / speed - clock()) / 1e9))
        # A pass always yields; one that sent nothing (no subscribed topic in the timeline) waits,
        # so that a looping connection can never monopolise the event loop.
        await asyncio.sleep(0.05 if self.sent == sent_before else 0)
        return done

    def _rewind(self, start: int, i: int, held: list[bytes]) -> int:
        """Shared clock, topics subscribed while the replay waited before frame ``i``: the index
        to continue the pass (started at ``start``) from.

        The loop passes over unsubscribed topics without waiting, so it can be well ahead of the
        clock (up to the end of the pass when the older topics have no frames left) and already
        past frames of the new topics that are due after they joined: it goes back to the first
        of those. The older topics' frames before ``i`` were dealt with; ``_upto`` says so, and
        the loop skips them on the way forward again."""
        subscribed, upto, new = self.session.topics, self._upto, self._added & self.session.topics
        self._added.clear()
        for topic in subscribed - new:
            upto[topic] = max(upto.get(topic, 0), i)
        for topic in new:
            upto.pop(topic, None)
        if held and self._transport is not None:  # held back by "reorder": out now, not never
            self._transport.underlying_transport.write(b"".join(held))
            held.clear()
        if not new:
            return i
        return min(i, self.venue.first_due(start, min(self._joined[t] for t in new)))

    async def _sleep_until(self, due: int, shared: bool) -> None:
        """Until frame time ``due`` (perf_counter_ns): a timerfd wake-up at ``due`` where
        there is one (``timer.py``: no spinning), else the loop's ms timer until 1 ms before
        it (the caller spins the rest). Always at least one event-loop pass. Shared clock: a
        subscription ends it early (see _joined_now)."""
        if self._timer is None and _TIMERFD and not self._timer_failed:
            try:
                self._timer = DeadlineTimer()
            except OSError as exc:   # out of descriptors, say: pace with the fallback
                log.warning("venue: no timerfd (%s): pacing with sleep + spin", exc)
                self._timer_failed = True
        if self._timer is None:
            delay = max(0.0, (due - time.perf_counter_ns()) / 1e9 - 0.001)
            await (self._nap(delay) if shared else asyncio.sleep(delay))
        else:
            await self._timer.wait_until(due)

    async def _nap(self, seconds: float) -> None:
        """``asyncio.sleep`` that a subscription ends early (shared clock, see _joined_now)."""
        loop = asyncio.get_running_loop()
        self._waker = waker = loop.create_future()
        timer = loop.call_later(seconds, _release, waker)
        try:
            await waker
        finally:
            timer.cancel()
            self._waker = None

    def describe(self) -> dict[str, object]:
        """This connection for ``GET /venue/connections``."""
        return {"conn_id": self.session.conn_id, "path": self.session.path,
                "topics": sorted(self.session.topics), "sent": self.sent,
                "position": self.position,
                "loops": self.loops, "finished": self.finished,
                "replay_starts_ns": self.replay_starts_ns, "joined_ns": dict(self._joined),
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
