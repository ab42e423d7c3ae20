"""``/metrics``: Prometheus text format built from shared memory at scrape time.

Everything comes from the bus, so the numbers are the ones the processes themselves keep:
the supervisor's table (children, restarts, readiness), each feed worker's ``stats`` row,
the detectors' and the publisher's ``stats`` rows, ring headers (records committed,
generation), the ``book`` latest tables (book state per symbol). Stage latency histograms
are built from the records' own in-band stamps: on every scrape the exporter reads each ring
from where the previous scrape stopped (a record overwritten in between is not counted) and
adds ``ts_commit_ns - ts_mono_ns`` (frame received → ring commit) and, for detector events,
``ts_commit_ns - trigger_commit_ns`` (trigger commit → event commit) to cumulative buckets.
The exporter never writes to the bus and never slows a writer.
"""

from __future__ import annotations

import platform
from typing import Any

import numpy as np

import shm
from shm.layout import BookState

from . import __version__
from .status import EngineStatus, read_status

__all__ = ["LATENCY_BUCKETS_S", "MetricsExporter"]

LATENCY_BUCKETS_S = (5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 1e-2, 0.1, 1.0)
_EDGES_NS = np.array([b * 1e9 for b in LATENCY_BUCKETS_S])
_FEED_GAUGES = ("connections", "connections_up", "books", "books_live", "channels_silent")
_PUBLISHER_GAUGES = ("connected", "inflight", "ring_lag")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    """Counters stay exact past 1e6 (``%g`` would round them to six digits)."""
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return repr(float(value))


class _Text:
    """Collects samples by family; :meth:`text` writes each family's ``# HELP``/``# TYPE``
    and all its samples together, as the exposition format requires."""

    def __init__(self) -> None:
        self._families: dict[str, list[str]] = {}

    def add(self, name: str, kind: str, help_text: str, value: float,
            labels: dict[str, str] | None = None, suffix: str = "") -> None:
        lines = self._families.get(name)
        if lines is None:
            lines = self._families[name] = [f"# HELP {name} {help_text}",
                                            f"# TYPE {name} {kind}"]
        label = ",".join(f'{k}="{_escape(str(v))}"' for k, v in (labels or {}).items())
        lines.append(f"{name}{suffix}{{{label}}} {_number(value)}" if label
                     else f"{name}{suffix} {_number(value)}")

    def text(self) -> str:
        return "\n".join(line for lines in self._families.values() for line in lines) + "\n"


class _Histogram:
    """Cumulative bucket counts and sum of one stage on one ring."""

    def __init__(self) -> None:
        self.buckets = np.zeros(len(_EDGES_NS) + 1, np.int64)
        self.sum_ns = 0
        self.count = 0

    def add(self, values_ns: np.ndarray) -> None:
        values_ns = values_ns[values_ns >= 0]   # a record without stamps (zero) is skipped
        if len(values_ns):
            idx = np.searchsorted(_EDGES_NS, values_ns, side="left")
            self.buckets += np.bincount(idx, minlength=len(self.buckets))
            self.sum_ns += int(values_ns.sum())
            self.count += len(values_ns)


