"""End to end: the whole engine (``microstream run``) against local venues at fixed rates,
each stage's latency from in-band stamps and from the intended send time, to a Redis
subscriber; CPU and RSS per process.

Run: ``.venv/bin/python benchmarks/e2e_bench.py [--rates 1000,5000,20000] [--seconds S]
[--market recorded] [--runs N] [--quick] [--out FILE]`` (or ``microstream bench e2e ...``).

Per rate (frames per second sent by the three venues), a fresh engine runs as its own
process tree against three venues on shared clocks (``harness.Load``: the synthetic market
split evenly, or with ``--market recorded`` the real recordings sped up by one factor, so
that they keep their recorded mix): three feed workers, the detectors and the publisher
into a private ``redis-server``. Once it is ready and warmed up, for ``S`` seconds:

* a subscriber process reads ``PSUBSCRIBE *`` on a raw socket with ``hiredis`` and stamps each
  read with ``perf_counter_ns`` (CLOCK_MONOTONIC, system-wide);
* this process follows every trades ring and the events ring, keeping each record's stamps:
  ``ts_mono_ns`` (``on_ws_frame`` entry), ``ts_commit_ns`` (ring commit), and for events
  ``trigger_commit_ns`` / ``ts_detect_ns`` / ``ts_commit_ns``;
* psutil samples the CPU time and RSS of the supervisor, each child and Redis;
* the publisher keeps its own ring commit → Redis reply sample per message and saves them
  as it exits (``[publisher] latency_samples_file``).

Per trade: intended send → subscriber (the venue's due time, so a backlog shows: no
coordinated omission), frame → subscriber (the payload's ``ts_recv_ns``), frame → commit, and
commit → subscriber (joined to the ring record by ``(exchange, seq)``); per message Redis
confirmed in the window, commit → Redis reply for the HIGH class (trades among them) and the
LOW one (books): the issue's end point; frame → reply is frame → commit plus this. The
venues are Python processes on the same two vCPUs: their own lateness is part of intended →
subscriber.
Prints JSON lines ``{"suite": "e2e", "case", "metric", "value", "unit", ...}``: per metric the
median run, with min/max over runs; an environment line and a jitter baseline first.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from harness import (  # noqa: E402
    EngineRun,
    Load,
    Sampler,
    Subscriber,
    begin,
    engine_config,
    load_arguments,
)
from report import percentiles as _percentiles  # noqa: E402
from report import report_runs  # noqa: E402

import shm  # noqa: E402
from engine.embedded_redis import EmbeddedRedis  # noqa: E402
from shm.layout import Priority  # noqa: E402
from workers.detectors.events import EventKind  # noqa: E402

WARMUP_S = 2.0
GRACE_S = 0.5   # trades due this close to the end are not expected at the subscriber yet
_ON_ARRIVAL = [int(k) for k in (EventKind.WHALE_TRADE, EventKind.WHALE_BURST,
                                 EventKind.LIQUIDATION, EventKind.BOOK_CROSSED)]
_ctx = mp.get_context("spawn")


def _follow(readers: dict[tuple[int, str], Any], out: dict[tuple[int, str], list[np.ndarray]]
            ) -> None:
    for key, reader in readers.items():
        try:
            batch = reader.poll()
        except shm.WriterGone:
            continue
        if len(batch):
            out[key].append(batch)


def one_run(rate: float, seconds: float, overrides: dict[str, dict[str, Any]] | None = None,
            recorded: bool = False) -> dict[str, tuple[float, str]]:
    """One engine at ``rate`` frames/s from the venues (the synthetic market, or the real
    recordings with ``recorded``); metric → (value, unit)."""
    instance = "bench" + uuid.uuid4().hex[:6]
    timeline = WARMUP_S + seconds + 30.0   # startup included; looped past its end anyway
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp) / "r") as redis, \
            Load(rate, timeline, recorded=recorded) as load:
        cfg, samples = Path(tmp) / "config.toml", Path(tmp) / "publisher_latency.npy"
        overrides = dict(overrides or {})
        overrides["publisher"] = {**overrides.get("publisher", {}),
                                  "latency_samples_file": str(samples)}
        engine_config(cfg, instance, load, redis.url, overrides=overrides)
        with EngineRun(cfg, instance, Path(tmp) / "run.log") as engine:
            out, window = _measure(instance, redis, load, engine, seconds)
        out.update(commit_to_reply(samples, window))   # saved as the publisher exited
        return out


def commit_to_reply(path: Path, window: tuple[int, int]) -> dict[str, tuple[float, str]]:
    """The publisher's own samples (``latency_samples_file``) of the messages Redis confirmed
    in ``window``: ring commit (of a message's oldest record) → Redis reply, in µs, and its
    parts: commit → taken off the ring, taken → written (encoding, queueing), written →
    reply, for the HIGH class (trades, BBO, liquidations, detector signals) and the LOW
    one (books, which conflate); nothing (and a warning) when the publisher saved none.
    MEDIUM is left out: its analytics are read on a timer, so their latency is mostly that
    period."""
    if not path.exists():
        print(f"e2e_bench: no publisher latency samples at {path}", file=sys.stderr)
        return {}
    samples = np.load(path)
    mine = samples[(samples[:, 0] >= window[0]) & (samples[:, 0] < window[1])]
    out: dict[str, tuple[float, str]] = {}
    for cls in (Priority.HIGH, Priority.LOW):
        part = mine[mine[:, 2] == cls]
        name = cls.name.lower()
        stages = {"commit_to_reply": part[:, 1], "commit_to_taken": part[:, 3],
                  "taken_to_written": part[:, 1] - part[:, 3] - part[:, 4],
                  "written_to_reply": part[:, 4]}
        for stage, values in stages.items():
            out.update({f"{stage}_{name}_{k}": (v, "us")
                        for k, v in _percentiles(values).items()})
        out[f"replies_in_window[{name}]"] = (float(len(part)), "count")
    return out


def _measure(instance: str, redis: EmbeddedRedis, load: Load, engine: EngineRun,
             seconds: float) -> tuple[dict[str, tuple[float, str]], tuple[int, int]]:
    time.sleep(WARMUP_S)
    ids = {e.name.lower(): int(e) for e in shm.Exchange}
    readers = {(ids[ex], "trades"): shm.Reader.attach(ex, "trades", instance)
               for ex in load.exchanges}
    readers[(0, "events")] = shm.Reader.attach("detectors", "events", instance)
    got: dict[tuple[int, str], list[np.ndarray]] = {k: [] for k in readers}
    sub = Subscriber(redis.socket_path, seconds)
    window = (time.perf_counter_ns(), time.perf_counter_ns() + int((seconds - GRACE_S) * 1e9))
    frames0 = engine.frames_received()
    pids = engine.pids()
    pids["redis"] = redis.process.pid
    sampler = Sampler(pids)
    sampler.start()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        _follow(readers, got)
        time.sleep(0.005)
    sampler.stop()
    frames = engine.frames_received() - frames0
    counts, received = sub.result()
    _follow(readers, got)
    for reader in readers.values():
        reader.close()

    out: dict[str, tuple[float, str]] = {
        "frames_per_s": (frames / seconds, "1/s"),
        "redis_messages_per_s": (sum(counts.values()) / seconds, "1/s"),
        "trades_to_redis_per_s": (counts.get("trade", 0) / seconds, "1/s")}
    trades = {k[0]: np.concatenate(v) for k, v in got.items() if k[1] == "trades" and v}
    ingest = np.concatenate([t["ts_commit_ns"] - t["ts_mono_ns"] for t in trades.values()])
    for key, value in _percentiles(ingest).items():
        out[f"frame_to_commit_{key}"] = (value, "us")
    out.update(subscriber_latency(load, received, window))
    # commit → subscriber: each received trade joined to its ring record by (exchange, seq)
    tail = []
    for ex_name in load.exchanges:
        mine = [r for r in received if r[1] == ex_name]
        recs = trades.get(ids[ex_name])
        if not mine or recs is None:
            continue
        recv = np.array([r[0] for r in mine], np.int64)
        seq = np.array([r[4] for r in mine], np.int64)
        idx = np.searchsorted(recs["seq"], seq)
        ok = idx < len(recs)
        ok[ok] &= recs["seq"][idx[ok]] == seq[ok]
        tail.append(recv[ok] - recs[idx[ok]]["ts_commit_ns"])
    for key, value in _percentiles(np.concatenate(tail) if tail else np.zeros(0)).items():
        out[f"commit_to_subscriber_{key}"] = (value, "us")
    events = got[(0, "events")]
    if events:
        ev = np.concatenate(events)
        # events a record triggers as it arrives (candles, spoofs, icebergs, regimes and the
        # like close later, on a timer or a later record: their latency is their window)
        ev = ev[(ev["trigger_commit_ns"] > 0) & np.isin(ev["kind"], _ON_ARRIVAL)]
        for key, value in _percentiles(ev["ts_commit_ns"] - ev["trigger_commit_ns"]).items():
            out[f"trigger_to_event_{key}"] = (value, "us")
    out.update(cost(sampler, frames, exclude=("redis",)))
    return out, window


def subscriber_latency(load: Load, received: list[tuple[Any, ...]], window: tuple[int, int]
                       ) -> dict[str, tuple[float, str]]:
    """Trades received by the subscriber: intended send → subscriber (from the venue's
    clock) and frame receipt (the payload's wall-clock ``ts_recv_ns``) → subscriber, in µs;
    ``trades_delivered``: the fraction of the trades due in ``window`` (perf_counter_ns; its
    end a grace period before the subscriber stopped) that arrived, 1.0 when it keeps up."""
    out: dict[str, tuple[float, str]] = {}
    intended, frame, due_all = [], [], []
    parts = _by_exchange(load, received)
    for mine in parts:
        ex_name = mine[0][1]
        recv = np.array([r[0] for r in mine], np.int64)
        due = load.intended(ex_name, [r[2] for r in mine], [r[3] for r in mine], recv)
        intended.append((recv - due)[due > 0])
        due_all.append(due)
        frame.append(np.array([r[5] for r in mine], np.int64))
    out["trades_joined"] = (float(sum(len(i) for i in intended)), "count")
    expected = load.due_between(*window)
    # unique (exchange, symbol, trade, due time) only: at-least-once re-sends must not hide
    # a loss
    keys = {(r[1], r[2], r[3], d) for part, d_part in zip(parts, due_all, strict=True)
            for r, d in zip(part, d_part.tolist(), strict=True) if window[0] <= d < window[1]}
    out["trades_delivered"] = (len(keys) / expected if expected else float("nan"), "fraction")
    for name, stage in (("intended_to_subscriber", intended), ("frame_to_subscriber", frame)):
        for key, value in _percentiles(np.concatenate(stage) if stage
                                       else np.zeros(0)).items():
            out[f"{name}_{key}"] = (value, "us")
    return out


def _by_exchange(load: Load, received: list[tuple[Any, ...]]) -> list[list[tuple[Any, ...]]]:
    """The received trades per exchange (exchanges with none left out)."""
    parts = [[r for r in received if r[1] == ex] for ex in load.exchanges]
    return [p for p in parts if p]


def cost(sampler: Sampler, messages: int, exclude: tuple[str, ...] = ()
         ) -> dict[str, tuple[float, str]]:
    """CPU seconds per million messages and memory (PSS) per process, and CPU µs per message
    over all processes but ``exclude`` (their own CPU is still reported)."""
    out: dict[str, tuple[float, str]] = {}
    total = 0.0
    for name, used in sampler.cpu_s.items():
        total += used if name not in exclude else 0.0
        out[f"cpu_s_per_million[{name}]"] = (used / max(messages, 1) * 1e6, "s")
        out[f"pss_mb[{name}]"] = (sampler.pss_mb[name], "MiB")
    out["cpu_us_per_message_all"] = (total / max(messages, 1) * 1e6, "us")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    load_arguments(parser, "500/s, 2 s, 1 run")
    args = parser.parse_args(argv)
    rates, seconds, runs, overrides, emit = begin(parser, args, "e2e", 500.0)
    recorded = args.market == "recorded"
    try:
        for rate in rates:
            results = []
            for i in range(runs):
                print(f"e2e_bench: {args.market} {rate:g}/s run {i + 1}/{runs}",
                      file=sys.stderr, flush=True)
                results.append(one_run(rate, seconds, overrides, recorded))
            report_runs(emit, f"{'recorded' if recorded else 'rate'}_{int(rate)}", results,
                        rate=rate, seconds=seconds, market=args.market)
    finally:
        emit.finish(args.out, args.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
