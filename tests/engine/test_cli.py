"""The ``microstream`` command, run as a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

import shm

REPO = Path(__file__).resolve().parents[2]


def microstream(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "engine", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO)


def test_run_demo_moves_records_between_processes_and_cleans_up(instance: str) -> None:
    out = microstream("shm", "demo", "--instance", instance, "--duration", "2", "--rate", "2000")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("writing synthetic trades")
    final = [line for line in lines if line.startswith("committed=")][-1]
    fields = dict(kv.split("=") for kv in final.split()[:4])
    assert int(fields["committed"]) == int(fields["delivered"]) > 3000
    assert fields["lost"] == "0"
    assert lines[-1].startswith("done:")
    assert shm.list_segments(instance) == []


def test_bad_config_names_file_and_key_and_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[demo]\nring_capacity = 1000\n")
    out = microstream("run", "-c", str(bad))
    assert out.returncode == 2
    assert str(bad) in out.stderr and "$.demo" in out.stderr and "power of two" in out.stderr
    bad.write_text("[demo]\nrate = 5\n")
    out = microstream("run", "-c", str(bad))
    assert out.returncode == 2 and "unknown field `rate`" in out.stderr


def test_shipped_config_is_valid() -> None:
    from engine.config import load_config

    assert load_config(REPO / "config.toml").engine.instance == "demo"


def test_shm_ls_and_gc(instance: str) -> None:
    name = shm.segment_name(instance, "binance", "trades")
    w = shm.Writer(name, shm.TRADE, 8)
    w.commit_batch(np.zeros(3, shm.TRADE))
    listed = json.loads(microstream("shm", "ls", "--json", "--instance", instance).stdout)
    ring = next(i for i in listed if i["name"] == name)
    assert ring["tail"] == 3 and ring["writer_alive"] and ring["writer_pid"] == os.getpid()
    assert json.loads(microstream("shm", "gc", "--json", "--instance", instance).stdout)[
        "removed"] == []
    w.close()
    dry = microstream("shm", "gc", "--dry-run", "--instance", instance)
    assert f"would remove {name}" in dry.stdout
    assert os.path.exists(os.path.join(shm.SHM_DIR, name))
    gone = json.loads(microstream("shm", "gc", "--json", "--instance", instance).stdout)
    assert gone["removed"] == [name, name + ".wake"]
    assert shm.list_segments(instance) == []
    table = microstream("shm", "ls", "--instance", instance)
    assert table.returncode == 0 and "no microstream segments" in table.stdout


DATA = REPO / "tests" / "data" / "recorded"


def test_replay_writes_one_line_per_record(tmp_path: Path) -> None:
    out_file = tmp_path / "okx.jsonl"
    out = microstream("replay", "--exchange", "okx",
                      str(DATA / "okx" / "cryptofeed_books_3inst_20220513.frames.jsonl"),
                      "--out", str(out_file))
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    lines = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert summary["lines"] == len(lines) and set(summary["books"].values()) == {"LIVE"}
    books = [line for line in lines if line["stream"] == "book"]
    assert len(books) == 290 and all(b["checksum_ok"] and b["state"] == "LIVE" for b in books)
    assert {line["symbol"] for line in books} == {"BTC-USDT", "UNI-USD-SWAP", "BTC-USD-220527"}
    first = books[0]
    assert first["bids"][0][0] > first["bids"][1][0] and first["asks"][0][0] < first["asks"][1][0]
    assert any(line["stream"] == "trade" and line["side"] in ("BUY", "SELL") for line in lines)


def test_replay_with_a_named_rest_snapshot(tmp_path: Path) -> None:
    name = "cryptofeed_usdm_4sym_20210722"
    args = ["replay", "--exchange", "binance", str(DATA / "binance" / f"{name}.frames.jsonl"),
            "--out", str(tmp_path / "b.jsonl")]
    for sym in ("AKROUSDT", "SUSHIUSDT"):
        args += ["--rest-snapshot", str(DATA / "binance" / f"{name}.rest_depth_{sym}.json")]
    out = microstream(*args)
    assert out.returncode == 0, out.stderr
    books = json.loads(out.stdout)["books"]
    assert books["linear:AKROUSDT"] == books["linear:SUSHIUSDT"] == "LIVE"
    assert books["linear:CTKUSDT"] == "SYNCING"  # no snapshot given: its events stay buffered


def test_replay_bad_inputs_exit_2(tmp_path: Path) -> None:
    missing = microstream("replay", "--exchange", "okx", str(tmp_path / "nope.jsonl"),
                          "--out", str(tmp_path / "o.jsonl"))
    assert missing.returncode == 2 and "nope.jsonl" in missing.stderr
    empty = tmp_path / "empty.frames.jsonl"
    empty.write_text('{"event":"login","code":"0"}\nnot json\n')
    out = microstream("replay", "--exchange", "okx", str(empty), "--out",
                      str(tmp_path / "o.jsonl"))
    assert out.returncode == 2 and "no okx market data" in out.stderr


def test_exchange_config_errors_name_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    for text, needle in (
            ("[exchanges.binance]\nenabled = true\nsymbols = []\n", "at least one symbol"),
            ("[exchanges.okx]\nring_capacity = 1000\n", "$.exchanges.okx"),
            ("[exchanges.bybit]\nsymbols = [{symbol = 'X', colour = 'red'}]\n", "colour"),
            ("[exchanges.binance]\nenabled = true\ncpu = 999\nsymbols = [{symbol = 'X'}]\n",
             "cpu 999"),
            ("[exchanges.binance]\nenabled = true\nsymbols = [{symbol = 'X', market = 'moon'}]"
             "\n", "moon"),
            ("[exchanges.binance]\nenabled = true\noptions = {depth_interval_ms = 7}\n"
             "symbols = [{symbol = 'X'}]\n", "depth_interval_ms 7")):
        bad.write_text(text)
        exchange = text.split("]")[0].split(".")[1]
        out = microstream("feed", exchange, "-c", str(bad), "--duration", "0.1")
        assert out.returncode == 2, (text, out.stderr)
        assert needle in out.stderr and str(bad) in out.stderr, (text, out.stderr)
        assert shm.list_segments("demo") == []  # a failed start leaves no segments


def test_replay_detect_writes_events_and_analytics(tmp_path: Path) -> None:
    frames = DATA / "binance" / "hftbacktest_usdm_btcusdt_20240808.frames.jsonl.gz"
    cfg = tmp_path / "config.toml"
    cfg.write_text("[detectors]\nwhale_min_usd = 200_000.0\nwhale_burst_usd = 0.0\n")
    out_file = tmp_path / "out.jsonl"
    out = microstream("replay", "--exchange", "binance", str(frames), "--out", str(out_file),
                      "--detect", "-c", str(cfg))
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert json.loads(out.stdout)["lines"] == len(lines)
    trades = [ln for ln in lines if ln["stream"] == "trade"]
    whales = [ln for ln in lines if ln["stream"] == "event" and ln["kind"] == "WHALE_TRADE"]
    # the oracle: every trade of at least 200 000 USD, in order, and nothing else
    big = [t for t in trades if t["price"] * t["qty"] >= 200_000.0]
    assert len(whales) == len(big) > 0
    assert [w["trigger_seq"] for w in whales] == [trades.index(t) for t in big]
    assert all(w["priority"] == "CRITICAL" and w["usd_value"] >= 200_000.0 for w in whales)
    candles = [ln for ln in lines if ln["stream"] == "event" and ln["kind"] == "CANDLE"]
    assert any(c["timeframe_s"] == 1.0 for c in candles)
    (stats,) = [ln for ln in lines if ln["stream"] == "analytics"]
    assert stats["symbol"] == "BTCUSDT" and stats["trade_count"] == len(trades)
    buys = sum(t["qty"] for t in trades if t["side"] == "BUY")
    sells = sum(t["qty"] for t in trades if t["side"] == "SELL")
    assert abs(stats["cvd_session"] - (buys - sells)) < 1e-6
