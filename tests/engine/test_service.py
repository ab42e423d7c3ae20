"""``microstream run`` as a service, end to end with real processes: the simulated market
through feeds, detectors and the publisher into an embedded Redis; sd_notify on a datagram
socket; /metrics, /healthz, /readyz; ``status`` and ``tail``; kill -9 and SIGSTOP of children;
a crash loop; ordered shutdown leaving nothing in /dev/shm."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest
import redis
from service_run import REPO, Engine, NotifyListener, status, wait_until, write_config

import shm

_READY_S = 240.0   # first start on a clean clone compiles numba kernels


def _ring_counts(instance: str) -> dict[str, int]:
    """Records in every ring, read by a separate process with shm.Reader."""
    code = ("import json, shm, sys\n"
            "out = {}\n"
            "for i in shm.list_segments(sys.argv[1]):\n"
            "    if i.kind == 'ring':\n"
            "        with shm.Reader.attach(i.exchange, i.stream, sys.argv[1], start='oldest')"
            " as r:\n"
            "            out[i.exchange + '.' + i.stream] = len(r.poll())\n"
            "print(json.dumps(out))\n")
    out = subprocess.run([sys.executable, "-c", code, instance], capture_output=True, text=True,
                         timeout=60, cwd=REPO)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _subscribe(sock: str, patterns: list[str], want: set[str], timeout_s: float
               ) -> dict[str, dict[str, object]]:
    """First payload per event type on the channels, until every type in ``want`` arrived."""
    client = redis.Redis(unix_socket_path=sock)
    pubsub = client.pubsub()
    pubsub.psubscribe(*patterns)
    seen: dict[str, dict[str, object]] = {}
    deadline = time.monotonic() + timeout_s
    while not want <= set(seen) and time.monotonic() < deadline:
        msg = pubsub.get_message(timeout=0.5)
        if msg and msg["type"] == "pmessage":
            channel = msg["channel"].decode()
            payload = msgspec.json.decode(msg["data"])
            assert channel == f"{payload['exchange']}:{payload['symbol']}:{payload['event_type']}"
            seen.setdefault(payload["event_type"], payload)
    pubsub.close()
    client.close()
    return seen


def test_simulated_run_end_to_end(tmp_path: Path, instance: str) -> None:
    cfg = write_config(tmp_path / "config.toml", instance)
    notify = NotifyListener()
    engine = Engine(cfg, tmp_path / "run.log",
                    env={"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "1000000"})
    try:
        banner = engine.read_banner()
        assert f"microstream tail binance.trades -f --instance {instance}" in banner
        assert engine.metrics_url and engine.redis_socket, banner
        wait_until("READY=1", lambda: any("READY=1" in m for m in notify.messages), _READY_S,
                   engine)
        code, body = engine.http("/readyz")
        ready = json.loads(body)
        assert code == 200 and ready["ready"], body
        assert set(ready["components"]) == {"feed:binance", "feed:bybit", "feed:okx",
                                            "detectors", "publisher"}
        assert engine.http("/healthz")[0] == 200
        assert engine.http("/nope")[0] == 404

        got = _subscribe(engine.redis_socket, ["*:trade", "*:whale_alert", "*:cvd"],
                         {"trade", "whale_alert", "cvd"}, 60)
        assert {"trade", "whale_alert", "cvd"} <= set(got), sorted(got)
        assert {"exchange", "symbol", "event_type", "price", "quantity", "side", "timestamp",
                "trade_id", "seq", "ts_recv_ns"} <= set(got["trade"])
        assert got["trade"]["side"] in ("BUY", "SELL")
        assert {"price", "quantity", "usd_value", "side", "confidence"} <= set(
            got["whale_alert"])
        assert {"cvd_1m", "cvd_5m", "cvd_15m", "trade_count"} <= set(got["cvd"])

        rings = [f"{ex}.{stream}" for ex in ("binance", "bybit", "okx")
                 for stream in ("trades", "depth", "book", "funding", "open_interest")]
        rings += ["binance.bbo", "detectors.events"]

        def every_ring_has_records() -> dict[str, int] | None:
            counts = _ring_counts(instance)
            return counts if all(counts.get(r, 0) > 0 for r in rings) else None

        wait_until("records in every ring", every_ring_has_records, 60, engine)

        code, metrics = engine.http("/metrics")
        assert code == 200
        frames = [line for line in metrics.splitlines()
                  if line.startswith('microstream_feed_frames_total{exchange="binance"}')]
        assert frames and float(frames[0].split()[-1]) > 0, metrics[:2000]
        for needle in ('microstream_ready 1', 'microstream_book_state{exchange="okx"',
                       'microstream_publisher_breaker_state{state="CLOSED"} 1',
                       'microstream_publisher_dropped_total{priority="LOW",reason="shed"}',
                       'microstream_child_restarts_total{child="detectors"} 0',
                       'microstream_stage_latency_seconds_bucket{stage="frame_to_commit",'
                       'owner="binance",stream="trades",le="+Inf"}',
                       'microstream_ring_records_total{owner="detectors",stream="events"}'):
            assert needle in metrics, needle

        tail = subprocess.run([sys.executable, "-m", "engine", "tail", "binance.trades",
                               "--last", "3", "--instance", instance], capture_output=True,
                              text=True, timeout=60, cwd=REPO)
        lines = [json.loads(line) for line in tail.stdout.splitlines()]
        assert tail.returncode == 0 and len(lines) == 3, tail.stderr
        assert all(t["symbol"] == "BTCUSDT" and t["side"] in ("BUY", "SELL") for t in lines)
        seqs = [t["seq"] for t in lines]
        assert seqs == sorted(seqs) and len(set(seqs)) == 3
        one = subprocess.run([sys.executable, "-m", "engine", "tail", "okx.book", "--symbol",
                              "BTC-USDT-SWAP", "--last", "2", "--instance", instance],
                             capture_output=True, text=True, timeout=60, cwd=REPO)
        books = [json.loads(line) for line in one.stdout.splitlines()]
        assert one.returncode == 0 and len(books) == 2, one.stderr
        assert books[0]["state"] == "LIVE" and books[0]["bids"][0][0] < books[0]["asks"][0][0]
        nope = subprocess.run([sys.executable, "-m", "engine", "tail", "okx.book", "--symbol",
                               "NOPE", "--instance", instance], capture_output=True, text=True,
                              timeout=60, cwd=REPO)
        assert nope.returncode == 2 and "unknown symbol 'NOPE'" in nope.stderr
        st = status(instance)
        assert st["running"] and st["ready"]
        assert [c["state"] for c in st["components"]] == ["running"] * 5
    finally:
        code = engine.stop()
        notify.close()
    assert code == 0, engine.log_tail()
    kinds = [m.split("=", 1)[0] for m in notify.messages]
    assert "READY" in kinds and "WATCHDOG" in kinds and "STOPPING" in kinds
    assert kinds.index("READY") < kinds.index("STOPPING") and kinds[-1] == "STOPPING"
    assert any(m.startswith("STATUS=ready; feed:binance") for m in notify.messages)
    assert shm.list_segments(instance) == []
    assert not Path(engine.redis_socket).parent.exists()
    assert status(instance) == {"instance": instance, "running": False, "pid": 0,
                                "ready": False, "http_port": -1, "components": []}


def _child(instance: str, name: str) -> dict[str, object]:
    return next(c for c in status(instance)["components"] if c["name"] == name)


def test_killed_and_stuck_children_are_restarted(tmp_path: Path, instance: str) -> None:
    engine = Engine(write_config(tmp_path / "config.toml", instance), tmp_path / "run.log")
    try:
        engine.read_banner()
        wait_until("ready", lambda: status(instance)["ready"], _READY_S, engine)
        trades = shm.Reader.attach("binance", "trades", instance)
        events = shm.Reader.attach("detectors", "events", instance)
        for name, sig in (("feed:binance", signal.SIGKILL), ("detectors", signal.SIGKILL),
                          ("publisher", signal.SIGKILL), ("feed:okx", signal.SIGSTOP)):
            old = _child(instance, name)
            os.kill(int(old["pid"]), sig)   # type: ignore[call-overload]

            def restarted(name: str = name, old_pid: object = old["pid"]) -> bool:
                c = _child(instance, name)
                return c["restarts"] == 1 and c["state"] == "running" and c["pid"] != old_pid

            wait_until(f"{name} restarted after {sig.name}", restarted, 120, engine)
        for reader in (trades, events):   # the successor took the ring over: a new generation
            wait_until(f"a discontinuity on {reader.name}",
                       lambda r=reader: r.poll() is not None and r.stats.discontinuities >= 1,
                       60, engine)
            reader.close()
        wait_until("ready again", lambda: status(instance)["ready"], _READY_S, engine)
        assert engine.http("/readyz")[0] == 200
        log = engine.log_tail(200_000)
        assert "feed:okx: no heartbeat for" in log and "killed" in log
        assert "detectors: exited with code -9" in log
    finally:
        code = engine.stop()
    assert code == 0, engine.log_tail()
    assert shm.list_segments(instance) == []


def test_crash_loop_stops_the_service_with_exit_1(tmp_path: Path, instance: str) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text(f"""[engine]
instance = "{instance}"
[exchanges.binance]
enabled = true
symbols = [{{ symbol = "BTCUSDT", market = "linear" }}]
options = {{ no_such_option = 1 }}
[service]
http_port = -1
restart_backoff_initial_s = 0.05
restart_backoff_max_s = 0.1
crash_loop_restarts = 2
crash_loop_window_s = 120.0
""")
    engine = Engine(cfg, tmp_path / "run.log", simulate=False)
    try:
        engine.proc.wait(timeout=120)
    finally:
        code = engine.stop()
    log = engine.log.read_text(errors="replace")
    supervisor = "\n".join(line for line in log.splitlines() if "microstream.supervisor" in line)
    assert code == 1, supervisor
    assert "crash loop: 2 restarts within 120 s, giving up" in supervisor, supervisor
    assert supervisor.count("feed:binance: exited with code 1") == 3, supervisor
    assert "no_such_option" in log   # the child's own error is in the log
    assert shm.list_segments(instance) == []


@pytest.mark.parametrize(("text", "path", "message"), [
    ("[service]\nready_when = 'soon'\n", "$.service", "ready_when must be one of"),
    ("[service]\nhttp_port = 70000\n", "$.service", "is not a port"),
    ("[service]\nheartbeat_timeout = 1\n", "$.service", "unknown field `heartbeat_timeout`"),
    ("[simulate]\nsymbols = 11\n", "$.simulate", "symbols must be 1..10"),
    ("[simulate]\nexchanges = ['kraken']\n", "$.simulate", "unknown: ['kraken']"),
    ("[publisher]\nredis_url = 'http://x'\n", "$.publisher", "http://x"),
    ("[exchanges.okx]\nenabled = true\nring_capacity = 1000\n", "$.exchanges.okx",
     "power of two"),
    ("[detectors]\nenabled = true\ncpu = 4096\n", "$.detectors.cpu", "not available"),
])
def test_check_config_names_file_and_key_and_exits_2(tmp_path: Path, text: str, path: str,
                                                      message: str) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    out = subprocess.run([sys.executable, "-m", "engine", "check-config", "-c", str(bad)],
                         capture_output=True, text=True, timeout=60, cwd=REPO)
    assert out.returncode == 2, out
    assert str(bad) in out.stderr and path in out.stderr and message in out.stderr, out.stderr


def test_check_config_accepts_the_shipped_file() -> None:
    out = subprocess.run([sys.executable, "-m", "engine", "check-config", "--json", "-c",
                          "config.toml"], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["children"] == ["feed:binance", "feed:bybit", "feed:okx", "detectors",
                                   "publisher"]
    assert summary["redis_url"] == "redis://127.0.0.1:6379/0"


def test_status_and_tail_when_not_running(instance: str) -> None:
    st = subprocess.run([sys.executable, "-m", "engine", "status", "--instance", instance],
                        capture_output=True, text=True, timeout=60, cwd=REPO)
    assert st.returncode == 3 and "not running" in st.stdout
    tail = subprocess.run([sys.executable, "-m", "engine", "tail", "binance.trades",
                           "--instance", instance], capture_output=True, text=True,
                          timeout=60, cwd=REPO)
    assert tail.returncode == 3 and "is the engine running" in tail.stderr
    bad = subprocess.run([sys.executable, "-m", "engine", "tail", "trades", "--instance",
                          instance], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert bad.returncode == 2 and "OWNER.STREAM" in bad.stderr


def _okx_only(tmp_path: Path, instance: str, simulate: str, service: str) -> Path:
    """One simulated OKX feed and nothing else, no HTTP."""
    cfg = tmp_path / "config.toml"
    cfg.write_text(f"""[engine]
