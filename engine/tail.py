"""``microstream tail OWNER.STREAM``: a live local consumer printing records as JSON lines.

It is also the smallest complete example of a local consumer: attach a read-only
:class:`shm.Reader` to a ring, resolve symbol ids through the owner's latest tables, poll.
"""

from __future__ import annotations

import math
import sys
import time
from collections import deque
from collections.abc import Iterator
from typing import Any, TextIO

import msgspec
import numpy as np

import shm
from shm.layout import BookState, Exchange, Priority

__all__ = ["TailError", "record_lines", "symbol_table", "tail"]

_TABLES = ("bbo", "book", "analytics", "funding", "open_interest")   # where names are
_SIDES = {1: "BUY", -1: "SELL", 0: ""}
_ARRAYS = ("bid_px", "bid_qty", "ask_px", "ask_qty")


class TailError(ValueError):
    """The stream or symbol asked for does not exist (exit code 2 or 3)."""


def symbol_table(instance: str, exchange: str) -> dict[int, str]:
    """Symbol id → exchange-native name, from the first latest table of ``exchange`` found."""
    for stream in _TABLES:
        try:
            table = shm.LatestReader(shm.segment_name(instance, exchange, stream,
                                                      suffix="latest"))
        except shm.ShmError:
            continue
        try:
            names = table.names()
        finally:
            table.close()
        if names:
            return names
    return {}


def _value(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else value


def record_lines(stream: str, records: np.ndarray, names: dict[str, dict[int, str]],
                 owner: str) -> Iterator[dict[str, Any]]:
    """One JSON-ready dict per record: every field, ``symbol`` by name, enums by name,
    books trimmed to their levels, event values named."""
    from workers.detectors.events import VALUE_NAMES, EventKind

    fields = [f for f in records.dtype.names or () if f not in _ARRAYS and f != "values"]
    exchanges = {int(e): e.name.lower() for e in Exchange}
    for rec, values in zip(records, records[fields].tolist(), strict=True):
        line: dict[str, Any] = {"stream": stream, "exchange": "", "symbol": ""}
        row = dict(zip(fields, values, strict=True))
        exchange = owner if owner != "detectors" else exchanges.get(row.get("exchange", 0), "")
        for key, value in row.items():
            line[key] = _value(value)
        line["exchange"] = exchange   # by name (the record holds shm.Exchange's number)
        line["symbol"] = names.get(exchange, {}).get(row["symbol_id"], "")
        if "side" in line and stream != "depth":
            line["side"] = _SIDES.get(line["side"], line["side"])
        if "state" in line:
            line["state"] = BookState(line["state"]).name
        if stream == "book":
            nb, na = int(rec["n_bids"]), int(rec["n_asks"])
            line["bids"] = np.stack([rec["bid_px"][:nb], rec["bid_qty"][:nb]], 1).tolist()
            line["asks"] = np.stack([rec["ask_px"][:na], rec["ask_qty"][:na]], 1).tolist()
        if stream == "events":
            kind = EventKind(int(rec["kind"]))
            line["kind"] = kind.name
            line["priority"] = Priority(int(rec["priority"])).name
            for name, value in zip(VALUE_NAMES[kind], rec["values"].tolist(), strict=False):
                line[name] = _value(value)
        yield line


def tail(instance: str, target: str, symbol: str | None = None, follow: bool = False,
         last: int = 10, out: TextIO = sys.stdout, duration_s: float | None = None) -> int:
    """Print the last ``last`` records of ``target`` (``OWNER.STREAM``, e.g.
    ``binance.trades`` or ``detectors.events``) and, with ``follow``, every new one until
    interrupted. Returns the number of lines printed."""
    owner, _, stream = target.partition(".")
    if not stream:
        raise TailError(f"stream {target!r}: use OWNER.STREAM, e.g. binance.trades, "
                        "okx.book or detectors.events")
    try:
        reader = shm.Reader.attach(owner, stream, instance, start="latest")
    except (shm.ShmError, FileNotFoundError):
        rings = sorted(f"{i.exchange}.{i.stream}" for i in shm.list_segments(instance)
                       if i.kind == "ring")
        raise TailError(f"no ring {target!r} in instance {instance!r} (rings: "
                        f"{', '.join(rings) or 'none: is the engine running?'})") from None
    try:
        tail_seq = reader.stats.tail
        capacity = reader.capacity
        reader.close()
        # history: the last `last` records, or with --symbol the last `last` of that symbol
        # among everything still in the ring; records committed after this moment are new
        back = capacity if symbol is not None else last
        reader = shm.Reader.attach(owner, stream, instance, start=max(0, tail_seq - back),
                                   wait="park")
        exchanges = [owner] if owner != "detectors" else [e.name.lower() for e in Exchange
                                                           if e.value]
        names = {ex: symbol_table(instance, ex) for ex in exchanges}
        wanted: set[tuple[str, int]] | None = None
        if symbol is not None:
            wanted = {(ex, sid) for ex, table in names.items()
                      for sid, name in table.items() if name == symbol}
            if not wanted:
                known = sorted({n for table in names.values() for n in table.values()})
                raise TailError(f"unknown symbol {symbol!r} for {target} (known: "
                                f"{', '.join(known) or 'none'})")
        enc = msgspec.json.Encoder()
        history: deque[bytes] = deque(maxlen=max(0, last))
        printed = 0
        end = time.monotonic() + duration_s if duration_s is not None else float("inf")
        in_history = True
        while True:
            try:
                batch = reader.poll(timeout_s=0.0 if in_history or not follow else 0.5)
            except shm.WriterGone:   # stopped: print the history; -f waits for a successor
                batch = np.empty(0, reader.dtype)
                if follow and not in_history:
                    time.sleep(0.5)
            for line in record_lines(stream, batch, names, owner):
                if wanted is not None and (line["exchange"], line["symbol_id"]) not in wanted:
                    continue
                if in_history and line["seq"] < tail_seq:
                    history.append(enc.encode(line))
                elif follow:
                    out.write(enc.encode(line).decode() + "\n")
                    printed += 1
            if in_history and (not len(batch) or int(batch["seq"][-1]) >= tail_seq - 1):
                in_history = False
                for raw in history:
                    out.write(raw.decode() + "\n")
                printed += len(history)
                history.clear()
                if not follow:
                    break
            out.flush()
            if time.monotonic() >= end:
                break
        return printed
    finally:
        reader.close()
