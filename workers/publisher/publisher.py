"""The publisher loop: bus rings → payloads → priority queues → pipelined RESP → confirmed.

One synchronous loop (:meth:`Publisher.step`), no asyncio and no threads:

1. **ingest**: poll every followed ring once; each record becomes one :class:`Message`
   (PUBLISH, plus SET ``latest:*`` and XADD where configured, in one write) in its class
   queue. While the breaker is open, non-CRITICAL messages are dropped here (counted); a
   feed ring's records of a refused class are dropped before they are encoded.
   Analytics latest tables are read every ``analytics_interval_ms``.
2. **pump**: while the link is up, take messages CRITICAL first, as far as the breaker and
   ``max_inflight`` allow, ``batch_max`` at a time, write them and hand them to the socket;
   then read every reply there is and confirm (or retry) their messages. The next batch is
   written without waiting for the replies of the last one.
3. **control** (every ms): the breaker's evaluation, due retries, reconnection with capped
   exponential backoff and jitter, and the stats row (every 100 ms).

A lost connection puts every unconfirmed message back at the front of its queue (sent
again: at-least-once; CRITICAL is never conflated or shed, so it is delivered once Redis is
back unless its bounded buffer overflowed, which is counted).

The stats row (``microstream.<instance>.publisher.stats.latest``, dtype :data:`STATS`) holds
every counter; :attr:`Publisher.latency_ns` keeps the latest ring commit → confirmation
latencies for benchmarks (``[publisher] latency_samples_file`` saves them at exit).
"""

from __future__ import annotations

import logging
import os
import random
import select
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np

import shm
from engine.config import PRIORITY_NAMES, PublisherConfig
from shm.layout import Priority

from ..rings import RingSet
from .breaker import BreakerState, LatencyBreaker
from .payloads import DEFAULT_PRIORITIES, STREAM_TYPES, PayloadEncoder
from .queues import CLASSES, DROP_REASONS, Drop, Message, PriorityQueues
from .redis_link import LinkDown, RedisLink
from .resp import CommandPrefixes, encode_command, parse_redis_url

__all__ = ["STATS", "Publisher"]

log = logging.getLogger("microstream.publisher")

_PRIORITY_FIELDS = [p.name.lower() for p in Priority]
STATS = np.dtype(
    [("seq", np.uint64), ("ts_ns", np.int64), ("pid", np.int64), ("connected", np.int64),
     ("breaker_state", np.int64), ("inflight", np.int64), ("rtt_p99_ns", np.int64),
     ("oldest_queued_ns", np.int64), ("records", np.int64), ("reconnects", np.int64),
     ("connect_failures", np.int64), ("resent", np.int64), ("reply_errors", np.int64),
     ("retries", np.int64), ("discontinuities", np.int64), ("ring_lost", np.int64),
     ("ring_lag", np.int64)]
    + [(f"breaker_to_{s.name.lower()}", np.int64) for s in BreakerState]
    + [(f"{what}_{p}", np.int64) for what in ("queued", "enqueued", "sent", "confirmed")
       for p in _PRIORITY_FIELDS]
    + [(f"dropped_{p}_{r}", np.int64) for p in _PRIORITY_FIELDS for r in DROP_REASONS],
    align=True)
_RING_STREAMS = ("trades", "bbo", "book", "liquidations", "funding", "open_interest")
_TICK_NS = 1_000_000
_STATS_NS = 100_000_000
_LATENCY_SAMPLES = 1 << 20
_PING = encode_command("PING")
_RUN = 64   # CRITICAL/HIGH records per message (see queues.Message)
# plain ints on the hot path (IntEnum comparisons and attribute lookups cost more)
_CRITICAL, _HIGH, _MEDIUM = int(Priority.CRITICAL), int(Priority.HIGH), int(Priority.MEDIUM)
_OPEN = int(BreakerState.OPEN)
_P99_EVERY = 10   # control ticks between two p99 evaluations of the breaker
_MAX_PENDING_BYTES = 4 << 20   # written but not taken by the socket: stop writing more


class _Route:
    """How messages of one (exchange, event type, symbol) are written: ``commands(payload)``
    gives the RESP bytes of every configured surface."""

    __slots__ = ("commands", "prefixes", "priority", "replies")

    def __init__(self, prefixes: CommandPrefixes, priority: int, publish: bool, latest: bool,
                 xadd: bool) -> None:
        self.prefixes, self.priority = prefixes, priority
        self.replies = int(publish) + int(latest) + int(xadd)
        self.commands = prefixes.builder(publish, latest, xadd)


