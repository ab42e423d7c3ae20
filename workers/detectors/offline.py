"""Detection over a replayed capture: the live kernels, fed in the feed's commit order.

:func:`detect_lines` takes what ``workers.exchanges.replay.replay`` produced and runs the same
:class:`~.runner.ExchangeDetectors` the detector process runs, one batch per committed chunk
(the feed's commits), with ``seq`` numbered per stream as a ring would number it. The kernels
give the same results whatever the batching (each kernel's tests prove it), so these lines are
what the live process would have emitted for the same records. ``ts_detect_ns`` is 0.

Lines: one ``{"stream": "event", "kind", "priority", "symbol", "side", "ts_exchange_ns",
"trigger_stream", "trigger_seq", <named values>}`` per event, then one
``{"stream": "analytics", "symbol", ...}`` per symbol with the final continuous values.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np

from engine.config import DetectorsConfig
from shm.layout import Priority

from ..exchanges.feed import Feed
from ..exchanges.replay import ReplaySink
from ..exchanges.worker import latest_names
from .events import VALUE_NAMES, EventBuffer, EventKind
from .runner import STREAMS, ExchangeDetectors

__all__ = ["detect_lines"]

_TRIGGER_STREAM = {EventKind.BOOK_STATE: "book", EventKind.BOOK_CROSSED: "book",
                   EventKind.LIQUIDATION: "liquidations",
                   EventKind.LIQUIDATION_CASCADE: "liquidations"}


def _num(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def detect_lines(feed: Feed, sink: ReplaySink,
                 settings: DetectorsConfig | None = None) -> Iterator[dict[str, Any]]:
    """Event lines in detection order, then one analytics line per symbol."""
    names = latest_names(list(feed.symbols.values()))
    det = ExchangeDetectors(feed.name, [names[sid] for sid in sorted(names)],
                            settings or DetectorsConfig(), EventBuffer(1 << 16))
    events = det.events
    seq = dict.fromkeys(STREAMS, 0)
    for stream, chunk in sink.chunks:
        if stream not in seq:
            continue
        batch = chunk.copy()
        batch["seq"] = np.arange(seq[stream], seq[stream] + len(batch))
        seq[stream] += len(batch)
        det.run(stream, batch, 0)
        for e in events.take():
            kind = EventKind(int(e["kind"]))
            line: dict[str, Any] = {
                "stream": "event", "kind": kind.name, "priority": Priority(int(e["priority"])).name,
                "symbol": names.get(int(e["symbol_id"]), ""), "side": int(e["side"]),
                "ts_exchange_ns": int(e["ts_exchange_ns"]),
                "trigger_stream": _TRIGGER_STREAM.get(kind, "trades"),
                "trigger_seq": int(e["trigger_seq"])}
            for name, value in zip(VALUE_NAMES[kind], e["values"].tolist(), strict=False):
                line[name] = _num(value)
            yield line
    if events.dropped:
        raise RuntimeError(f"{events.dropped} events did not fit the buffer")
    det.stats24h.refresh()
    for sid in sorted(names):
        cvd = det.cvd.windows[sid]
        day = det.stats24h.stats[sid]
        yield {"stream": "analytics", "symbol": names[sid],
               "cvd_1m": _num(cvd[0]), "cvd_5m": _num(cvd[1]), "cvd_15m": _num(cvd[2]),
               "cvd_session": _num(det.cvd.session[sid]),
               "trade_count": int(det.cvd.trades[sid]),
               "volume_24h": _num(day[0]), "quote_volume_24h": _num(day[1]),
               "high_24h": _num(day[2]), "low_24h": _num(day[3]), "last": _num(day[4]),
               "change_24h_pct": _num(day[7]),
               "imbalance": _num(det.imbalance.values[sid, 0]),
               "mid": _num(det.imbalance.values[sid, 1]),
               "bid_wall_price": _num(det.heatmap.walls[sid, 0, 3]),
               "bid_wall_qty": _num(det.heatmap.walls[sid, 0, 1]),
               "ask_wall_price": _num(det.heatmap.walls[sid, 1, 3]),
               "ask_wall_qty": _num(det.heatmap.walls[sid, 1, 1]),
               "open_interest": _num(det.open_interest.latest[sid])}
