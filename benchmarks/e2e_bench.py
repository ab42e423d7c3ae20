"""End to end: the whole engine (``microstream run --simulate``) at fixed rates, each stage's
latency from in-band stamps, to a Redis subscriber; CPU and RSS per process.

Run: ``.venv/bin/python benchmarks/e2e_bench.py [--rates 1000,5000,20000] [--seconds S]
[--runs N] [--quick] [--out FILE]`` (or ``microstream bench e2e ...``).

Per rate (market events per second over the three exchanges, split evenly), a fresh engine
runs as its own process tree: three local venues on a shared clock, three feed workers, the
detectors and the publisher into a private ``redis-server``. Once it is ready and warmed up,
for ``S`` seconds:

* a subscriber process reads ``PSUBSCRIBE *:trade`` on a raw socket with ``hiredis`` and
  stamps each read with ``perf_counter_ns`` (CLOCK_MONOTONIC, system-wide);
* this process follows every trades ring and the events ring, keeping each record's stamps:
  ``ts_mono_ns`` (``on_ws_frame`` entry), ``ts_commit_ns`` (ring commit), and for events
  ``trigger_commit_ns`` / ``ts_detect_ns`` / ``ts_commit_ns``;
* psutil samples each child's CPU time and RSS.

Trades are joined by ``(exchange, seq)``: frame → commit, commit → subscriber, frame →
subscriber (end to end). Latency starts at frame receipt, not at the venue's intended send time
(the venue's pacing is not per frame here); the ``ingest`` suite measures flood throughput.
Prints JSON lines ``{"suite": "e2e", "case", "metric", "value", "unit", ...}``: per metric the
median run, with min/max over runs; an environment line and a jitter baseline first.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from ring_bench import Emitter, _percentiles, jitter_once, report_runs  # noqa: E402

import shm  # noqa: E402
from engine.embedded_redis import EmbeddedRedis  # noqa: E402
from engine.status import read_status  # noqa: E402

WARMUP_S = 2.0
_ctx = mp.get_context("spawn")


def _subscriber(path: str, seconds: float, conn: Any) -> None:
    """Child: PSUBSCRIBE *:trade; (receipt ns, exchange, seq) per message, sent back at the end."""
    import hiredis
    import msgspec

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    sock.sendall(b"*2\r\n$10\r\nPSUBSCRIBE\r\n$7\r\n*:trade\r\n")
    reader = hiredis.Reader()
    decode = msgspec.json.Decoder()
    stamps: list[int] = []
    exchanges: list[str] = []
    seqs: list[int] = []
    conn.send("ready")
    end = time.perf_counter_ns() + int(seconds * 1e9)
    sock.settimeout(0.2)
    clock = time.perf_counter_ns
    while clock() < end:
        try:
            data = sock.recv(1 << 16)
        except TimeoutError:
            continue
        now = clock()
        reader.feed(data)
        while (msg := reader.gets()) is not False:
            if isinstance(msg, list) and msg[0] == b"pmessage":
                payload = decode.decode(msg[3])
                stamps.append(now)
                exchanges.append(payload["exchange"])
                seqs.append(payload["seq"])
    sock.close()
    conn.send((stamps, exchanges, seqs))


def _config(path: Path, instance: str, rate: float, redis_url: str) -> None:
    path.write_text(f"""[engine]
