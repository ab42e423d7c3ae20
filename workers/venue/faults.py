"""Fault injection: what can go wrong on an exchange connection, on purpose and reproducibly.

A spec is a comma-separated list of ``kind=probability`` (per data frame of the connection),
``kind@N`` (exactly at the connection's N-th data frame, 0-based) and ``seed=S``; stalls and
refusals take a duration: ``stall=0.001:2s``, ``stall@100:0.5s``, ``refuse:1.5s``. Kinds:

========================  =======================================================================
``drop``                  skip a book frame (depth/orderbook/books): a sequence gap
``duplicate``             send a frame twice
``reorder``               send a frame after the next one
``corrupt``               overwrite bytes in the middle of the frame (invalid JSON)
``truncate``              send only the first half of the frame
``error``                 send the exchange's error frame in place of the frame
``stall``                 stop sending for the duration, connection left open
``close``                 close normally (close frame 1000) before the frame
``abort``                 drop the TCP connection without a close frame
``refuse``                refuse new connections (HTTP 503) for the duration after start
``rest_429``/``rest_418`` answer a REST request with 429 / 418 and ``Retry-After``
========================  =======================================================================

Every injected fault is logged as one JSON line on the ``microstream.venue.faults`` logger and kept
in :attr:`FaultPlan.injected`, so tests can assert what the engine saw.
"""

from __future__ import annotations

import json
import logging
import random
import re

import msgspec

__all__ = ["FaultPlan", "FaultSpec", "FaultSpecError", "is_book_topic", "parse_faults"]

log = logging.getLogger("microstream.venue.faults")

FRAME_KINDS = ("drop", "duplicate", "reorder", "corrupt", "truncate", "error", "stall", "close",
               "abort")
_ITEM = re.compile(r"^(?P<kind>[a-z_0-9]+)(?:(?P<op>[=@])(?P<value>[0-9.e-]+))?"
                   r"(?::(?P<duration>[0-9.]+)s)?$")


class FaultSpecError(ValueError):
    """A ``--faults`` spec that cannot be parsed; the message names the item."""


class FaultSpec(msgspec.Struct, frozen=True):
    """Parsed spec: per-frame probabilities, fixed frame positions, durations, REST odds."""

    probability: dict[str, float] = {}
    at_frame: dict[int, str] = {}
    stall_s: float = 1.0
    refuse_s: float = 0.0
    rest_429: float = 0.0
    rest_418: float = 0.0
    seed: int = 0

    @property
    def active(self) -> bool:
        """True if any frame fault can happen (the replay loop skips all checks otherwise)."""
        return bool(self.probability or self.at_frame)


def parse_faults(text: str) -> FaultSpec:
    """Parse a spec such as ``"drop=0.01,corrupt@120,stall=0.001:2s,refuse:1s,seed=7"``."""
    probability: dict[str, float] = {}
    at_frame: dict[int, str] = {}
    fields: dict[str, float | int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        m = _ITEM.match(item)
        if not m:
            raise FaultSpecError(f"fault spec item {item!r}: expected kind=p, kind@N or kind:Ds")
        kind, op, value, duration = m["kind"], m["op"], m["value"], m["duration"]
        if kind == "seed" and op == "=":
            fields["seed"] = int(float(value))
        elif kind == "refuse" and duration and not op:
            fields["refuse_s"] = float(duration)
        elif kind in ("rest_429", "rest_418") and op == "=":
            fields[kind] = _probability(item, value)
        elif kind in FRAME_KINDS and op == "=":
            probability[kind] = _probability(item, value)
        elif kind in FRAME_KINDS and op == "@":
            at_frame[int(value)] = kind
        else:
            raise FaultSpecError(f"fault spec item {item!r}: unknown kind or form")
        if kind == "stall" and duration:
            fields["stall_s"] = float(duration)
    return FaultSpec(probability=probability, at_frame=at_frame, **fields)  # type: ignore[arg-type]


def _probability(item: str, value: str) -> float:
    p = float(value)
    if not 0.0 <= p <= 1.0:
        raise FaultSpecError(f"fault spec item {item!r}: probability must be in 0..1")
    return p


def is_book_topic(topic: str) -> bool:
    """Order-book topics of the three exchanges (the ones a dropped frame turns into a gap)."""
    return "@depth" in topic or topic.startswith(("orderbook.", "books", "bbo-tbt"))


class FaultPlan:
    """The faults of one connection: a seeded random stream plus the fixed positions."""

    def __init__(self, spec: FaultSpec, connection: str, seed_offset: int) -> None:
        self.spec = spec
        self.connection = connection
        self._random = random.Random(spec.seed * 1_000_003 + seed_offset)
        self._kinds = sorted(spec.probability.items())
        self.injected: list[dict[str, object]] = []

    def decide(self, index: int, topic: str) -> str | None:
        """The fault to inject before data frame ``index`` of this connection, if any."""
        kind = self.spec.at_frame.get(index)
        if kind is None:
            for name, p in self._kinds:
                if self._random.random() < p:
                    kind = name
                    break
        if kind is None or (kind == "drop" and not is_book_topic(topic)):
            return None
        self.record(kind, index=index, topic=topic)
        return kind

    def draw(self) -> float:
        """One number from this plan's seeded stream (for faults outside the frame loop)."""
        return self._random.random()

    def record(self, kind: str, **details: object) -> None:
        """Keep and log one injected fault."""
        event = {"fault": kind, "connection": self.connection, **details}
        self.injected.append(event)
        log.warning("%s", json.dumps(event))
