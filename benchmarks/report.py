"""How every benchmark suite reports: JSON lines, a human table on a TTY, and a plot.

A result is one JSON line ``{"suite", "case", "metric", "value", "unit", ...}`` (``bench`` is
kept as an alias of ``suite`` for older readers). :class:`Emitter` prints them on stdout as
they come (when stdout is not a terminal), keeps them for ``--out FILE``, and at the end
(:meth:`Emitter.finish`) prints a table when stdout is a terminal and draws ``--plot FILE.png``
(matplotlib, the ``bench`` extra). :func:`report_runs` turns several runs of a case into
lines: the median run per metric, with min/max over the runs.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
from collections import defaultdict
from typing import Any

import numpy as np

__all__ = ["CPUS", "QUANTILES", "Emitter", "nan_median", "percentiles", "pin", "plot",
           "report_runs", "table"]

QUANTILES = ("p50", "p99", "p99_9", "max")   # the latency suffixes, in table order
_THROUGHPUT_UNITS = ("1/s", "frames/s", "records/s", "msg/s", "messages/s", "trades/s")


#: the CPUs this benchmark may use, read once at import: a benchmark that pins itself first
#: would otherwise see only its own CPU (and its children would inherit it)
CPUS = sorted(os.sched_getaffinity(0))


def pin(pid: int, index: int) -> None:
    """Pin process ``pid`` (0: this one) to the ``index``-th usable CPU (modulo their
    number); nothing on a one-CPU machine."""
    if len(CPUS) > 1:
        os.sched_setaffinity(pid, {CPUS[index % len(CPUS)]})


def percentiles(lat_ns: np.ndarray) -> dict[str, float]:
    """p50/p99/p99.9/max of nanosecond latencies, in µs (NaN when there are none)."""
    if len(lat_ns) == 0:
        return dict.fromkeys(QUANTILES, float("nan"))
    p50, p99, p999 = np.percentile(lat_ns, [50, 99, 99.9]) / 1000
    return {"p50": p50, "p99": p99, "p99_9": p999, "max": float(np.max(lat_ns)) / 1000}


def _num(x: float) -> float | int | None:
    if x != x:
        return None   # NaN: JSON null (strict JSON has no NaN)
    return int(x) if float(x).is_integer() else round(x, 3)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


class Emitter:
    """The result lines of one suite (see the module docstring)."""

    def __init__(self, suite: str, tty: bool | None = None) -> None:
        self.suite = suite
        self.rows: list[dict[str, Any]] = []
        self.tty = sys.stdout.isatty() if tty is None else tty

    @property
    def lines(self) -> list[str]:
        """Every result so far as a JSON line."""
        return [json.dumps(row) for row in self.rows]

    def __call__(self, case: str, metric: str, value: Any, unit: str, **extra: Any) -> None:
        if isinstance(value, float) and value != value:
            value = None   # NaN: JSON null
        row = {"bench": self.suite, "suite": self.suite, "case": case, "metric": metric,
               "value": value, "unit": unit} | extra
        self.rows.append(row)
        if not self.tty:
            print(json.dumps(row), flush=True)

    def write(self, path: str | None) -> None:
        """Write every line emitted so far to ``path`` (``--out``), if given."""
        if path:
            with open(path, "w") as f:
                f.writelines(line + "\n" for line in self.lines)

    def finish(self, out: str | None = None, plot_path: str | None = None) -> None:
        """The end of a run: ``--out`` file, the table on a terminal, ``--plot`` PNG."""
        self.write(out)
        if self.tty:
            print(table(self.rows), flush=True)
        if plot_path:
            plot(self.rows, plot_path)

    def env(self, **extra: Any) -> None:
        """The environment line: CPU, kernel, Python and package versions, Redis, load."""
        from importlib import metadata

        versions = {}
        for package in ("numpy", "numba", "picows", "msgspec", "uvloop", "redis", "hiredis",
                        "websockets"):
            try:
                versions[package] = metadata.version(package)
            except metadata.PackageNotFoundError:
                versions[package] = "absent"
        try:
            from engine.embedded_redis import find_redis_server

            redis_server = os.popen(f"{find_redis_server()} --version").read().split()
            versions["redis_server"] = next((w[2:] for w in redis_server if w.startswith("v=")),
                                            "unknown")
        except Exception:
            versions["redis_server"] = "absent"
        self("env", "cpus", os.cpu_count(), "count", usable_cpus=len(os.sched_getaffinity(0)),
             cpu_model=_cpu_model(), kernel=platform.release(),
             python=platform.python_version(), loadavg_1m=os.getloadavg()[0],
             **versions, **extra)


def nan_median(values: list[float]) -> float:
    """The median of the values that are numbers (NaN: a run without that measurement);
    NaN if there are none."""
    kept = [float(v) for v in values if v == v]
    return statistics.median(kept) if kept else float("nan")


def report_runs(emit: Emitter, case: str, runs: list[dict[str, tuple[float, str]]],
                **extra: Any) -> None:
    """Per metric of any run: the median over the runs that have it as value, min/max over
    them as extra keys, and how many runs had it."""
    units = {metric: unit for run in runs for metric, (_, unit) in run.items()}
    for metric, unit in units.items():
        values = [float(run[metric][0]) for run in runs if metric in run]
        values = [v for v in values if v == v] or [float("nan")]
        emit(case, metric, _num(nan_median(values)), unit, min=_num(min(values)),
             max=_num(max(values)), runs=len(values), **extra)


def _split(metric: str) -> tuple[str, str | None]:
    """``frame_to_commit_p99`` → (``frame_to_commit``, ``p99``); other metrics → (metric,
    None)."""
    for q in QUANTILES:
        if metric.endswith("_" + q):
            return metric[: -len(q) - 1], q
        if metric == q:
            return "latency", q
    return metric, None


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 100 or value == 0 else f"{value:.3g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(rows: list[dict[str, Any]]) -> str:
    """A plain-text table: per case, one line per latency stage (p50/p99/p99.9/max in µs)
    and one per other metric."""
    lat: dict[str, dict[str, dict[str, Any]]] = defaultdict(lambda: defaultdict(dict))
    other: dict[str, list[tuple[str, Any, str]]] = defaultdict(list)
    for row in rows:
        if row["case"] == "env":
            continue
        stage, q = _split(row["metric"])
        if q is not None and row["unit"] in ("us", "ns"):
            lat[row["case"]][f"{stage} ({row['unit']})"][q] = row["value"]
        else:
            other[row["case"]].append((row["metric"], row["value"], row["unit"]))
    env = next((r for r in rows if r["case"] == "env"), None)
    out = []
    if env:
        out.append(f"{env.get('cpu_model')} × {env['value']}, Linux {env.get('kernel')}, "
                   f"Python {env.get('python')}, Redis {env.get('redis_server', '?')}")
    name_w = max([len(n) for c in lat.values() for n in c]
                 + [len(m) for c in other.values() for m, _, _ in c] + [10])
    for case in dict.fromkeys([r["case"] for r in rows if r["case"] != "env"]):
        out.append(f"\n{case}")
        if lat.get(case):
            out.append(f"  {'stage':<{name_w}} " + "".join(f"{q:>12}" for q in QUANTILES))
            for stage, qs in lat[case].items():
                out.append(f"  {stage:<{name_w}} "
                           + "".join(f"{_fmt(qs.get(q, '')):>12}" for q in QUANTILES))
        for metric, value, unit in other.get(case, []):
            out.append(f"  {metric:<{name_w}} {_fmt(value):>12} {unit}")
    return "\n".join(out)


def plot(rows: list[dict[str, Any]], path: str) -> None:
    """Latency percentiles per stage and case (log scale), and throughput per case, as PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("--plot needs matplotlib: pip install -e '.[bench]'") from None
    lat: dict[str, dict[str, float]] = defaultdict(dict)   # "case: stage" → q → µs
    thr: dict[str, float] = {}
    for row in rows:
        stage, q = _split(row["metric"])
        value = row["value"]
        if not isinstance(value, int | float) or value != value:
            continue
        if q in ("p50", "p99", "p99_9") and row["unit"] == "us":
            lat[f"{row['case']}: {stage}"][q] = value
        elif row["unit"] in _THROUGHPUT_UNITS and row["case"] != "jitter":
            thr[f"{row['case']}: {row['metric']}"] = value
    fig, axes = plt.subplots(2, 1, figsize=(12, 4 + 0.35 * (len(lat) + len(thr))))
    names = list(lat)
    for k, q in enumerate(("p50", "p99", "p99_9")):
        axes[0].barh([i + k * 0.27 for i in range(len(names))],
                     [lat[n].get(q, 0) for n in names], height=0.27, label=q.replace("_", "."))
    axes[0].set_yticks([i + 0.27 for i in range(len(names))], names, fontsize=7)
    axes[0].set_xscale("log")
    axes[0].set_xlabel("latency (µs, log scale)")
    axes[0].legend()
    axes[0].invert_yaxis()
    values = list(thr.values())
    floor = min([v for v in values if v > 0], default=1.0) / 2
    axes[1].barh(list(thr), [max(v, floor) for v in values])   # a 0 has no log-scale bar
    for i, v in enumerate(values):   # so every bar says its value, and a 0 says "0"
        axes[1].text(max(v, floor), i, f" {_fmt(v)}", va="center", fontsize=6)
    axes[1].set_xscale("log")
    axes[1].set_xlabel("per second (log scale)")
    axes[1].tick_params(axis="y", labelsize=7)
    axes[1].invert_yaxis()
    suite = rows[0]["suite"] if rows else "bench"
    fig.suptitle(f"microstream bench {suite}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