instance = "{instance}"
[simulate]
symbols = 2
rate_hz = {rate / 3:.1f}
timeline_s = 60.0
scenarios = []
[detectors]
enabled = true
[publisher]
enabled = true
redis_url = "{redis_url}"
[service]
http_port = -1
""")


def _follow(readers: dict[tuple[int, str], Any], out: dict[tuple[int, str], list[np.ndarray]]
            ) -> None:
    for key, reader in readers.items():
        try:
            batch = reader.poll()
        except shm.WriterGone:
            continue
        if len(batch):
            out[key].append(batch)


def one_run(rate: float, seconds: float) -> dict[str, tuple[float, str]]:
    """One engine at ``rate`` events/s; metric → (value, unit)."""
    instance = "bench" + uuid.uuid4().hex[:6]
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp) / "r") as redis:
        cfg = Path(tmp) / "config.toml"
        _config(cfg, instance, rate, redis.url)
        log = open(Path(tmp) / "run.log", "wb")
        engine = subprocess.Popen([sys.executable, "-m", "engine", "run", "--simulate", "-c",
                                   str(cfg)], stdout=subprocess.DEVNULL, stderr=log, cwd=REPO)
        try:
            return _measure(instance, redis, engine, seconds, Path(tmp) / "run.log")
        finally:
            engine.send_signal(signal.SIGTERM)
            try:
                engine.wait(timeout=60)
            except subprocess.TimeoutExpired:
                engine.kill()
            log.close()


def _measure(instance: str, redis: EmbeddedRedis, engine: subprocess.Popen[bytes],
             seconds: float, log: Path) -> dict[str, tuple[float, str]]:
    deadline = time.monotonic() + 240
    while not read_status(instance).ready:
        if engine.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"engine not ready: {log.read_text()[-2000:]}")
        time.sleep(0.2)
    time.sleep(WARMUP_S)
    ids = {e.name.lower(): int(e) for e in shm.Exchange}
    readers = {(ids[ex], "trades"): shm.Reader.attach(ex, "trades", instance)
               for ex in ("binance", "bybit", "okx")}
    readers[(0, "events")] = shm.Reader.attach("detectors", "events", instance)
    got: dict[tuple[int, str], list[np.ndarray]] = {k: [] for k in readers}
    parent, child = _ctx.Pipe()
    sub = _ctx.Process(target=_subscriber, args=(str(redis.socket_path), seconds, child))
    sub.start()
    parent.recv()
    st0 = read_status(instance)
    procs = {c.name: psutil.Process(c.pid) for c in st0.components}
    cpu0 = {n: sum(p.cpu_times()[:2]) for n, p in procs.items()}
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        _follow(readers, got)
        time.sleep(0.005)
    cpu1 = {n: sum(p.cpu_times()[:2]) for n, p in procs.items()}
    rss = {n: p.memory_info().rss for n, p in procs.items()}
    st1 = read_status(instance)
    stamps, exchanges, seqs = parent.recv()
    sub.join(10)
    _follow(readers, got)
    for reader in readers.values():
        reader.close()

    frames = sum(c.detail.get("frames", 0) for c in st1.components) - \
        sum(c.detail.get("frames", 0) for c in st0.components)
    out: dict[str, tuple[float, str]] = {
        "frames_per_s": (frames / seconds, "1/s"),
        "trades_to_redis_per_s": (len(stamps) / seconds, "1/s")}
    trades = {k[0]: np.concatenate(v) for k, v in got.items() if k[1] == "trades" and v}
    ingest = np.concatenate([t["ts_commit_ns"] - t["ts_mono_ns"] for t in trades.values()])
    for key, value in _percentiles(ingest).items():
        out[f"frame_to_commit_{key}"] = (value, "us")
    recv = np.array(stamps, np.int64)
    ex = np.array([ids.get(e, 0) for e in exchanges], np.int64)
    seq = np.array(seqs, np.int64)
    e2e, tail = [], []
    for eid, recs in trades.items():
        mine = ex == eid
        idx = np.searchsorted(recs["seq"], seq[mine])
        ok = idx < len(recs)
        ok[ok] &= recs["seq"][idx[ok]] == seq[mine][ok]
        hit = recs[idx[ok]]
        e2e.append(recv[mine][ok] - hit["ts_mono_ns"])
        tail.append(recv[mine][ok] - hit["ts_commit_ns"])
    joined = np.concatenate(e2e) if e2e else np.zeros(0, np.int64)
    out["joined_trades"] = (float(len(joined)), "count")
    for name, values in (("commit_to_subscriber", np.concatenate(tail) if tail else joined),
                         ("frame_to_subscriber", joined)):
        for key, value in _percentiles(values).items():
            out[f"{name}_{key}"] = (value, "us")
    events = got[(0, "events")]
    if events:
        ev = np.concatenate(events)
        ev = ev[ev["trigger_commit_ns"] > 0]
        for key, value in _percentiles(ev["ts_commit_ns"] - ev["trigger_commit_ns"]).items():
            out[f"trigger_to_event_{key}"] = (value, "us")
    total_cpu = 0.0
    for name in procs:
        used = cpu1[name] - cpu0[name]
        total_cpu += used
        out[f"cpu_s_per_million_frames[{name}]"] = (used / max(frames, 1) * 1e6, "s")
        out[f"rss_mb[{name}]"] = (rss[name] / 2**20, "MiB")
    out["cpu_us_per_frame_all"] = (total_cpu / max(frames, 1) * 1e6, "us")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="1000,5000,20000",
                        help="market events/s over the three exchanges, comma-separated")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds (10)")
    parser.add_argument("--runs", type=int, default=3, help="runs per rate (3)")
    parser.add_argument("--quick", action="store_true", help="smoke test: 500/s, 2 s, 1 run")
    parser.add_argument("--out", help="also write the JSON lines to this file")
    args = parser.parse_args(argv)
    rates = [500.0] if args.quick else [float(r) for r in args.rates.split(",")]
    seconds, runs = (2.0, 1) if args.quick else (args.seconds, args.runs)
    emit = Emitter(suite="e2e")
    emit.env()
    report_runs(emit, "jitter", [jitter_once(min(seconds, 2.0), None)])
    try:
        for rate in rates:
            results = []
            for i in range(runs):
                print(f"e2e_bench: {rate:g}/s run {i + 1}/{runs}", file=sys.stderr, flush=True)
                results.append(one_run(rate, seconds))
            report_runs(emit, f"rate_{int(rate)}", results, rate=rate, seconds=seconds)
    finally:
        emit.write(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
