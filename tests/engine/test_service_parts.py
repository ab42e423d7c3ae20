"""The supervisor's parts on their own: the notify protocol on real datagram sockets, the
restart policy's arithmetic, and the metrics exporter over real bus segments."""

from __future__ import annotations

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
        row["connections"], row["connections_up"] = 2, 1
        table.update(0, row)
        table.heartbeat()
        p = probe(instance, "feed:binance")
        assert p.pid == os.getpid() and 0 <= p.heartbeat_age_s < 1 and not p.ready
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
        # one HELP and one TYPE per family, even with many samples
        assert text.count("# TYPE microstream_stage_latency_seconds histogram") == 1
        assert "microstream_up{" in text and "microstream_build_info{" in text
    finally:
        exporter.close()
        ring.close(unlink=True)


@pytest.mark.parametrize("port", [-2, 65536])
def test_service_config_rejects_bad_ports(port: int) -> None:
    with pytest.raises(ValueError, match="is not a port"):
        ServiceConfig(http_port=port)
