"""The supervisor's parts on their own: the notify protocol on real datagram sockets, the
restart policy's arithmetic, and the metrics exporter over real bus segments."""

from __future__ import annotations

import json
import os
import socket
import time
import uuid

import numpy as np
import pytest

import shm
from engine.children import Child, ChildSpec
from engine.config import Config
from engine.metrics import LATENCY_BUCKETS_S, MetricsExporter
from engine.sdnotify import Notifier
from engine.service_config import ServiceConfig
from engine.status import ChildState, probe
from workers.exchanges.worker import STATS as FEED_STATS


def test_notifier_sends_to_an_abstract_socket() -> None:
    name = f"ms-test-{uuid.uuid4().hex}"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind("\0" + name)
    server.settimeout(2)
    try:
        n = Notifier({"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "4000000",
                      "WATCHDOG_PID": str(os.getpid())})
        assert n.enabled and n.watchdog_s == 4.0
        assert n.ready("all\nfine") and n.watchdog() and n.stopping()
        got = [server.recv(1024).decode() for _ in range(3)]
        assert got == ["READY=1\nSTATUS=all fine", "WATCHDOG=1", "STOPPING=1"]
        n.close()
    finally:
        server.close()


def test_notifier_without_systemd_is_a_no_op() -> None:
    n = Notifier({})
    assert not n.enabled and not n.ready() and n.watchdog_s == 0.0
    # a watchdog meant for another process is not ours
    assert Notifier({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}).watchdog_s == 0.0
    gone = Notifier({"NOTIFY_SOCKET": "/nonexistent/notify.sock"})
    assert not gone.status("x") and gone.failed == 1


def test_restart_backoff_doubles_caps_resets_and_detects_a_crash_loop() -> None:
    service = ServiceConfig(restart_backoff_initial_s=0.5, restart_backoff_max_s=2.0,
                            healthy_after_s=30.0, crash_loop_restarts=4,
                            crash_loop_window_s=60.0)
    child = Child(ChildSpec("detectors", "detectors"), Config(service=service))
    delays = []
    for t in (0.0, 1.0, 2.0):
        child.started_at = t - 0.1
        assert child.died(t, 1, "test")
        delays.append(round(child.restart_at - t, 3))
        assert child.state == ChildState.BACKOFF and not child.restart_due(t)
        assert child.restart_due(child.restart_at)
    assert delays == [0.5, 1.0, 2.0]
    child.started_at = 2.5
    assert child.died(3.0, 1, "test") and child.restart_at - 3.0 == 2.0   # capped
    child.started_at = 4.0 - 31.0          # it ran healthy: the backoff starts over,
    assert not child.died(4.0, 1, "test")  # but this is the 5th death in the window: 4
    assert child.state == ChildState.FAILED   # restarts allowed, a 5th is a crash loop
    other = Child(ChildSpec("publisher", "publisher"), Config(service=service))
    for t in (0.0, 1.0, 2.0):
        other.started_at = t - 0.1
        assert other.died(t, 1, "test")
    other.started_at = 3.0 - 31.0   # up longer than healthy_after_s: the backoff starts over
    assert other.died(3.0, 1, "test") and other.restart_at == 3.5
    late = Child(ChildSpec("detectors", "detectors"), Config(service=service))
    for t in (0.0, 100.0, 200.0, 300.0, 400.0, 500.0):   # spread out: never a loop
        late.started_at = t - 1
        assert late.died(t, 1, "test")


def test_feed_readiness_follows_its_stats_row(instance: str) -> None:
    name = shm.segment_name(instance, "binance", "stats", suffix="latest")
    table = shm.LatestWriter(name, FEED_STATS, 1)
    try:
        row = np.zeros(1, FEED_STATS)[0]
        row["connections"], row["connections_up"] = 2, 2
        row["pid"] = os.getpid() + 1     # a predecessor's row, left in a taken-over table
        table.update(0, row)
        table.heartbeat()
        p = probe(instance, "feed:binance")
        assert p.pid == os.getpid() and 0 <= p.heartbeat_age_s < 1 and not p.ready
        assert p.detail == {}
        row["pid"], row["connections_up"] = os.getpid(), 1
        table.update(0, row)
        assert not probe(instance, "feed:binance").ready
        row["connections_up"] = 2
        table.update(0, row)
        assert probe(instance, "feed:binance").ready
        row["channels_silent"] = 1
        table.update(0, row)
        assert not probe(instance, "feed:binance").ready
    finally:
        table.close(unlink=True)
    assert probe(instance, "feed:binance").heartbeat_age_s == -1


