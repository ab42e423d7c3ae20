"""The latency breaker's state machine with a simulated clock (ns)."""

from __future__ import annotations

import pytest

from workers.publisher.breaker import BreakerState, LatencyBreaker, bucket_floor, rtt_bucket

MS = 1_000_000


def breaker(**kw: float) -> LatencyBreaker:
    args = dict(window_ns=1000 * MS, rtt_p99_limit_ns=5 * MS, queue_age_limit_ns=100 * MS,
                cooldown_ns=500 * MS, probe_messages=5, open_critical_per_s=100.0,
                min_samples=20)
    args.update(kw)
    return LatencyBreaker(**args)   # type: ignore[arg-type]


def test_histogram_buckets_bound_the_value_within_a_ninth() -> None:
    for v in (0, 5, 8, 100, 999, 123_456, 5 * MS, 3_000_000_000):
        b = rtt_bucket(v)
        assert bucket_floor(b) <= v < bucket_floor(b + 1)
        assert bucket_floor(b + 1) - bucket_floor(b) <= max(1, v // 8)


def test_slow_round_trips_open_it_and_only_critical_goes_out_rate_limited() -> None:
    b = breaker()
    t = 10_000 * MS
    for i in range(100):   # healthy: 0.2 ms
        b.record_rtt(t + i * MS, MS // 5)
    assert b.tick(t + 100 * MS, 0, 0) == BreakerState.CLOSED
    assert 0 < b.p99_ns(t + 100 * MS) <= MS // 5
    for i in range(10):    # 10 % of the window at 20 ms: p99 beyond the 5 ms limit
        b.record_rtt(t + 100 * MS + i, 20 * MS)
    assert b.tick(t + 101 * MS, 0, 0) == BreakerState.OPEN
    assert "p99" in b.reason and b.transitions[BreakerState.OPEN] == 1
    now = t + 102 * MS
    assert not b.may_send(False, now)
    sent = sum(b.may_send(True, now) for _ in range(100))
    assert sent == 10          # the burst: a tenth of a second at 100/s
    assert b.may_send(True, now + 20 * MS)   # two more tokens 20 ms later
    assert b.may_send(True, now + 20 * MS)
    assert not b.may_send(True, now + 20 * MS)


def test_old_samples_leave_the_window() -> None:
    b = breaker()
    for i in range(50):
        b.record_rtt(i * MS, 50 * MS)   # slow, long ago
    assert b.p99_ns(2_000 * MS) == 0    # nothing in the last second
    assert b.tick(2_000 * MS, 0, 0) == BreakerState.CLOSED


def test_a_stalled_redis_opens_it_through_the_unconfirmed_age() -> None:
    b = breaker()
    assert b.tick(MS, 0, 99 * MS) == BreakerState.CLOSED
    assert b.tick(2 * MS, 0, 101 * MS) == BreakerState.OPEN
    assert "unconfirmed" in b.reason
    b2 = breaker()
    assert b2.tick(MS, 150 * MS, 0) == BreakerState.OPEN and "queued" in b2.reason


def test_half_open_probes_then_closes_or_opens_again() -> None:
    b = breaker()
    b.tick(0, 0, 200 * MS)                       # open at t=0
    assert b.tick(499 * MS, 0, 0) == BreakerState.OPEN
    assert b.tick(500 * MS, 0, 0) == BreakerState.HALF_OPEN
    assert sum(b.may_send(False, 500 * MS) for _ in range(10)) == 5   # the probes
    for _ in range(4):
        b.record_rtt(501 * MS, MS)
    assert b.tick(502 * MS, 0, 0) == BreakerState.HALF_OPEN          # 4 of 5 confirmed
    b.record_rtt(503 * MS, MS)
    assert b.tick(504 * MS, 0, 0) == BreakerState.CLOSED
    assert b.may_send(False, 504 * MS)
    # again: open, half-open, a slow probe → open, with a new cool-down
    b.tick(600 * MS, 0, 200 * MS)
    b.tick(1100 * MS, 0, 0)
    assert b.state == BreakerState.HALF_OPEN
    b.record_rtt(1101 * MS, 30 * MS)
    assert b.state == BreakerState.OPEN and b.opened_ns == 1101 * MS
    assert b.transitions.tolist() == [1, 3, 2]   # entries into CLOSED, OPEN, HALF_OPEN


def test_bad_settings() -> None:
    with pytest.raises(ValueError, match="cooldown_ns"):
        breaker(cooldown_ns=0)


def test_recovery_is_judged_on_new_round_trips_and_lost_probes_are_refunded() -> None:
    b = breaker(probe_messages=2)
    for i in range(30):
        b.record_rtt(i * MS, 50 * MS)               # slow: opens on p99
    assert b.tick(30 * MS, 0, 0) == BreakerState.OPEN
    assert b.tick(600 * MS, 0, 0) == BreakerState.HALF_OPEN
    assert b.may_send(False, 600 * MS) and b.may_send(False, 600 * MS)
    assert not b.may_send(False, 600 * MS)          # both probes out...
    b.refund_probes()                               # ...and lost (an error, a reconnect)
    assert b.may_send(False, 601 * MS) and b.may_send(False, 601 * MS)
    b.record_rtt(602 * MS, MS)
    b.record_rtt(602 * MS, MS)
    assert b.tick(603 * MS, 0, 0) == BreakerState.CLOSED
    # the next ticks skip the p99 evaluation: they must not reuse the p99 that opened it
    assert b.tick(604 * MS, 0, 0, evaluate_p99=False) == BreakerState.CLOSED
