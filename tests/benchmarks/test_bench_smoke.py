"""Smoke tests of the benchmarks: they run, print well-formed JSON lines, numbers are sane.

The figures themselves are not asserted (this machine is shared and noisy); only their shape.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import shm

REPO = Path(__file__).resolve().parents[2]


def test_ring_bench_quick_emits_plausible_json_lines() -> None:
    out = subprocess.run([sys.executable, "benchmarks/ring_bench.py", "--quick"], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert all({"bench", "case", "metric", "value", "unit"} <= set(d) for d in lines)
    by = {(d["case"], d["metric"]): d["value"] for d in lines}
    assert by[("commit_single", "throughput")] > 0
    for case in ("handoff_spin", "handoff_spin_into", "handoff_park", "handoff_park_into"):
        assert by[(case, "count")] > 0 and by[(case, "lost")] == 0, case
        assert 0 < by[(case, "p50")] <= by[(case, "p99")] <= by[(case, "max")], case
    assert 0 < by[("wake_floor", "p50")] <= by[("wake_floor", "p99")]
    assert by[("env", "cpus")] >= 1
    assert not [i for i in shm.list_segments("bench")]  # everything it created is gone


def test_venue_bench_quick_counts_every_frame() -> None:
    out = subprocess.run([sys.executable, "benchmarks/venue_bench.py", "--quick"], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    by = {d["metric"]: d for d in map(json.loads, out.stdout.splitlines())}
    assert by["throughput"]["frames"] == 93_953 and by["throughput"]["value"] > 0
    assert by["bandwidth"]["unit"] == "MB/s" and by["venue_cpu"]["value"] > 0


def test_ingest_bench_quick_measures_a_real_worker() -> None:
    out = subprocess.run([sys.executable, "benchmarks/ingest_bench.py", "--quick", "--exchange",
                          "binance", "--case", "trades,recorded"], cwd=REPO, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    lines = [d for d in map(json.loads, out.stdout.splitlines()) if d["case"] != "env"]
    for case in ("binance/trades", "binance/recorded"):   # synthetic, and the real recording
        by = {d["metric"]: d for d in lines if d["case"] == case}
        assert by["throughput"]["value"] > 1000 and by["throughput"]["unit"] == "frames/s"
        p50, p99 = by["frame_to_commit_p50"]["value"], by["frame_to_commit_p99"]["value"]
        assert 0 < p50 <= p99 <= by["frame_to_commit_p999"]["value"], case
        assert by["records"]["value"] > 100, case
    errors = {d["case"]: d["value"] for d in lines if d["metric"] == "sequence_or_decode_errors"}
    assert errors["binance/trades"] == 0   # the recording's loops restart its sequences
    assert not [i for i in shm.list_segments() if i.name.startswith("microstream.bench")]


def test_detector_bench_quick_measures_every_trade() -> None:
    out = subprocess.run([sys.executable, "benchmarks/detector_bench.py", "--quick"], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    by = {(d["case"], d["metric"]): d["value"] for d in map(json.loads, out.stdout.splitlines())}
    assert by[("recording", "throughput")] > 0 and by[("flood", "throughput")] > 0
    # 1.5 s at 2 000 trades/s, the first 0.5 s discarded: about 2 000 events, one per trade
    assert 1_500 <= by[("latency@2000", "events")] <= 2_100
    assert 0 < by[("latency@2000", "commit_to_event_p50")] <= \
        by[("latency@2000", "commit_to_event_p99")]
    assert not [i for i in shm.list_segments() if i.instance.startswith("bench")]


def test_publisher_bench_quick_drains_everything() -> None:
    out = subprocess.run([sys.executable, "benchmarks/publisher_bench.py", "--quick"], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    by = {(d["case"], d["metric"]): d["value"] for d in map(json.loads, out.stdout.splitlines())}
    for case in ("resp_publish", "resp_publish_set", "redis_py_publish"):
        assert by[(case, "throughput")] > 0, case
    assert by[("latency@2000", "messages")] > 0
    assert 0 < by[("latency@2000", "commit_to_reply_p50")] <= \
        by[("latency@2000", "commit_to_reply_p99")]
    assert not [i for i in shm.list_segments() if i.instance.startswith("pb")]


def test_e2e_bench_quick_joins_trades_to_the_redis_subscriber() -> None:
    out = subprocess.run([sys.executable, "-m", "engine", "bench", "e2e", "--quick"], cwd=REPO,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert all({"suite", "case", "metric", "value", "unit"} <= set(d) for d in lines)
    by = {(d["case"], d["metric"]): d["value"] for d in lines}
    env = next(d for d in lines if d["case"] == "env")
    assert env["redis_server"] != "absent" and env["picows"] != "absent"
    assert by[("rate_500", "frames_per_s")] > 0 and by[("rate_500", "trades_joined")] > 0
    for stage in ("frame_to_commit", "commit_to_subscriber", "frame_to_subscriber",
                  "intended_to_subscriber", "commit_to_reply_high", "commit_to_reply_low"):
        p50, p99 = by[("rate_500", f"{stage}_p50")], by[("rate_500", f"{stage}_p99")]
        assert 0 < p50 <= p99 <= by[("rate_500", f"{stage}_max")], stage
    # a trade reaches the subscriber after its own commit, which follows its frame
    assert by[("rate_500", "frame_to_subscriber_p50")] > by[("rate_500", "frame_to_commit_p50")]
    # the intended send time comes before the frame is received
    assert by[("rate_500", "intended_to_subscriber_p50")] > \
        by[("rate_500", "frame_to_subscriber_p50")]
    # the publisher's own samples: HIGH replies in the window (trades, BBO: a trade may share
    # a message with others, so half the trades joined is a floor)
    assert by[("rate_500", "replies_in_window[high]")] >= by[("rate_500", "trades_joined")] / 2
    assert by[("rate_500", "cpu_us_per_message_all")] > 0
    assert by[("jitter", "gaps_per_s")] >= 0
    assert not [i for i in shm.list_segments() if i.instance.startswith("bench")]


def test_e2e_bench_quick_replays_the_real_recordings() -> None:
    """``--market recorded``: the venues replay tests/data/recorded on shared clocks; every
    trade due in the window reaches the subscriber and joins its intended send time."""
    # a breaker this host's stalls cannot open: once open it sheds the trades for a second,
    # most of the window (what is asserted here is the replay and the join)
    out = subprocess.run([sys.executable, "-m", "engine", "bench", "e2e", "--quick",
                          "--market", "recorded", "--set", "publisher.breaker_rtt_p99_ms=200",
                          "--set", "publisher.breaker_queue_age_ms=2000"], cwd=REPO,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    by = {(d["case"], d["metric"]): d["value"]
          for d in (json.loads(line) for line in out.stdout.splitlines())}
    case = "recorded_500"
    assert by[(case, "frames_per_s")] > 0 and by[(case, "trades_joined")] > 0
    assert 0.9 <= by[(case, "trades_delivered")] <= 1.0
    for stage in ("frame_to_subscriber", "intended_to_subscriber"):
        assert 0 < by[(case, f"{stage}_p50")] <= by[(case, f"{stage}_p99")], stage
    assert by[(case, "intended_to_subscriber_p50")] > by[(case, "frame_to_subscriber_p50")]
    assert not [i for i in shm.list_segments() if i.instance.startswith("bench")]


def test_compare_bench_quick_runs_both_pipelines_and_plots(tmp_path: Path) -> None:
    png, out_file = tmp_path / "compare.png", tmp_path / "compare.jsonl"
    out = subprocess.run([sys.executable, "-m", "engine", "bench", "compare", "--quick",
                          "--out", str(out_file), "--plot", str(png)], cwd=REPO,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [json.loads(line) for line in out_file.read_text().splitlines()] == lines
    by = {(d["case"], d["metric"]): d["value"] for d in lines}
    for pipeline in ("engine", "naive"):
        case = f"{pipeline}@300"
        assert by[(case, "trades_joined")] > 0, case
        assert by[(case, "frames_per_s")] > 0 and by[(case, "cpu_us_per_message")] > 0, case
        for stage in ("intended_to_subscriber", "frame_to_subscriber"):
            assert 0 < by[(case, f"{stage}_p50")] <= by[(case, f"{stage}_p99")], (case, stage)
        assert 0 < by[(case, "trades_delivered")] <= 1.0
        # the engine may shed under flood (its breaker); it still ingests
        assert by[(f"{pipeline}@flood", "frames_per_s")] > 0
        assert by[("throughput", f"sustained_frames_per_s[{pipeline}]")] in (0, 300)
    for metric in ("p99_div", "cpu_div"):
        assert by[("ratio@300", metric)] > 0
    assert by[("ratio@flood", "ingest_x")] > 0
    assert by[("naive@flood", "redis_messages_per_s")] > 0
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"
    assert not [i for i in shm.list_segments() if i.instance.startswith("bench")]


def test_report_table_groups_stages_per_case() -> None:
    sys.path.insert(0, str(REPO / "benchmarks"))
    from report import table

    rows = [{"suite": "x", "case": "c", "metric": f"frame_to_commit_{q}", "value": v,
             "unit": "us"} for q, v in (("p50", 1.5), ("p99", 20.0), ("p99_9", 30.0),
                                        ("max", 45.0))]
    rows.append({"suite": "x", "case": "c", "metric": "frames_per_s", "value": 1234,
                 "unit": "1/s"})
    text = table(rows).splitlines()
    stage = next(line for line in text if "frame_to_commit" in line).split()
    assert stage == ["frame_to_commit", "(us)", "1.5", "20", "30", "45"]
    assert any(line.split() == ["frames_per_s", "1,234", "1/s"] for line in text)


def test_emitter_prints_a_table_instead_of_json_on_a_terminal(capsys, tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO / "benchmarks"))
    from report import Emitter

    for tty in (True, False):
        emit = Emitter("x", tty=tty)
        emit("case", "throughput", 5, "1/s")
        emit.finish(str(tmp_path / "out.jsonl"))
        printed = capsys.readouterr().out
        assert (tmp_path / "out.jsonl").read_text().strip() == emit.lines[0]
        assert printed.startswith("{") != tty
        assert ("throughput" in printed) and (("\ncase" in printed) == tty)
