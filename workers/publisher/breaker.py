"""The latency circuit breaker: stop feeding a slow Redis everything, keep CRITICAL flowing.

States (``BreakerState``):

* **CLOSED**: everything is sent. It **opens** when, over the sliding window, the p99 of the
  Redis round-trip times exceeds ``rtt_p99_limit_ns`` (once ``min_samples`` replies are in
  the window), or when the oldest queued message or the oldest unconfirmed one is older than
  its limit (a Redis that answers nothing produces no round-trip samples at all, so the age
  of what waits is the signal that sees it).
* **OPEN**: only CRITICAL is sent, at most ``open_critical_per_s`` messages a second (a token
  bucket); the publisher drops the other classes and counts them. After ``cooldown_ns`` the
  breaker goes **HALF-OPEN**.
* **HALF-OPEN**: ``probe_messages`` messages of any class may go out; when that many are
  confirmed, each within the round-trip limit, and nothing waits too long, it **closes**;
  one slow probe or a stalled queue opens it again (another cool-down).

Time is passed in (ns, the bus's monotonic clock), so the logic is tested without sleeping.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np

__all__ = ["BreakerState", "LatencyBreaker", "bucket_floor", "rtt_bucket"]

_SLOTS = 8          # the window is kept as this many time slots of histograms
_SUB = 8            # histogram buckets per power of two (≈ 9 % resolution)
_BUCKETS = 64 * _SUB


def rtt_bucket(rtt_ns: int) -> int:
    """Histogram bucket of a round trip: 8 per power of two of nanoseconds."""
    if rtt_ns < _SUB:
        return max(0, rtt_ns)
    bits = rtt_ns.bit_length()
    return (bits - 3) * _SUB + ((rtt_ns >> (bits - 4)) & (_SUB - 1))


def bucket_floor(bucket: int) -> int:
    """The smallest round trip (ns) that falls in ``bucket``."""
    if bucket < _SUB:
        return bucket
    bits, sub = bucket // _SUB + 3, bucket % _SUB
    return (_SUB + sub) << (bits - 4)


class BreakerState(IntEnum):
    """The breaker's state (numbers are published in the stats block)."""

    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


