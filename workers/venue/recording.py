"""Recorded exchange frames: loading, timestamps and the topic each frame belongs to.

Two formats are read:

* ``NAME.frames.jsonl[.gz]`` with a sidecar of receive times, ``NAME.recv_ns.txt.gz`` (epoch ns) or
  ``NAME.recv_ts.txt`` (epoch seconds, decimal) — the format of ``tests/data/recorded/``;
* the engine's own capture format: gz lines ``"{ts_ns} {raw frame}"``.

Control frames the venue answers itself (subscribe acks, pongs, error events) are dropped: a
replay sends data frames only, each to the connections subscribed to its topic.
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import msgspec

__all__ = ["Recording", "RecordingError", "load_recording", "topic_of"]


class RecordingError(ValueError):
    """A recording file is missing, malformed or does not match its timestamp sidecar."""


class Recording(msgspec.Struct, frozen=True):
    """Data frames of one recording, in receive order, with receive times and topics."""

    path: str
    exchange: str
    frames: list[bytes]      # exact frame bytes as the exchange sent them
    topics: list[str]        # the subscription topic each frame belongs to
    recv_ns: list[int]       # receive time of each frame (epoch ns), for pacing only

    def duration_s(self) -> float:
        """Seconds between the first and the last frame."""
        return (self.recv_ns[-1] - self.recv_ns[0]) / 1e9 if self.frames else 0.0


_BINANCE = re.compile(rb'^\{"stream":"([^"]+)"')
_BYBIT = re.compile(rb'"topic":"([^"]+)"')
_OKX = re.compile(rb'"arg":\{"channel":"([^"]+)","inst(?:Id|Type)":"([^"]+)"')
_OKX_EVENT = re.compile(rb'^\{"event":')


def topic_of(exchange: str, frame: bytes) -> str | None:
    """The topic of a data frame (``None`` for control frames and frames of unknown shape).

    Binance: the combined-stream name (``btcusdt@depth@100ms``); Bybit: ``topic``
    (``orderbook.200.BTCUSDT``); OKX: ``channel:instId`` (``books:BTC-USDT``).
    """
    if exchange == "binance":
        m = _BINANCE.match(frame)
        return m.group(1).decode() if m else None
    if exchange == "bybit":
        m = _BYBIT.search(frame, 0, 200)
        return m.group(1).decode() if m else None
    if exchange == "okx":
        if _OKX_EVENT.match(frame):
            return None
        m = _OKX.search(frame, 0, 200)
        return f"{m.group(1).decode()}:{m.group(2).decode()}" if m else None
    raise RecordingError(f"unknown exchange {exchange!r}; use binance, bybit or okx")


def _open_text(path: Path) -> list[bytes]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        return f.read().splitlines()


def _sidecar(frames_path: Path) -> list[int] | None:
    stem = frames_path.name.split(".frames.jsonl")[0]
    ns = frames_path.with_name(stem + ".recv_ns.txt.gz")
    if ns.exists():
        return [int(line) for line in _open_text(ns)]
    seconds = frames_path.with_name(stem + ".recv_ts.txt")
    if seconds.exists():  # decimal seconds: parse exactly, no float rounding
        out = []
        for line in _open_text(seconds):
            whole, _, frac = line.decode().strip().partition(".")
            out.append(int(whole) * 1_000_000_000 + int((frac + "000000000")[:9]))
        return out
    return None


def load_recording(path: str | Path, exchange: str) -> Recording:
    """Load a recording (either format); RecordingError names the file and line on bad input."""
    path = Path(path)
    if not path.exists():
        raise RecordingError(f"{path}: no such recording")
    lines = _open_text(path)
    if ".frames.jsonl" in path.name:
        stamps = _sidecar(path)
        if stamps is None:
            raise RecordingError(f"{path}: no recv_ns.txt.gz or recv_ts.txt sidecar next to it")
        if len(stamps) != len(lines):
            raise RecordingError(f"{path}: {len(lines)} frames but {len(stamps)} timestamps")
        raw: list[tuple[int, bytes]] = list(zip(stamps, lines, strict=True))
    else:  # capture format: "{ts_ns} {frame}"
        raw = []
        for number, line in enumerate(lines, 1):
            stamp, sep, frame = line.partition(b" ")
            if not sep or not stamp.isdigit():
                raise RecordingError(f"{path}:{number}: expected '<ts_ns> <frame>'")
            raw.append((int(stamp), frame))
    frames, topics, recv = [], [], []
    for ts, frame in raw:
        topic = topic_of(exchange, frame)
        if topic is not None:
            frames.append(frame)
            topics.append(topic)
            recv.append(ts)
    if not frames:
        raise RecordingError(f"{path}: no {exchange} data frames in it")
    return Recording(path=str(path), exchange=exchange, frames=frames, topics=topics,
                     recv_ns=recv)