instance = "{instance}"
[simulate]
exchanges = ["okx"]
symbols = 1
{simulate}
[service]
http_port = -1
{service}
""")
    return cfg


def test_duration_stops_cleanly_and_a_second_signal_forces(tmp_path: Path,
                                                           instance: str) -> None:
    cfg = _okx_only(tmp_path, instance, "rate_hz = 100.0", "stop_timeout_s = 30.0")
    done = subprocess.run([sys.executable, "-m", "engine", "run", "--simulate", "-c", str(cfg),
                           "--duration", "6"], capture_output=True, text=True, timeout=120,
                          cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "feed:okx: running" in done.stderr and "stopped; removed" in done.stderr
    assert shm.list_segments(instance) == []

    engine = Engine(cfg, tmp_path / "run.log")
    try:
        engine.read_banner()
        wait_until("ready", lambda: status(instance)["ready"], _READY_S, engine)
        feed = int(_child(instance, "feed:okx")["pid"])   # type: ignore[call-overload]
        os.kill(feed, signal.SIGSTOP)    # a child that will not stop by itself
        engine.proc.send_signal(signal.SIGINT)
        wait_until("the ordered stop", lambda: "stopping: feeds" in engine.log_tail(), 30,
                   engine)
        started = time.monotonic()
        engine.proc.send_signal(signal.SIGINT)   # the second signal: no more waiting
        code = engine.proc.wait(timeout=60)
        forced_in_s = time.monotonic() - started
    finally:
        engine.stop(signal.SIGKILL)
    assert code == 1, engine.log_tail()
    assert forced_in_s < 5, forced_in_s    # stop_timeout_s is 30: the wait was cut short
    assert "feed:okx: still running" in engine.log_tail()
    assert shm.list_segments(instance) == []


def test_a_child_without_heartbeat_in_time_is_killed(tmp_path: Path, instance: str) -> None:
    cfg = _okx_only(tmp_path, instance, "", "startup_timeout_s = 0.3\n"
                    "restart_backoff_initial_s = 0.05\ncrash_loop_restarts = 1")
    done = subprocess.run([sys.executable, "-m", "engine", "run", "--simulate", "-c", str(cfg)],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 1, done.stderr[-3000:]
    assert "feed:okx: no heartbeat within 0.3 s of start: killed; restarting" in done.stderr
    assert "crash loop: 1 restarts" in done.stderr
    assert shm.list_segments(instance) == []