class LatencyBreaker:
    """See the module docstring; all times in ns."""

    def __init__(self, *, window_ns: int, rtt_p99_limit_ns: int, queue_age_limit_ns: int,
                 cooldown_ns: int, probe_messages: int = 20, open_critical_per_s: float = 1000.0,
                 min_samples: int = 20) -> None:
        for name, value in (("window_ns", window_ns), ("rtt_p99_limit_ns", rtt_p99_limit_ns),
                            ("queue_age_limit_ns", queue_age_limit_ns),
                            ("cooldown_ns", cooldown_ns), ("probe_messages", probe_messages),
                            ("open_critical_per_s", open_critical_per_s)):
            if not value > 0:
                raise ValueError(f"LatencyBreaker: {name} must be > 0, got {value}")
        self.window_ns = window_ns
        self.rtt_limit_ns = rtt_p99_limit_ns
        self.age_limit_ns = queue_age_limit_ns
        self.cooldown_ns = cooldown_ns
        self.probe_messages = probe_messages
        self.rate_per_ns = open_critical_per_s / 1e9
        self.burst = max(1.0, open_critical_per_s / 10)   # a tenth of a second of tokens
        self.min_samples = min_samples
        self.state = BreakerState.CLOSED
        self.closed = True            # state == CLOSED (a bool: the publisher checks it per batch)
        self.transitions = np.zeros(3, np.int64)   # entries into each state
        self.opened_ns = 0
        self.last_p99_ns = 0
        self.reason = ""
        self.slot_ns = max(1, window_ns // _SLOTS)
        self._hist = np.zeros((_SLOTS, _BUCKETS), np.int64)
        self._slot_of = [-1] * _SLOTS   # which time slot each row holds
        self._tokens = self.burst
        self._tokens_ns = 0
        self._probes_sent = 0
        self._probes_ok = 0

    # -- inputs -----------------------------------------------------------------------------

    def record_rtt(self, now_ns: int, rtt_ns: int) -> None:
        """A confirmed message's round trip (write → last reply)."""
        slot = now_ns // self.slot_ns
        row = slot % _SLOTS
        if self._slot_of[row] != slot:   # a new slot: the one it replaces left the window
            self._slot_of[row] = slot
            self._hist[row] = 0
        self._hist[row, rtt_bucket(rtt_ns)] += 1
        if self.state == BreakerState.HALF_OPEN:
            if rtt_ns > self.rtt_limit_ns:
                self._open(now_ns, f"probe round trip {rtt_ns / 1e6:.2f} ms")
            else:
                self._probes_ok += 1

    def tick(self, now_ns: int, queue_age_ns: int, inflight_age_ns: int, *,
             evaluate_p99: bool = True) -> BreakerState:
        """Re-evaluate (the publisher's control tick, ~1 ms); the round-trip p99 (≈ 15 µs to
        compute) only if ``evaluate_p99``, the ages always. Returns the state."""
        if self.state == BreakerState.CLOSED:
            p99 = self.p99_ns(now_ns) if evaluate_p99 else self.last_p99_ns
            if p99 > self.rtt_limit_ns:
                self._open(now_ns, f"p99 round trip {p99 / 1e6:.2f} ms")
            elif queue_age_ns > self.age_limit_ns:
                self._open(now_ns, f"oldest queued {queue_age_ns / 1e6:.1f} ms")
            elif inflight_age_ns > self.age_limit_ns:
                self._open(now_ns, f"oldest unconfirmed {inflight_age_ns / 1e6:.1f} ms")
        elif self.state == BreakerState.OPEN:
            if now_ns - self.opened_ns >= self.cooldown_ns:
                self._enter(BreakerState.HALF_OPEN)
                self._probes_sent = self._probes_ok = 0
                self._slot_of = [-1] * _SLOTS    # judge the recovery on new samples only
                self.last_p99_ns = 0             # (and never on the p99 that opened it)
        else:  # HALF_OPEN
            if inflight_age_ns > self.age_limit_ns or queue_age_ns > self.age_limit_ns:
                self._open(now_ns, "probes not answered in time"
                           if inflight_age_ns > self.age_limit_ns else "queue still too old")
            elif self._probes_ok >= self.probe_messages:
                self._enter(BreakerState.CLOSED)
                self.reason = ""
        return self.state

    def refund_probes(self) -> None:
        """HALF_OPEN with nothing in flight: probes that were sent but never confirmed (an
        error reply, a lost connection) may be sent again, so the breaker cannot stall."""
        self._probes_sent = self._probes_ok

    def may_send(self, critical: bool, now_ns: int) -> bool:
        """Whether one more message of this class may be written now (consumes a token or a
        probe when it returns True)."""
        state = self.state
        if state == BreakerState.CLOSED:
            return True
        if state == BreakerState.HALF_OPEN and self._probes_sent < self.probe_messages:
            self._probes_sent += 1
            return True
        if not critical:
            return False
        self._tokens = min(self.burst, self._tokens + (now_ns - self._tokens_ns) *
                           self.rate_per_ns)
        self._tokens_ns = now_ns
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    # -- outputs ----------------------------------------------------------------------------

    def p99_ns(self, now_ns: int) -> int:
        """p99 round trip over the window (the lower edge of its histogram bucket; 0 below
        ``min_samples`` samples)."""
        current = now_ns // self.slot_ns
        live = [i for i, slot in enumerate(self._slot_of) if slot >= 0 and
                slot > current - _SLOTS]
        counts = self._hist[live].sum(axis=0)   # ≈ 10 µs: fine once per control tick
        total = int(counts.sum())
        if total < self.min_samples:
            self.last_p99_ns = 0
        else:
            bucket = int(np.searchsorted(np.cumsum(counts), 0.99 * total))
            self.last_p99_ns = bucket_floor(bucket)
        return self.last_p99_ns

    def _open(self, now_ns: int, reason: str) -> None:
        self._enter(BreakerState.OPEN)
        self.opened_ns = now_ns
        self.reason = reason
        self._tokens, self._tokens_ns = self.burst, now_ns

    def _enter(self, state: BreakerState) -> None:
        self.state = state
        self.closed = state == BreakerState.CLOSED
        self.transitions[int(state)] += 1
