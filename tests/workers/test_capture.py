"""Raw-frame capture: the rotating gzip writer, and ``run_record`` as a real process against the
local venue whose capture reads back (replay loader, venue loader) and replays offline into
LIVE books and trades."""

from __future__ import annotations

import gzip
import itertools
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from feed_live import stats, stop_worker, wait_for, write_config

from shm.layout import BookState
from workers.exchanges.capture import CaptureWriter, capture_files
from workers.exchanges.replay import load_frames, replay
from workers.venue import start_venue
from workers.venue.recording import load_recording

ROOT = Path(__file__).resolve().parents[2]
SYMBOLS = [{"symbol": "BTCUSDT", "market": "linear"}, {"symbol": "ETHUSDT", "market": "linear"}]


def _lines(path: Path) -> list[tuple[int, bytes]]:
    """Every line of a complete capture file (gzip.decompress fails on a truncated one)."""
    out = []
    for line in gzip.decompress(path.read_bytes()).split(b"\n")[:-1]:
        stamp, _, frame = line.partition(b" ")
        out.append((int(stamp), frame))
    return out


def test_writer_rotates_by_bytes_into_complete_ordered_files(tmp_path: Path) -> None:
    frames = [(1_700_000_000_000_000_000 + i * 1000,
               b'{"i":%d,"pad":"%s"}' % (i, b"x" * (i % 50))) for i in range(300)]
    with CaptureWriter(tmp_path, "okx", rotate_bytes=2000) as w:
        for i, (ns, frame) in enumerate(frames):
            w.write(ns, frame)
            if i == 150:  # mid-file: only the .part exists, no reader sees it
                assert w.current_path is not None and not w.current_path.exists()
                assert w.current_path.with_name(w.current_path.name + ".part").exists()
                assert capture_files(tmp_path) == w.paths
        w.write(frames[-1][0] + 1, b'{"bad":"\nline"}')   # would split a line: skipped
        w.write(frames[-1][0] + 2, b"ping\r")
    assert w.skipped == 2 and w.frames == 300 and w.current_path is None
    files = capture_files(tmp_path, "okx")
    assert files == w.paths and len(files) == w.files >= 10
    assert not list(tmp_path.glob("*.part"))
    assert [int(p.name.split("-")[2].split(".")[0]) for p in files] == list(range(len(files)))
    got: list[tuple[int, bytes]] = []
    longest = max(len(b"%d %b\n" % f) for f in frames)
    for p in files:
        lines = _lines(p)
        size = sum(len(b"%d %b\n" % x) for x in lines)
        assert size < 2000 + longest
        if p != files[-1]:
            assert size >= 2000
        got += lines
        assert load_frames(p) == lines   # the replay loader reads each file alike
    assert got == frames
    assert w.bytes == sum(len(b"%d %b\n" % f) for f in frames)
    # one session's files are members of one stream: their concatenation is a capture too
    joined = tmp_path / "all.gz"
    joined.write_bytes(b"".join(p.read_bytes() for p in files))
    assert load_frames(joined) == frames


def test_writer_rotates_by_age_and_when_idle(tmp_path: Path) -> None:
    w = CaptureWriter(tmp_path, "binance", rotate_s=0.2)
    base, sent = time.time_ns(), []
    for i in range(12):  # one frame every 50 ms of receive time: files of 4 frames
        sent.append((base + i * 50_000_000, b'{"n":%d}' % i))
        w.write(*sent[-1])
    assert len(w.paths) == 2 and w.current_path is not None
    w.tick(base + 550_000_000)
    assert w.current_path is not None   # opened at +400 ms: not 0.2 s old yet
    w.tick(base + 600_000_000)
    assert w.current_path is None and len(w.paths) == 3   # idle too long: closed
    sent.append((time.time_ns(), b'{"n":12}'))
    w.write(*sent[-1])
    time.sleep(0.25)
    w.tick()  # the real clock
    assert w.current_path is None and not list(tmp_path.glob("*.part"))
    assert [len(_lines(p)) for p in w.paths] == [4, 4, 4, 1]
    got = [x for p in capture_files(tmp_path) for x in _lines(p)]
    assert got == sent
    for p in w.paths:  # no file spans more than rotate_s of receive time
        stamps = [ns for ns, _ in _lines(p)]
        assert stamps[-1] - stamps[0] < 0.2e9
    snap = w.save_sidecar("rest_depth_BTCUSDT", b'{"lastUpdateId":1}')  # opens the next file
    opened = w.current_path
    assert opened is not None and snap.name == f"{opened.name}.rest_depth_BTCUSDT.json"
    again = w.save_sidecar("rest_depth_BTCUSDT", b"{}")
    assert again.name.endswith(".1.rest_depth_BTCUSDT.json")
    w.close()
    with pytest.raises(ValueError):
        w.write(time.time_ns(), b"{}")
    assert len(capture_files(tmp_path)) == len(w.paths)


