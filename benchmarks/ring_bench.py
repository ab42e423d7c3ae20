"""Throughput and cross-process latency of the shared-memory ring (``shm.Writer``/``shm.Reader``).

Run: ``PYTHONPATH=. .venv/bin/python benchmarks/ring_bench.py [--duration S] [--runs N] [--quick]``.
Stdout carries only JSON lines ``{"bench": "ring", "case", "metric", "value", "unit", ...}``;
progress goes to stderr. Cases:

* ``env``: CPU model, core count, kernel, Python/numpy/numba versions, CPUs used, 1-min load.
* ``commit_single``: ``Writer.commit`` of one ``np.void`` record in a tight loop, no reader.
* ``commit_batch_<B>``: ``Writer.commit_batch`` of B-record arrays (B = 16, 64, 256), no reader.
* ``handoff_spin`` / ``handoff_park`` (and ``_into``): this process writes, a reader in a
  ``spawn``-ed child reads with ``poll()`` (a fresh array per call) or ``poll_into()`` (one reused
  buffer), waiting with ``wait="spin"`` / ``wait="park"`` (default ``spin_us``). The writer commits
  one record at a time at a paced rate: it busy-waits on ``perf_counter_ns`` to each send time
  (park: it first sleeps most of the interval, so the reader has parked before each record).
  Latency is ``perf_counter_ns()`` taken right after ``poll()`` returns minus the record's
  ``ts_commit_ns`` (CLOCK_MONOTONIC, system-wide, stamped inside the commit just before the
  record becomes visible); it therefore covers the cross-core hand-off, the wake-up and the copy
  out of the ring into a validated array. The first 10% are warm-up.
  ``reader_cpu`` is the reader's CPU time (``process_time_ns``) over its wall time while
  waiting/reading; ``reader_cpu_per_record`` the same CPU time per record read.
* ``wake_floor``: the same paced ping as ``handoff_park`` through a bare futex in a scratch
  file, with no bus code: the platform's own wake-up latency, the floor under ``handoff_park``.
* ``jitter``: a child pinned to the reader's CPU busy-reads ``perf_counter_ns`` and records
  gaps > 1 µs: the machine's own noise floor, to read next to the hand-off tails.

Writer and reader (and the jitter child) are pinned to different CPUs when ≥ 2 are usable; the
garbage collector is disabled inside measured loops. Latency cases run ``--runs`` times; each
metric's value is the median over runs, with ``min``/``max`` over runs as extra keys.
"""

from __future__ import annotations

import argparse
import gc
import mmap
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import shm
from shm.wake import futex_wait, futex_wake

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from report import Emitter, report_runs
from report import percentiles as _percentiles

CAPACITY = 1 << 16  # as engine/demo.py
BATCH_SIZES = (16, 64, 256)
BATCH_TARGET = 2_000_000  # records/s
WARMUP_FRACTION = 0.1
SLEEP_MARGIN_NS = 200_000  # park pacing: wake this early from sleep, busy-wait the rest
JITTER_GAP_NS = 1_000
JITTER_MAX_GAPS = 1 << 20
CHILD_TIMEOUT_S = 60.0

_ctx = mp.get_context("spawn")


def _log(msg: str) -> None:
    print(f"ring_bench: {msg}", file=sys.stderr, flush=True)


def _pin(cpu: int | None) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


def _seconds(ns: int) -> float:
    return ns / 1e9


# -- throughput (in this process) ------------------------------------------------------------
def _rate(call: Callable[[Any], object], arg: Any, per_call: int, duration: float) -> float:
    """Records/s of ``call(arg)`` repeated for ``duration`` s (after a short warm-up)."""
    for _ in range(1000):
        call(arg)
    n = 0
    gc.disable()
    try:
        t0 = time.perf_counter_ns()
        end = t0 + int(duration * 1e9)
        while True:
            for _ in range(256):
                call(arg)
            n += 256 * per_call
            now = time.perf_counter_ns()
            if now >= end:
                break
    finally:
        gc.enable()
    return n / _seconds(now - t0)


def bench_commit(emit: Emitter, name: str, duration: float) -> None:
    writer = shm.Writer(name, shm.TRADE, CAPACITY)
    try:
        _log("commit_single")
        rate = _rate(writer.commit, np.zeros(1, shm.TRADE)[0], 1, duration)
        emit("commit_single", "throughput", round(rate), "records/s")
        emit("commit_single", "per_record", round(1e9 / rate, 1), "ns")
        for size in BATCH_SIZES:
            _log(f"commit_batch_{size}")
            rate = _rate(writer.commit_batch, np.zeros(size, shm.TRADE), size, duration)
            case = f"commit_batch_{size}"
            emit(case, "throughput", round(rate), "records/s", target=BATCH_TARGET,
                 meets_target=rate >= BATCH_TARGET)
            emit(case, "per_record", round(1e9 / rate, 1), "ns")
    finally:
        writer.close(unlink=True)


