"""The venue's paced wake-up (workers/venue/timer.py): never early, not much late, not spinning,
and a wake() ends a wait early."""

from __future__ import annotations

import asyncio
import time

import pytest

from workers.venue.timer import DeadlineTimer, available

pytestmark = pytest.mark.skipif(not available(), reason="no timerfd on this platform")


def test_waits_until_the_deadline_without_spinning() -> None:
    async def run() -> tuple[list[int], float]:
        timer = DeadlineTimer()
        late: list[int] = []
        cpu0 = time.process_time()
        try:
            for _ in range(100):   # 100 × 2 ms: 200 ms of waiting
                deadline = time.perf_counter_ns() + 2_000_000
                await timer.wait_until(deadline)
                late.append(time.perf_counter_ns() - deadline)
        finally:
            timer.close()
        return late, time.process_time() - cpu0

    late, cpu_s = asyncio.run(run())
    assert min(late) >= 0, "woke before the deadline"
    assert sorted(late)[50] < 1_000_000, f"median lateness {sorted(late)[50]} ns"
    # a spin to each deadline would use ~0.2 s of CPU; sleeping uses a few ms
    assert cpu_s < 0.1, f"{cpu_s:.3f} CPU-s for 0.2 s of waiting"


def test_wake_ends_a_wait_early_and_a_past_deadline_returns_at_once() -> None:
    async def run() -> tuple[float, float]:
        timer = DeadlineTimer()
        loop = asyncio.get_running_loop()
        try:
            t0 = time.perf_counter()
            loop.call_later(0.01, timer.wake)
            await timer.wait_until(time.perf_counter_ns() + 5_000_000_000)
            woken = time.perf_counter() - t0
            t0 = time.perf_counter()
            await timer.wait_until(time.perf_counter_ns() - 1_000)
            past = time.perf_counter() - t0
        finally:
            timer.close()
        return woken, past

    woken, past = asyncio.run(run())
    assert 0.009 <= woken < 1.0 and past < 0.5