def test_record_process_captures_the_venue_and_replays(tmp_path: Path, instance: str) -> None:
    out = tmp_path / "capture"
    with start_venue("binance", [], synthetic={"symbols": 2, "rate": 2000, "seconds": 60,
                                               "seed": 5}) as venue:
        cfg = write_config(tmp_path / "config.toml", instance, "binance", venue.ws_url,
                           venue.rest_url, SYMBOLS)
        code = ("import logging, sys\n"
                "logging.basicConfig(level=logging.INFO)\n"
                "from engine.config import load_config\n"
                "from workers.exchanges.capture import run_record\n"
                "sys.exit(run_record('binance', load_config(sys.argv[1]), sys.argv[2],"
                " rotate_bytes=300_000))\n")
        log = tmp_path / "record.log"
        proc = subprocess.Popen([sys.executable, "-c", code, str(cfg), str(out)], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=open(log, "wb"))
        try:
            wait_for(lambda: (stats(instance, "binance") or {}).get("books_live") == 2, 20,
                     "both books LIVE in the recording worker")
            wait_for(lambda: len(capture_files(out)) >= 2, 10, "a rotated capture file")
            time.sleep(0.5)
            assert proc.poll() is None, log.read_text()
        finally:
            code_ = stop_worker(proc)
        assert code_ == 0, log.read_text()
    final = stats(instance, "binance")
    assert final is not None
    files = capture_files(out, "binance")
    assert len(files) >= 3 and not list(out.glob("*.part"))
    frames = [x for p in files for x in _lines(p)]
    # every frame the feed counted was captured, in receive order
    assert len(frames) == final["frames"] > 1000
    stamps = [ns for ns, _ in frames]
    assert all(b >= a for a, b in itertools.pairwise(stamps))
    assert abs(stamps[-1] / 1e9 - time.time()) < 30
    trades: dict[str, list[int]] = {}
    for _, frame in frames:
        msg = json.loads(frame)   # the venue's combined-stream frames, byte for byte
        assert set(msg) == {"stream", "data"} and "@" in msg["stream"]
        if msg["data"].get("e") == "trade":
            trades.setdefault(msg["data"]["s"], []).append(msg["data"]["t"])
    assert set(trades) == {"BTCUSDT", "ETHUSDT"}
    for ids in trades.values():  # nothing lost or doubled across rotations
        assert ids == list(range(ids[0], ids[0] + len(ids)))
    snaps = sorted(out.glob("*.rest_depth_*.json"))
    assert {s.name.split("rest_depth_")[1] for s in snaps} == {"BTCUSDT.json", "ETHUSDT.json"}
    assert all(s.name.startswith(files[0].name) for s in snaps)  # next to the first file
    assert all("lastUpdateId" in json.loads(s.read_bytes()) for s in snaps)
    rec = load_recording(files[0], "binance")   # the venue can replay it (its own loader)
    assert rec.frames == [f for _, f in _lines(files[0])]

    # offline replay of the whole session (concatenated members), as `microstream replay`
    joined = tmp_path / "session.capture.gz"
    joined.write_bytes(b"".join(p.read_bytes() for p in files))
    feed, sink = replay("binance", joined, list(snaps))
    assert feed.book_states() == {"linear:BTCUSDT": "LIVE", "linear:ETHUSDT": "LIVE"}
    assert feed.counts[0] == len(frames)
    assert feed.counts[1] == 0 and feed.counts[5] == 0   # no decode errors, no gaps
    assert sink.count("trades") == sum(len(ids) for ids in trades.values())
    books = [r for s, r in sink.records() if s == "book"]
    live = [r for r in books if r["state"] == BookState.LIVE]
    assert len(live) > 100 and all(r["bid_px"][0] < r["ask_px"][0] for r in live)