class Publisher:
    """Drains ``instance``'s rings for ``exchanges`` (name → symbol names by symbol id) into
    the Redis of ``settings.redis_url``."""

    def __init__(self, instance: str, exchanges: Mapping[str, Sequence[str]],
                 settings: PublisherConfig | None = None, *,
                 clock: Callable[[], int] = time.perf_counter_ns, start: str = "latest") -> None:
        self.settings = cfg = settings or PublisherConfig()
        self.instance = instance
        self.clock = clock
        self.encoders = {ex: PayloadEncoder(ex, names, cfg.encoding)
                         for ex, names in exchanges.items()}
        self.rings = RingSet(instance, start)
        self._exchange_names = {int(shm.Exchange[ex.upper()]): ex for ex in exchanges}
        self.streams = [s for s in _RING_STREAMS if s in cfg.streams]
        self._ring_keys = [(ex, stream) for ex in self.encoders for stream in self.streams] + \
            ([("detectors", "events")] if "events" in cfg.streams else [])
        self.priorities = dict(DEFAULT_PRIORITIES)
        self.priorities.update({k: PRIORITY_NAMES.index(v) for k, v in cfg.priorities.items()})
        self.queues = PriorityQueues((cfg.critical_buffer, cfg.high_queue, cfg.medium_queue,
                                      cfg.low_queue), cfg.conflate_fraction)
        ms = 1_000_000
        self.breaker = LatencyBreaker(
            window_ns=cfg.breaker_window_ms * ms,
            rtt_p99_limit_ns=int(cfg.breaker_rtt_p99_ms * ms),
            queue_age_limit_ns=int(cfg.breaker_queue_age_ms * ms),
            cooldown_ns=cfg.breaker_cooldown_ms * ms, probe_messages=cfg.breaker_probe_messages,
            open_critical_per_s=cfg.breaker_open_critical_per_s)
        self.link = RedisLink(parse_redis_url(cfg.redis_url),
                              connect_timeout_s=cfg.connect_timeout_ms / 1000, clock=clock)
        self._routes: dict[tuple[str, str, int], _Route] = {}
        self._ring_classes: dict[str, tuple[int, bool]] = {}
        self._retry: list[Message] = []
        self._analytics: dict[str, shm.LatestReader] = {}
        self._analytics_seq: dict[tuple[str, int], int] = {}
        self._next_analytics = 0
        self._next_tick = 0
        self._ticks = 0
        self._next_stats = 0
        self._next_connect = 0
        self._connect_failures_in_row = 0
        self._last_activity = 0
        self._pid = os.getpid()
        self.latency_ns = np.zeros(_LATENCY_SAMPLES, np.int64)   # commit → confirmation
        # with latency_samples_file only (four more stores a reply, 32 MiB once wrapped): when
        # confirmed, the message's class, commit → taken off the ring, written → Redis reply
        self._sampling = bool(cfg.latency_samples_file)
        n = _LATENCY_SAMPLES if self._sampling else 0
        self.confirmed_at_ns, self.latency_class, self.pickup_ns, self.rtt_ns = (
            np.zeros(n, np.int64) for _ in range(4))
        self.latency_count = 0
        self.counts = dict.fromkeys(("records", "reconnects", "connect_failures", "resent",
                                     "reply_errors", "retries"), 0)
        self.sent = np.zeros(CLASSES, np.int64)
        self.confirmed = np.zeros(CLASSES, np.int64)
        self.stats = shm.LatestWriter(shm.segment_name(instance, "publisher", "stats",
                                                       suffix="latest"), STATS, 1, replace=True)
        self._stats_row = np.zeros(1, STATS)
        self._last_error_log = 0.0
        self._probe = Message("PING", _PING, 1, _CRITICAL, 0, 0)

    # -- routes -----------------------------------------------------------------------------

    def _route(self, exchange: str, event_type: str, sid: int) -> _Route:
        key = (exchange, event_type, sid)
        route = self._routes.get(key)
        if route is None:
            cfg = self.settings
            symbol = "all" if event_type == "channel_silent" else \
                self.encoders[exchange].symbol(sid)
            route = _Route(CommandPrefixes(f"{exchange}:{symbol}:{event_type}",
                                           cfg.latest_ttl_ms, cfg.xadd_maxlen),
                           self.priorities.get(event_type, _HIGH), *self._surfaces(event_type))
            self._routes[key] = route
        return route

    def _surfaces(self, event_type: str) -> tuple[bool, bool, bool]:
        """Whether ``event_type`` goes to PUBLISH, the latest keys, the streams."""
        cfg = self.settings

        def on(surface: tuple[str, ...]) -> bool:
            return "*" in surface or event_type in surface

        return on(cfg.publish), on(cfg.latest), on(cfg.xadd)

    def _ring_class(self, stream: str) -> tuple[int, bool]:
        """A feed ring carries one event type: its class, and whether it has a surface."""
        known = self._ring_classes.get(stream)
        if known is None:
            event_type = STREAM_TYPES[stream]
            known = self._ring_classes[stream] = (self.priorities.get(event_type, _HIGH),
                                                  any(self._surfaces(event_type)))
        return known

    def _enqueue(self, route: _Route, payload: bytes, commit_ns: int, now_ns: int,
                 breaker_open: bool) -> None:
        """Queue one record's message on its own (MEDIUM/LOW: conflation works per key)."""
        if not route.replies:
            return
        p = route.priority
        if breaker_open and p != _CRITICAL:
            self.queues.drops[p, Drop.BREAKER_OPEN] += 1
            return
        self.queues.push(Message(route.prefixes.key, route.commands(payload), route.replies, p,
                                 commit_ns, now_ns))

    # -- the loop ---------------------------------------------------------------------------

    def ingest(self) -> int:
        """Poll every ring with records (``RingSet.pending``: one compiled check of them all)
        and queue their messages; returns records taken."""
        done = 0
        rings = self.rings
        for owner, stream in rings.pending(self._ring_keys):
            batch, _ = rings.poll(owner, stream)
            if batch is not None and len(batch):
                done += self._queue_batch(owner, stream, batch)
        return done

    def _queue_batch(self, owner: str, stream: str, batch: np.ndarray) -> int:
        """Queue the messages of one ring batch (``owner``: an exchange, or ``detectors`` for
        the events ring, whose records name their exchange)."""
        now = self.clock()
        breaker_open = self.breaker.state == _OPEN
        self.counts["records"] += len(batch)
        if breaker_open and owner != "detectors":
            p, surfaced = self._ring_class(stream)
            if p != _CRITICAL:
                # dropped at the door anyway: not encoded either, so an overloaded host
                # spends its CPU on what still flows (CRITICAL) and recovers sooner
                if surfaced:
                    self.queues.drops[p, Drop.BREAKER_OPEN] += len(batch)
                return len(batch)
        if owner == "detectors":
            groups = [(self._exchange_names.get(e), batch[batch["exchange"] == e])
                      for e in np.unique(batch["exchange"]).tolist()]
        else:
            groups = [(owner, batch)]
        routes, queues = self._routes, self.queues
        for exchange, rows in groups:
            if exchange is None:
                continue   # an exchange this publisher does not serve
            # CRITICAL/HIGH records go in runs of up to _RUN per class (one write, one
            # confirmation); MEDIUM/LOW one message each (conflation works per key)
            runs: list[list[bytes]] = [[] for _ in range(CLASSES)]
            replies, first = [0] * CLASSES, [0] * CLASSES
            for event_type, sid, payload, commit in self.encoders[exchange].records(stream,
                                                                                    rows):
                route = routes.get((exchange, event_type, sid)) or \
                    self._route(exchange, event_type, sid)
                p = route.priority
                if p >= _MEDIUM or not route.replies:
                    self._enqueue(route, payload, commit, now, breaker_open)
                    continue
                if breaker_open and p != _CRITICAL:
                    queues.drops[p, Drop.BREAKER_OPEN] += 1
                    continue
                run = runs[p]
                if not run:
                    first[p] = commit
                run.append(route.commands(payload))
                replies[p] += route.replies
                if len(run) == _RUN:
                    queues.push(Message(stream, b"".join(run), replies[p], p, first[p], now,
                                        _RUN))
                    runs[p], replies[p] = [], 0
            for p, run in enumerate(runs):
                if run:
                    queues.push(Message(stream, b"".join(run), replies[p], p, first[p], now,
                                        len(run)))
        return len(batch)

    def read_analytics(self, now_ns: int) -> int:
        """Queue the analytics of every row that changed since the last read."""
        done = 0
        breaker_open = self.breaker.state == _OPEN
        for exchange, encoder in self.encoders.items():
            table = self._analytics.get(exchange)
            if table is None:
                try:
                    table = self._analytics[exchange] = shm.LatestReader(shm.segment_name(
                        self.instance, exchange, "analytics", suffix="latest"))
                except shm.ShmError:
                    continue   # no detectors (yet)
            for sid in range(table.rows):
                row = table.get(sid)
                if row is None or self._analytics_seq.get((exchange, sid)) == int(row["seq"]):
                    continue
                self._analytics_seq[(exchange, sid)] = int(row["seq"])
                for event_type, _, payload, commit in encoder.analytics(sid, row):
                    self._enqueue(self._route(exchange, event_type, sid), payload, commit,
                                  now_ns, breaker_open)
                    done += 1
        return done

    def pump(self) -> int:
        """Confirm what Redis answered, then write queued messages (priority order, as the
        breaker allows) in batches of at most ``batch_max``, each handed to the socket, until
        the queues are empty, ``max_inflight`` is reached or the socket stops taking bytes;
        returns messages written. Replies are read before writing (none can be there right
        after a write) and between batches (so a round trip is not inflated by our own later
        batches)."""
        link = self.link
        if not link.connected:
            return 0
        cfg, queues, breaker = self.settings, self.queues, self.breaker
        written = 0
        try:
            if link.inflight:
                link.read(self._on_reply)
            if not link.ready:
                link.flush()
                return 0   # AUTH/SELECT not accepted yet: nothing may reach the wrong db
            while len(queues) and link.pending_bytes < _MAX_PENDING_BYTES:
                if written:
                    link.read(self._on_reply)
                now = self.clock()
                room = min(cfg.batch_max, cfg.max_inflight - len(link.inflight))
                closed = breaker.closed
                batch = 0
                for p in range(CLASSES):
                    critical = p == _CRITICAL
                    while batch < room:
                        msg = queues.peek(p)
                        if msg is None or not (closed or breaker.may_send(critical, now)):
                            break
                        queues.pop(p)
                        link.write(msg.data, msg, msg.replies)
                        self.sent[p] += msg.count
                        batch += 1
                if not batch:
                    break
                written += batch
                link.flush()
            if link.pending_bytes:
                link.flush()
        except LinkDown as exc:
            self._link_down(str(exc))
        return written

    def _on_reply(self, msg: Message, error: Exception | None, write_ns: int) -> None:
        now = self.clock()
        if msg is self._probe:   # a PING probing a half-open breaker
            self.breaker.record_rtt(now, now - write_ns)
            return
        if error is None:
            self.confirmed[msg.priority] += msg.count
            self._connect_failures_in_row = 0   # the connection works: backoff starts over
            self.breaker.record_rtt(now, now - write_ns)
            i = self.latency_count % _LATENCY_SAMPLES
            self.latency_ns[i] = now - msg.commit_ns
            if self._sampling:
                self.confirmed_at_ns[i] = now
                self.latency_class[i] = msg.priority
                self.pickup_ns[i] = msg.taken_ns - msg.commit_ns
                self.rtt_ns[i] = now - write_ns
            self.latency_count += 1
            return
        self.counts["reply_errors"] += 1
        msg.attempts += 1
        if msg.attempts > self.settings.retry_attempts:
            self.queues.drops[msg.priority, Drop.RETRIES_EXHAUSTED] += msg.count
            self._log_error(f"redis refused {msg.key} {msg.attempts} times: {error}; dropped")
            return
        delay_ms = min(self.settings.retry_max_ms,
                       self.settings.retry_initial_ms * 2 ** (msg.attempts - 1))
        msg.due_ns = now + int(delay_ms * 1_000_000)
        self._retry.append(msg)
        self.counts["retries"] += 1
        self._log_error(f"redis refused {msg.key}: {error}; retry in {delay_ms:.0f} ms")

    def _link_down(self, why: str) -> None:
        unconfirmed = [m for m in self.link.drop() if m is not self._probe]
        for msg in reversed(unconfirmed):   # oldest ends up first
            self.queues.push_front(msg)
        self.counts["resent"] += len(unconfirmed)
        # backoff continues until a reply confirms a message: a server that accepts and then
        # drops the connection (maxclients, refused AUTH/SELECT) is not hammered every tick
        backoff_ms = self._backoff_ms()
        self._next_connect = self.clock() + int(backoff_ms * 1_000_000)
        self._log_error(f"{why}; {len(unconfirmed)} unconfirmed messages will be sent again; "
                        f"reconnecting in {backoff_ms:.0f} ms")

    def _backoff_ms(self) -> float:
        """The next reconnect delay (capped exponential, with jitter: many publishers may
        share one Redis)."""
        self._connect_failures_in_row += 1
        cfg = self.settings
        backoff_ms = min(cfg.reconnect_max_ms, cfg.reconnect_initial_ms *
                         2 ** (self._connect_failures_in_row - 1))
        return backoff_ms * (0.5 + random.random() / 2)

    def _connect(self, now_ns: int) -> None:
        try:
            self.link.connect()
        except LinkDown as exc:
            self.counts["connect_failures"] += 1
            backoff_ms = self._backoff_ms()
            self._next_connect = now_ns + int(backoff_ms * 1_000_000)
            self._log_error(f"{exc}; next attempt in {backoff_ms:.0f} ms")
            return
        if self.counts["connect_failures"] or self.counts["reconnects"] or self.sent.any():
            self.counts["reconnects"] += 1
        log.info("publisher: connected to redis %s", self.link.describe())

    def control(self, now_ns: int) -> None:
        """Breaker evaluation, due retries, reconnection and stats (called every ms)."""
        if not self.link.connected and now_ns >= self._next_connect:
            self._connect(now_ns)
        if self._retry:
            due = [m for m in self._retry if m.due_ns <= now_ns]
            if due:
                self._retry = [m for m in self._retry if m.due_ns > now_ns]
                for msg in reversed(due):
                    msg.enqueued_ns = now_ns   # its age restarts: a retry is not a stall
                    self.queues.push_front(msg)
        oldest = self.queues.oldest_enqueued_ns()
        inflight = self.link.oldest_write_ns()
        before = self.breaker.state
        self._ticks += 1
        state = self.breaker.tick(now_ns, now_ns - oldest if oldest else 0,
                                  now_ns - inflight if inflight else 0,
                                  evaluate_p99=self._ticks % _P99_EVERY == 0)
        if state != before:
            log.warning("publisher: breaker %s → %s%s", before.name, state.name,
                        f" ({self.breaker.reason})" if state == BreakerState.OPEN else "")
        if state == BreakerState.HALF_OPEN and not self.link.inflight:
            self.breaker.refund_probes()   # probes lost to errors or a reconnect: send more
        if (state == BreakerState.HALF_OPEN and self.link.connected and not self.link.inflight
                and not len(self.queues) and self.breaker.may_send(False, now_ns)):
            # nothing to probe with: a PING's round trip decides as well
            self.link.write(_PING, self._probe, 1)
        if state == BreakerState.OPEN:   # only CRITICAL goes out while open
            for p in range(1, CLASSES):
                self.queues.drop_class(p, Drop.BREAKER_OPEN)
        if now_ns >= self._next_stats:
            self._next_stats = now_ns + _STATS_NS
            self.publish_stats(now_ns)

    def step(self, wait_s: float = 0.0) -> int:
        """One pass: ingest, pump, control; if nothing happened, wait up to ``wait_s`` (for a
        reply on the socket, or parked on every ring at once). Returns records + messages."""
        now = self.clock()
        if now >= self._next_analytics and "analytics" in self.settings.streams:
            self._next_analytics = now + self.settings.analytics_interval_ms * 1_000_000
            self.read_analytics(now)
        done = self.ingest()
        done += self.pump()
        now = self.clock()
        if now >= self._next_tick:
            self._next_tick = now + _TICK_NS
            self.control(now)
        if done:
            self._last_activity = now
        elif wait_s > 0 and now - self._last_activity > self.settings.spin_us * 1000:
            self._wait(wait_s)
        return done

    def _wait(self, wait_s: float) -> None:
        link = self.link
        if link.connected and (link.inflight or link.pending_bytes):
            # replies due: wake on the socket, but look at the rings again soon
            assert link.sock is not None
            select.select([link.sock], [link.sock] if link.pending_bytes else [], [],
                          min(wait_s, 0.0002))
            return
        if len(self.queues) or self._retry:
            time.sleep(min(wait_s, 0.0005))   # waiting for the breaker, a retry or Redis
            return
        # idle: park on every followed ring at once (any commit wakes us; the next ingest
        # reads it), at most wait_s (analytics tables and timers are looked at then)
        self.rings.wait(wait_s)

    # -- stats ------------------------------------------------------------------------------

    def publish_stats(self, now_ns: int) -> None:
        """Write the stats row (every 100 ms from :meth:`control`, and at close)."""
        r = self._stats_row[0]
        r["ts_ns"], r["pid"] = time.time_ns(), self._pid
        r["connected"] = int(self.link.connected)
        r["breaker_state"] = int(self.breaker.state)
        r["inflight"] = len(self.link.inflight)
        r["rtt_p99_ns"] = self.breaker.p99_ns(now_ns)
        oldest = self.queues.oldest_enqueued_ns()
        r["oldest_queued_ns"] = now_ns - oldest if oldest else 0
        for name, value in self.counts.items():
            r[name] = value
        r["discontinuities"] = self.rings.discontinuities
        r["ring_lost"], r["ring_lag"] = self.rings.totals()
        for s in BreakerState:
            r[f"breaker_to_{s.name.lower()}"] = self.breaker.transitions[int(s)]
        depths = self.queues.depths()
        for i, p in enumerate(_PRIORITY_FIELDS):
            r[f"queued_{p}"] = depths[i]
            r[f"enqueued_{p}"] = self.queues.enqueued[i]
            r[f"sent_{p}"] = self.sent[i]
            r[f"confirmed_{p}"] = self.confirmed[i]
            for j, reason in enumerate(DROP_REASONS):
                r[f"dropped_{p}_{reason}"] = self.queues.drops[i, j]
        r["seq"] += 1
        self.stats.update(0, r)
        self.stats.heartbeat()  # the supervisor's liveness signal for this process

    def latencies(self) -> np.ndarray:
        """Ring commit → confirmation latencies recorded so far, oldest first (ns; at most the
        newest 1 M)."""
        return self._oldest_first(self.latency_ns)

    def latency_samples(self) -> np.ndarray:
        """:meth:`latencies` with when each was confirmed (this publisher's clock), the
        message's class and two of its parts, oldest first: an ``(n, 5)`` int64 array of
        (confirmed at ns, commit → confirmation ns, :class:`~shm.layout.Priority`, commit →
        taken off the ring ns, written → Redis reply ns). The rest of commit → confirmation
        is queueing and encoding: taken → written. Kept only with ``latency_samples_file``
        set (``RuntimeError`` otherwise)."""
        if not self._sampling:
            raise RuntimeError("latency samples are kept only with [publisher] "
                               "latency_samples_file set")
        return np.column_stack([self._oldest_first(a) for a in (
            self.confirmed_at_ns, self.latency_ns, self.latency_class, self.pickup_ns,
            self.rtt_ns)])

    def _oldest_first(self, samples: np.ndarray) -> np.ndarray:
        n = self.latency_count
        if n <= _LATENCY_SAMPLES:
            return samples[:n].copy()
        return np.roll(samples, -(n % _LATENCY_SAMPLES))   # the ring wrapped

    def _log_error(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last_error_log >= 1.0:   # rate-limited: the counters have the rest
            self._last_error_log = now
            log.warning("publisher: %s", message)

    def close(self) -> None:
        """Final stats row, close the connection (unconfirmed messages are lost, counted in
        the log) and the readers."""
        self.publish_stats(self.clock())
        lost = self.link.drop()
        if lost or len(self.queues):
            log.warning("publisher: closing with %d unconfirmed and %d queued messages",
                        len(lost), len(self.queues))
        self.rings.close()
        for table in self._analytics.values():
            table.close()
        self.stats.close()

    def drain(self, timeout_s: float) -> bool:
        """Keep pumping until every queued message is confirmed or ``timeout_s`` passes
        (shutdown); returns True if everything was confirmed."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.pump()
            self.control(self.clock())
            if not len(self.queues) and not self.link.inflight and not self._retry:
                return True
            time.sleep(0.0002)
        return False