# -- child processes (spawn) -----------------------------------------------------------------
def _child(fn: Callable[..., dict], results: Any, ready: Any, cpu: int | None,
           kwargs: dict) -> None:
    """Child entry: pin, run ``fn`` (which sets ``ready``), send its result or the error."""
    try:
        _pin(cpu)
        results.put(fn(ready=ready, **kwargs))
    except BaseException as exc:
        results.put({"error": f"{type(exc).__name__}: {exc}"})
        ready.set()


def _reader_child(ready: Any, name: str, wait: str, count: int, api: str) -> dict:
    """Read ``count`` records (or until the writer closes) with ``poll`` or ``poll_into``;
    latency of each in ns."""
    reader = shm.Reader(name, start="oldest", wait=wait)  # type: ignore[arg-type]
    lat = np.empty(count, np.int64)
    buf = np.zeros(256, shm.TRADE)
    into = api == "poll_into"
    k = 0
    try:
        reader.poll()
        gc.disable()
        ready.set()
        cpu0, t0 = time.process_time_ns(), time.perf_counter_ns()
        while k < count:
            try:
                if into:
                    n = reader.poll_into(buf, 0.5)
                    now = time.perf_counter_ns()
                    recs = buf[:n]
                else:
                    recs = reader.poll(0.5)
                    now = time.perf_counter_ns()
            except shm.WriterGone:
                break
            m = min(len(recs), count - k)
            if m:
                lat[k:k + m] = now - recs["ts_commit_ns"][:m]
                k += m
        cpu = (time.process_time_ns() - cpu0) / 1e9
        wall = _seconds(time.perf_counter_ns() - t0)
        stats = reader.stats
    finally:
        gc.enable()
        reader.close()
    return {"lat": lat[:k], "lost": stats.lost, "parks": stats.parks,
            "cpu_pct": 100.0 * cpu / wall, "cpu_per_record_us": cpu / max(k, 1) * 1e6}


def _floor_child(ready: Any, path: str, count: int) -> dict:
    """Wait on a bare futex ``count`` times; the wake latency of each, in ns (no bus code),
    and the CPU this waiter spent per wake-up (the floor under every parked stage's cost)."""
    fd = os.open(path, os.O_RDONLY)
    mm = mmap.mmap(fd, mmap.PAGESIZE, prot=mmap.PROT_READ)
    os.close(fd)
    words = memoryview(mm).cast("Q")
    addr = np.frombuffer(mm, np.uint8).ctypes.data
    lat = np.empty(count, np.int64)
    ready.set()
    gc.disable()
    cpu0 = time.process_time_ns()
    for i in range(count):
        while words[0] == i:
            futex_wait(addr, i, 1.0)
        lat[i] = time.perf_counter_ns() - words[1]
    cpu = time.process_time_ns() - cpu0
    gc.enable()
    words.release()
    return {"lat": lat, "cpu_per_wake_us": cpu / count / 1e3}


def _jitter_child(ready: Any, duration: float) -> dict:
    """Busy-read the clock for ``duration`` s; gaps longer than JITTER_GAP_NS, in ns."""
    gaps = np.empty(JITTER_MAX_GAPS, np.int64)
    k = 0
    clock = time.perf_counter_ns
    ready.set()
    gc.disable()
    prev = clock()
    end = prev + int(duration * 1e9)
    while prev < end:
        now = clock()
        if now - prev > JITTER_GAP_NS and k < JITTER_MAX_GAPS:
            gaps[k] = now - prev
            k += 1
        prev = now
    gc.enable()
    return {"lat": gaps[:k]}


def _start(fn: Callable[..., dict], cpu: int | None, **kwargs: Any) -> tuple[Any, Any]:
    results, ready = _ctx.Queue(), _ctx.Event()
    proc = _ctx.Process(target=_child, args=(fn, results, ready, cpu, kwargs), daemon=True)
    proc.start()
    deadline = time.monotonic() + CHILD_TIMEOUT_S
    while not ready.wait(0.1):
        if not proc.is_alive() or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"{fn.__name__} child died or hung before it was ready")
    return proc, results


def _finish(proc: Any, results: Any) -> dict:
    try:
        result = results.get(timeout=CHILD_TIMEOUT_S)
    finally:
        proc.join(5)
        if proc.is_alive():
            proc.kill()
    if "error" in result:
        raise RuntimeError(f"child failed: {result['error']}")
    return result


# -- latency cases ---------------------------------------------------------------------------
def handoff_once(name: str, wait: str, api: str, rate: float, duration: float,
                 cpus: tuple[int | None, int | None]) -> dict[str, tuple[float, str]]:
    """One paced writer→reader run; returns {metric: (value, unit)}."""
    count = max(100, int(rate * duration))
    interval = 1e9 / rate
    sleep = wait == "park"
    rec = np.zeros(1, shm.TRADE)[0]
    writer = shm.Writer(name, shm.TRADE, CAPACITY)
    try:
        proc, results = _start(_reader_child, cpus[1], name=name, wait=wait, count=count,
                               api=api)
        clock = time.perf_counter_ns
        gc.disable()
        send = clock() + 10e6  # ns: let the reader settle into its wait
        for _ in range(count):
            if sleep and (ahead := send - clock() - SLEEP_MARGIN_NS) > 0:
                time.sleep(ahead / 1e9)
            target = int(send)
            while clock() < target:
                pass
            writer.commit(rec)
            send += interval
        gc.enable()
        writer.close(unlink=True)  # the reader drains what is left, then sees WriterGone
        result = _finish(proc, results)
    finally:
        gc.enable()
        writer.close(unlink=True)
    lat = result["lat"][int(len(result["lat"]) * WARMUP_FRACTION):]
    out = {key: (value, "us") for key, value in _percentiles(lat).items()}
    out |= {"count": (len(lat), "records"), "lost": (result["lost"], "records"),
            "parks": (result["parks"], "count"), "reader_cpu": (result["cpu_pct"], "%"),
            "reader_cpu_per_record": (result["cpu_per_record_us"], "us")}
    return out


