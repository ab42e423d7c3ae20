"""Priority queues: class order, conflation per key under pressure, shedding, overflow and
the drop counters."""

from __future__ import annotations

import pytest

from shm.layout import Priority
from workers.publisher.queues import DROP_REASONS, Drop, Message, PriorityQueues

C, H, M, L = (int(p) for p in Priority)


def msg(key: str, p: int, data: bytes = b"x", t: int = 0) -> Message:
    return Message(key, data, 1, p, commit_ns=t, enqueued_ns=t)


def test_each_class_is_fifo_and_keeps_its_own_count() -> None:
    q = PriorityQueues((10, 10, 10, 10))
    for i, p in enumerate((L, H, C, M, H)):
        q.push(msg(f"k{i}", p, t=i + 1))
    assert q.depths() == [1, 2, 1, 1]
    assert [q.pop(H).key, q.pop(H).key] == ["k1", "k4"]   # type: ignore[union-attr]
    assert q.pop(H) is None
    assert q.oldest_enqueued_ns() == 1   # k0 (LOW): the oldest of any class
    q.pop(L)
    assert q.oldest_enqueued_ns() == 3   # k2 (CRITICAL)
    assert q.enqueued.tolist() == [1, 2, 1, 1]


def test_medium_and_low_conflate_per_key_only_under_pressure() -> None:
    q = PriorityQueues((4, 4, 4, 4), conflate_fraction=0.5)   # conflate from 2 queued
    q.push(msg("a", M, b"1", t=1))
    q.push(msg("a", M, b"2", t=2))         # 1 queued: no pressure, both kept
    assert q.depths()[M] == 2
    q.push(msg("a", M, b"3", t=3))         # 2 queued: replaces the queued "a" in place
    assert q.depths()[M] == 2 and q.drops[M, Drop.CONFLATED] == 1
    first, second = q.pop(M), q.pop(M)
    assert first is not None and second is not None
    assert (first.data, first.enqueued_ns) == (b"1", 1)
    assert (second.data, second.enqueued_ns) == (b"3", 2)   # the newest payload, its place
    # ... and the newest record's stamps: commit → taken is that record's, never negative
    assert (second.commit_ns, second.taken_ns) == (3, 3)
    assert q.pop(M) is None


def test_conflation_keeps_only_the_newest_payload_of_a_key() -> None:
    q = PriorityQueues((8, 8, 8, 8), conflate_fraction=0.25)   # conflate from 2 queued
    q.push(msg("x", L, b"x0"))
    q.push(msg("y", L, b"y0"))
    for i in range(1, 6):
        q.push(msg("x", L, b"x%d" % i))
        q.push(msg("y", L, b"y%d" % i))
    out = [q.pop(L) for _ in range(2)]
    assert [(m.key, m.data) for m in out if m] == [("x", b"x5"), ("y", b"y5")]
    assert q.drops[L, Drop.CONFLATED] == 10 and q.pop(L) is None


def test_full_queues_shed_or_overflow_the_oldest_and_count_it() -> None:
    q = PriorityQueues((2, 2, 2, 2), conflate_fraction=1.0)
    for p in (C, H, M, L):
        for i in range(5):
            q.push(msg(f"{p}-{i}", p, t=i))
    assert q.depths() == [2, 2, 2, 2]
    assert [q.pop(C).key for _ in range(2)] == ["0-3", "0-4"]   # type: ignore[union-attr]
    assert q.drops[C, Drop.OVERFLOW] == 3 and q.drops[H, Drop.OVERFLOW] == 3
    assert q.drops[M, Drop.SHED] == 3 and q.drops[L, Drop.SHED] == 3
    assert q.drops[C, Drop.CONFLATED] == 0   # CRITICAL is never conflated
    assert len(DROP_REASONS) == q.drops.shape[1]


def test_critical_with_one_key_is_never_conflated() -> None:
    q = PriorityQueues((100, 10, 10, 10), conflate_fraction=0.01)
    for i in range(50):
        q.push(msg("binance:btcusdt:whale_alert", C, b"%d" % i))
    assert q.depths()[C] == 50 and not q.drops.any()


def test_push_front_resends_first_and_a_newer_value_wins() -> None:
    q = PriorityQueues((10, 10, 10, 10))
    q.push(msg("a", H, b"new"))
    q.push_front(msg("b", H, b"old"))
    assert q.pop(H).key == "b"   # type: ignore[union-attr]
    q.push(msg("k", L, b"newer"))
    q.push_front(msg("k", L, b"older, unconfirmed"))   # a newer value already waits
    assert q.depths()[L] == 1 and q.drops[L, Drop.CONFLATED] == 1
    assert q.drop_class(L, Drop.BREAKER_OPEN) == 1 and q.drops[L, Drop.BREAKER_OPEN] == 1


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="four capacities"):
        PriorityQueues((1, 1, 1))   # type: ignore[arg-type]
    with pytest.raises(ValueError, match="conflate_fraction"):
        PriorityQueues((1, 1, 1, 1), conflate_fraction=0)
