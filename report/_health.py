"""Generator health (CPU per worker, loop lag) and the warnings that say when to distrust a figure.

A load generator that ran hot takes late timestamps: every latency it measured
is inflated, and its publishers fall behind their schedule. The report says so
next to the figures instead of leaving the reader to guess.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from report._clocks import clock_warnings
from report._load import Run
from report._tables import PathTables
from telemetry.slo import Figures, RequestFigures, format_value

__all__ = [
    "HOT_CPU_PERCENT",
    "HOT_LOOP_LAG_P99_MS",
    "SCHEDULE_LAG_P99_MS",
    "WorkerHealth",
    "generator_health",
    "warnings",
]

#: A worker above this CPU (percent of one core) is saturated: its greenlets wait for the CPU.
HOT_CPU_PERCENT = 90.0
#: Loop lag p99 above this: 1 % of the worker's wake-ups were this late, and so were its timestamps.
HOT_LOOP_LAG_P99_MS = 10.0
#: Schedule lag p99 above this: publishers fell behind their timetable (less load than planned).
SCHEDULE_LAG_P99_MS = 50.0


@dataclass(slots=True)
class WorkerHealth:
    """One load-generating process: CPU from ``timeseries.csv``, loop lag from ``e2e.json``."""

    label: str
    host: str
    cpu_mean: float | None = None
    cpu_p95: float | None = None
    cpu_max: float | None = None
    hot_seconds: int = 0
    samples: int = 0
    lag_p50_ms: float | None = None
    lag_p99_ms: float | None = None
    lag_max_ms: float | None = None

    @property
    def hot(self) -> bool:
        return self.hot_seconds > 0 or (self.lag_p99_ms or 0) > HOT_LOOP_LAG_P99_MS


def _worker_names(run: Run) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """Worker index -> label, worker id -> index, index -> host."""
    workers = run.run.get("workers", [])
    by_index = {str(w.get("index")): f"worker {w.get('index')}" for w in workers}
    id_to_index = {str(w.get("id")): str(w.get("index")) for w in workers}
    hosts = {str(w.get("index")): str(w.get("host", "")) for w in workers}
    master = str(run.run.get("master", {}).get("hostname", ""))
    by_index.setdefault("local", "local")
    hosts.setdefault("local", master)
    hosts.setdefault("master", master)
    return by_index, id_to_index, hosts


def generator_health(run: Run) -> list[WorkerHealth]:
    labels, id_to_index, hosts = _worker_names(run)
    cpu: dict[str, list[float]] = {}
    seen: set[int] = set()
    for row in run.timeseries:
        if row.epoch_s in seen:  # one sample per second, whatever the number of paths
            continue
        seen.add(row.epoch_s)
        for key, value in row.cpu_by_worker.items():
            cpu.setdefault(key, []).append(value)
    out: dict[str, WorkerHealth] = {}
    for key, values in cpu.items():
        ordered = sorted(values)
        out[key] = WorkerHealth(
            label=labels.get(key, f"worker {key}"),
            host=hosts.get(key, ""),
            cpu_mean=sum(values) / len(values),
            cpu_p95=ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
            cpu_max=ordered[-1],
            hot_seconds=sum(1 for v in values if v > HOT_CPU_PERCENT),
            samples=len(values),
        )
    for source, h in run.loop_lag.items():
        key = id_to_index.get(source, source)
        health = out.get(key)
        if health is None:
            health = out[key] = WorkerHealth(
                label=labels.get(key, source if key == source else f"worker {key}"),
                host=hosts.get(key, source.rsplit("_", 1)[0]),
            )
        if h.count:
            pct = h.percentiles([50.0, 99.0])
            health.lag_p50_ms = pct[50.0] / 1000
            health.lag_p99_ms = pct[99.0] / 1000
            health.lag_max_ms = h.hdr.get_max_value() / 1000

    def order(item: tuple[str, WorkerHealth]) -> tuple[int, int, str]:
        key = item[0]
        return (key == "master", int(key) if key.isdigit() else -1, key)

    return [h for _, h in sorted(out.items(), key=order)]


def warnings(
    run: Run,
    figures: Figures,
    paths: list[PathTables],
    requests: list[RequestFigures],
    health: list[WorkerHealth],
    exceptions: list[dict[str, Any]],
) -> list[str]:
    """Plain sentences, most important first: what makes a figure of this run doubtful."""
    out: list[str] = []
    for w in health:
        if w.hot_seconds:
            out.append(
                f"{w.label} ({w.host}) ran above {HOT_CPU_PERCENT:.0f} % CPU for {w.hot_seconds} of "
                f"{w.samples} s (max {w.cpu_max:.0f} %): the latencies it measured are inflated and "
                "its publishers may have fallen behind — add workers."
            )
        if w.lag_p99_ms is not None and w.lag_p99_ms > HOT_LOOP_LAG_P99_MS:
            out.append(
                f"{w.label} ({w.host}) event-loop lag p99 was {w.lag_p99_ms:.1f} ms "
                f"(> {HOT_LOOP_LAG_P99_MS:.0f} ms): timestamps taken in that process were late "
                "by as much; distrust latencies of that order."
            )
    if not run.e2e.get("complete", True):
        out.append(
            "Loss figures are incomplete: a worker's final state never reached the master "
            "(it died or timed out)."
        )
    out += clock_warnings(run)  # lost workers, cross-host timing, clock offsets
    sched = figures.schedule_lag_p99_ms
    if sched is not None and sched > SCHEDULE_LAG_P99_MS:
        out.append(
            f"Schedule lag p99 was {sched:,.1f} ms: publishers fell behind their timetable, so "
            "the offered load was lower than planned (the lag is included in end-to-end latency)."
        )
    for p in paths:
        lost = p.totals.get("lost", 0)
        if lost:
            est = p.totals.get("lost_estimated", 0)
            out.append(
                f"{p.path}: {lost:,} of {p.totals.get('expected', 0):,} messages lost "
                f"({format_value(p.loss_ratio, 'ratio')})"
                + (f", {est:,} of them estimated" if est else "")
                + "."
            )
        regressions = p.snapshot.get("regressions", 0)
        if regressions:
            out.append(f"{p.path}: {regressions:,} snapshot values went back to an older seq.")
        neg = sum(h.negative for h in p.hops)
        if neg:
            out.append(
                f"{p.path}: {neg:,} negative latency samples were recorded as 0 "
                "(clocks of two hosts disagree)."
            )
        clamped = sum(h.clamped_high for h in p.hops)
        if clamped:
            out.append(f"{p.path}: {clamped:,} latency samples above 1 h were recorded as 1 h.")
    failures = sum(r.failures for r in requests if r.type != "E2E")
    if failures:
        out.append(
            f"{failures:,} Locust requests failed ({format_value(figures.failure_ratio, 'ratio')})."
        )
    if exceptions:
        out.append(
            f"{sum(e['count'] for e in exceptions):,} exceptions in user code (see Failures)."
        )
    ignored = run.e2e.get("ignored", {})
    if ignored.get("foreign_run"):
        out.append(
            f"{ignored['foreign_run']:,} messages of another run were received and ignored "
            "(a previous run's publishers still running, or retained messages)."
        )
    if ignored.get("untraced"):
        out.append(f"{ignored['untraced']:,} frames without a valid trace were ignored.")
    if not run.e2e["paths"] and run.e2e.get("published", {}).get("messages"):
        out.append("Messages were published but no subscriber received any: no end-to-end figures.")
    if run.locust is None:
        out.append(
            "Locust's --csv files were not found in the folder (run Locust with "
            "--csv <results dir>/locust): the request table is empty."
        )
    return out