def _samples(text: str, prefix: str) -> list[tuple[str, float]]:
    out = []
    for line in text.splitlines():
        if line.startswith(prefix):
            key, value = line.rsplit(" ", 1)
            out.append((key, float(value)))
    return out


def test_metrics_histogram_counts_every_new_record_once(instance: str) -> None:
    ring = shm.Writer(shm.segment_name(instance, "okx", "trades"), shm.TRADE, 1024)
    exporter = MetricsExporter(instance)
    try:
        exporter.render()  # attaches at the ring's tail: older records are not counted
        recs = np.zeros(100, shm.TRADE)
        now = time.perf_counter_ns()
        recs["ts_mono_ns"] = now
        ring.commit_batch(recs)   # stamps ts_commit_ns at commit: latency = commit - now
        text = exporter.render()
        buckets = _samples(text, 'microstream_stage_latency_seconds_bucket{stage="frame_to_commit"'
                                 ',owner="okx",stream="trades"')
        assert len(buckets) == len(LATENCY_BUCKETS_S) + 1
        values = [v for _, v in buckets]
        assert values == sorted(values) and values[-1] == 100   # cumulative, +Inf = count
        count = _samples(text, 'microstream_stage_latency_seconds_count{stage="frame_to_commit"')
        assert count == [(count[0][0], 100.0)]
        ring.commit_batch(recs[:10])
        again = _samples(exporter.render(), "microstream_stage_latency_seconds_count")
        assert again[0][1] == 110.0
        tail = _samples(text, 'microstream_ring_records_total{owner="okx",stream="trades"}')
        assert tail[0][1] == 100.0
        # one HELP and one TYPE per family, and each family's samples in one block
        assert text.count("# TYPE microstream_stage_latency_seconds histogram") == 1
        families = [line.split()[2] for line in text.splitlines()
                    if line.startswith("# TYPE ")]
        assert len(families) == len(set(families))
        owner = ""
        for line in text.splitlines():
            if line.startswith("# TYPE "):
                owner = line.split()[2]
            elif not line.startswith("#"):
                assert line.split("{")[0].split(" ")[0].startswith(owner), (owner, line)
        assert "microstream_up{" in text and "microstream_build_info{" in text
    finally:
        exporter.close()
        ring.close(unlink=True)


def test_metrics_counters_stay_exact_past_a_million(instance: str) -> None:
    from engine.status import Component, EngineStatus

    detail = {"frames": 123_456_789, "connections": 2}
    st = EngineStatus(instance, True, 1, True, 0,
                      [Component("feed:bybit", "running", 1, 0, 0, True, 0.5, detail)])
    text = MetricsExporter(instance).render(st)
    assert 'microstream_feed_frames_total{exchange="bybit"} 123456789\n' in text
    assert 'microstream_feed_connections{exchange="bybit"} 2\n' in text
    assert 'microstream_child_heartbeat_age_seconds{child="feed:bybit"} 0.5\n' in text


@pytest.mark.parametrize("port", [-2, 65536])
def test_service_config_rejects_bad_ports(port: int) -> None:
    with pytest.raises(ValueError, match="is not a port"):
        ServiceConfig(http_port=port)


def test_tail_prints_the_last_records_of_a_symbol_and_stops(instance: str) -> None:
    import io

    from engine.tail import tail

    ring = shm.Writer(shm.segment_name(instance, "okx", "trades"), shm.TRADE, 1024)
    names = shm.LatestWriter(shm.segment_name(instance, "okx", "bbo", suffix="latest"),
                             shm.BBO, 2)
    try:
        names.register(0, "BTC-USDT-SWAP")
        names.register(1, "ETH-USDT-SWAP")
        recs = np.zeros(10, shm.TRADE)
        recs["symbol_id"], recs["price"], recs["side"] = np.arange(10) % 2, np.arange(10), 1
        ring.commit_batch(recs)
        out = io.StringIO()
        assert tail(instance, "okx.trades", symbol="ETH-USDT-SWAP", last=3, out=out) == 3
        lines = [json.loads(x) for x in out.getvalue().splitlines()]
        assert [x["price"] for x in lines] == [5.0, 7.0, 9.0]
        assert {x["exchange"] for x in lines} == {"okx"} and lines[0]["side"] == "BUY"
        out = io.StringIO()
        assert tail(instance, "okx.trades", last=4, out=out) == 4
        assert [x.split('"seq":')[1].split(",")[0] for x in out.getvalue().splitlines()] == [
            "6", "7", "8", "9"]
    finally:
        ring.close(unlink=True)
        names.close(unlink=True)