class MetricsExporter:
    """Renders ``/metrics`` for one instance; keeps ring readers and histograms between
    scrapes (call :meth:`render` from one thread at a time)."""

    def __init__(self, instance: str) -> None:
        self.instance = instance
        self._readers: dict[tuple[str, str], Any] = {}
        self._hist: dict[tuple[str, str, str], _Histogram] = {}

    def render(self, status: EngineStatus | None = None) -> str:
        """The whole exposition text (``text/plain; version=0.0.4``)."""
        status = status or read_status(self.instance)
        out = _Text()
        out.add("microstream_build_info", "gauge", "Version of microstream and its runtime.", 1,
                {"version": __version__, "python": platform.python_version(),
                 "numpy": np.__version__})
        out.add("microstream_up", "gauge", "1 while a supervisor runs the instance.",
                int(status.running), {"instance": self.instance})
        out.add("microstream_ready", "gauge", "1 when every child is ready (/readyz).",
                int(status.ready))
        for c in status.components:
            lab = {"child": c.name}
            out.add("microstream_child_running", "gauge", "1 while the child is heart-beating.",
                    int(c.state == "running"), lab)
            out.add("microstream_child_ready", "gauge", "1 when the child is ready.",
                    int(c.ready), lab)
            out.add("microstream_child_restarts_total", "counter",
                    "Restarts of the child by the supervisor.", c.restarts, lab)
            out.add("microstream_child_heartbeat_age_seconds", "gauge",
                    "Age of the child's last heartbeat in shared memory.", c.heartbeat_age_s, lab)
            self._child_counters(out, c.name, c.detail)
        segments = shm.list_segments(self.instance)
        for info in segments:
            if info.kind != "ring":
                continue
            lab = {"owner": info.exchange, "stream": info.stream}
            out.add("microstream_ring_records_total", "counter",
                    "Records committed to the ring (its tail).", info.tail, lab)
            out.add("microstream_ring_generation", "gauge",
                    "Writer generation of the ring (bumps on every writer restart).",
                    info.generation, lab)
            self._latency(info.exchange, info.stream)
        for info in segments:
            if info.kind == "latest" and info.stream == "book":
                self._book_states(out, info.exchange, info.name)
        for (stage, owner, stream), h in sorted(self._hist.items()):
            lab = {"stage": stage, "owner": owner, "stream": stream}
            name = "microstream_stage_latency_seconds"
            help_text = ("Stage latency from in-band stamps: frame_to_commit (frame received "
                         "→ ring commit), trigger_to_event (trigger commit → event commit).")
            cum = np.cumsum(h.buckets)
            for edge, n in zip(LATENCY_BUCKETS_S, cum, strict=False):
                out.add(name, "histogram", help_text, int(n), {**lab, "le": f"{edge:g}"},
                        "_bucket")
            out.add(name, "histogram", help_text, h.count, {**lab, "le": "+Inf"}, "_bucket")
            out.add(name, "histogram", help_text, float(h.sum_ns / 1e9), lab, "_sum")
            out.add(name, "histogram", help_text, h.count, lab, "_count")
        return out.text()

    def _child_counters(self, out: _Text, child: str, detail: dict[str, int]) -> None:
        kind, _, exchange = child.partition(":")
        if kind == "feed":
            lab = {"exchange": exchange}
            for key, value in detail.items():
                if key == "pid":
                    continue
                if key in _FEED_GAUGES:
                    out.add(f"microstream_feed_{key}", "gauge", f"Feed worker {key}.", value, lab)
                else:
                    out.add(f"microstream_feed_{key}_total", "counter",
                            f"Feed worker counter {key}.", value, lab)
        elif kind == "detectors":
            self._detector_counters(out)
        elif kind == "publisher":
            self._publisher(out, detail)

    def _detector_counters(self, out: _Text) -> None:
        try:
            table = shm.LatestReader(shm.segment_name(self.instance, "detectors", "stats",
                                                      suffix="latest"))
        except shm.ShmError:
            return
        try:
            row = table.get(0)
        finally:
            table.close()
        if row is None:
            return
        for key in row.dtype.names or ():
            if key in ("seq", "ts_ns"):
                continue
            kind = "gauge" if key == "ring_lag" else "counter"
            name = f"microstream_detectors_{key}" + ("" if kind == "gauge" else "_total")
            out.add(name, kind, f"Detector process {key}.", int(row[key]))

    def _publisher(self, out: _Text, d: dict[str, int]) -> None:
        from workers.publisher.breaker import BreakerState
        from workers.publisher.queues import DROP_REASONS

        for state in BreakerState:
            out.add("microstream_publisher_breaker_state", "gauge",
                    "1 for the breaker's current state.",
                    int(d.get("breaker_state") == int(state)), {"state": state.name})
        out.add("microstream_publisher_rtt_p99_seconds", "gauge",
                "p99 Redis round trip over the breaker's window.",
                float(d.get("rtt_p99_ns", 0) / 1e9))
        out.add("microstream_publisher_oldest_queued_seconds", "gauge",
                "Age of the oldest queued message.", float(d.get("oldest_queued_ns", 0) / 1e9))
        for key in _PUBLISHER_GAUGES:
            out.add(f"microstream_publisher_{key}", "gauge", f"Publisher {key}.", d.get(key, 0))
        for key in ("records", "reconnects", "connect_failures", "resent", "reply_errors",
                    "retries", "discontinuities", "ring_lost"):
            out.add(f"microstream_publisher_{key}_total", "counter", f"Publisher {key}.",
                    d.get(key, 0))
        for state in BreakerState:
            out.add("microstream_publisher_breaker_transitions_total", "counter",
                    "Breaker transitions into each state.",
                    d.get(f"breaker_to_{state.name.lower()}", 0), {"to": state.name})
        for p in ("critical", "high", "medium", "low"):
            lab = {"priority": p.upper()}
            out.add("microstream_publisher_queue_depth", "gauge", "Messages queued per class.",
                    d.get(f"queued_{p}", 0), lab)
            for what in ("enqueued", "sent", "confirmed"):
                out.add(f"microstream_publisher_{what}_total", "counter",
                        f"Messages {what} per class.", d.get(f"{what}_{p}", 0), lab)
            for reason in DROP_REASONS:
                out.add("microstream_publisher_dropped_total", "counter",
                        "Messages dropped, by class and reason.",
                        d.get(f"dropped_{p}_{reason}", 0), {**lab, "reason": reason})

    def _book_states(self, out: _Text, exchange: str, name: str) -> None:
        try:
            table = shm.LatestReader(name)
        except shm.ShmError:
            return
        try:
            names = table.names()
            rows = table.snapshot()
        finally:
            table.close()
        for sid, symbol in sorted(names.items()):
            row = rows.get(sid)
            current = int(row["state"]) if row is not None else int(BookState.NONE)
            for state in BookState:
                out.add("microstream_book_state", "gauge", "1 for each book's current state.",
                        int(current == int(state)),
                        {"exchange": exchange, "symbol": symbol, "state": state.name})

    def _latency(self, owner: str, stream: str) -> None:
        key = (owner, stream)
        reader = self._readers.get(key)
        if reader is None:
            try:
                reader = self._readers[key] = shm.Reader.attach(owner, stream, self.instance)
            except (shm.ShmError, FileNotFoundError):
                return
        stage = "trigger_to_event" if stream == "events" else "frame_to_commit"
        hist = self._hist.setdefault((stage, owner, stream), _Histogram())
        for _ in range(64):   # up to 64 batches per scrape: a busy ring cannot stall it
            try:
                batch = reader.poll()
            except shm.WriterGone:
                return
            if not len(batch):
                return
            start = batch["trigger_commit_ns" if stream == "events" else "ts_mono_ns"]
            valid = start > 0
            hist.add(batch["ts_commit_ns"][valid] - start[valid])

    def close(self) -> None:
        """Close the ring readers."""
        for reader in self._readers.values():
            reader.close()
        self._readers.clear()