def wake_floor_once(rate: float, duration: float,
                    cpus: tuple[int | None, int | None]) -> dict[str, tuple[float, str]]:
    """The platform's futex wake latency at the park pacing: the floor under handoff_park."""
    count = max(100, int(rate * duration))
    path = f"/dev/shm/microstream.bench.floor{os.getpid()}"
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    try:
        os.ftruncate(fd, mmap.PAGESIZE)
        mm = mmap.mmap(fd, mmap.PAGESIZE)
        words = memoryview(mm).cast("Q")
        addr = np.frombuffer(mm, np.uint8).ctypes.data
        proc, results = _start(_floor_child, cpus[1], path=path, count=count)
        send = time.perf_counter_ns() + 10e6
        for i in range(count):
            if (ahead := send - time.perf_counter_ns() - SLEEP_MARGIN_NS) > 0:
                time.sleep(ahead / 1e9)
            while time.perf_counter_ns() < send:
                pass
            words[1] = time.perf_counter_ns()
            words[0] = i + 1
            futex_wake(addr)
            send += 1e9 / rate
        result = _finish(proc, results)
        words.release()
    finally:
        os.close(fd)
        os.unlink(path)
    lat = result["lat"][int(len(result["lat"]) * WARMUP_FRACTION):]
    out = {key: (value, "us") for key, value in _percentiles(lat).items()}
    out["waiter_cpu_per_wake"] = (result["cpu_per_wake_us"], "us")
    return out


def jitter_once(duration: float, cpu: int | None) -> dict[str, tuple[float, str]]:
    gaps = _finish(*_start(_jitter_child, cpu, duration=duration))["lat"]
    out = {f"gap_{key}": (value, "us") for key, value in _percentiles(gaps).items()}
    out["gaps_per_s"] = (len(gaps) / duration, "1/s")
    return out


# -- main ------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per case (3)")
    parser.add_argument("--runs", type=int, default=3, help="runs per latency case (3)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: 0.2 s per case, one run")
    parser.add_argument("--spin-rate", type=float, default=10_000.0,
                        help="handoff_spin records/s (10000)")
    parser.add_argument("--park-rate", type=float, default=2_000.0,
                        help="handoff_park records/s (2000)")
    parser.add_argument("--out", help="also write the JSON lines to this file")
    parser.add_argument("--plot", help="draw latency and throughput into this PNG")
    args = parser.parse_args(argv)
    duration, runs = (0.2, 1) if args.quick else (args.duration, args.runs)
    if duration <= 0 or runs < 1:
        parser.error("--duration must be > 0 and --runs ≥ 1")

    usable = sorted(os.sched_getaffinity(0))
    cpus: tuple[int | None, int | None] = (None, None)
    if len(usable) >= 2:
        cpus = (usable[0], usable[1])
    name = shm.segment_name("bench", "local", f"ringbench{os.getpid()}")
    emit = Emitter(suite="ring")
    emit.env(writer_cpu=cpus[0], reader_cpu=cpus[1])
    try:
        _pin(cpus[0])
        bench_commit(emit, name, duration)
        for wait, rate in (("spin", args.spin_rate), ("park", args.park_rate)):
            for api in ("poll", "poll_into"):
                case = f"handoff_{wait}" + ("_into" if api == "poll_into" else "")
                results = []
                for i in range(runs):
                    _log(f"{case} run {i + 1}/{runs}")
                    results.append(handoff_once(name, wait, api, rate, duration, cpus))
                report_runs(emit, case, results, rate=rate, api=api, writer_cpu=cpus[0],
                            reader_cpu=cpus[1])
        results = []
        for i in range(runs):
            _log(f"wake_floor run {i + 1}/{runs}")
            results.append(wake_floor_once(args.park_rate, duration, cpus))
        report_runs(emit, "wake_floor", results, rate=args.park_rate, writer_cpu=cpus[0],
                    reader_cpu=cpus[1])
        results = []
        for i in range(runs):
            _log(f"jitter run {i + 1}/{runs}")
            results.append(jitter_once(duration, cpus[1]))
        report_runs(emit, "jitter", results, cpu=cpus[1], threshold_us=JITTER_GAP_NS / 1000)
    finally:
        os.sched_setaffinity(0, usable)
        emit.finish(args.out, args.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
