"""Assemble a :class:`Report` from a loaded run: tables, health, SLO checks, baseline deltas."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from report._charts import Chart, render_charts
from report._compare import DEFAULT_TOLERANCE_PCT, Delta, Headline, compare, headlines
from report._health import WorkerHealth, generator_health, warnings
from report._ingest import comparison_view
from report._load import Run
from report._protocols import protocol_rows
from report._tables import (
    LatencyRow,
    PathTables,
    command_rows,
    exception_rows,
    failure_rows,
    latency_row,
    merged_total,
    metadata,
    path_tables,
    request_rows,
)
from telemetry._fault_figures import phase_figures, seconds_of
from telemetry.slo import E2E_TYPE, Check, Figures, RequestFigures, Slo, e2e_figures, evaluate

__all__ = ["Report", "build_report", "fault_rows", "figures_of"]

#: Subscriber rows shown in the report (a fleet run can have thousands).
SUBSCRIBERS_SHOWN = 50


@dataclass(slots=True)
class Report:
    """Everything the templates show."""

    run: Run
    meta: dict[str, Any]
    figures: Figures
    requests: list[RequestFigures]
    e2e_requests: list[RequestFigures]
    aggregated: RequestFigures | None
    paths: list[PathTables]
    all_paths: LatencyRow
    schedule_lag: LatencyRow
    batch_push: list[LatencyRow]
    commands: list[RequestFigures]
    failures: list[dict[str, Any]]
    exceptions: list[dict[str, Any]]
    health: list[WorkerHealth]
    headlines: list[Headline]
    warnings: list[str]
    subscribers: list[dict[str, Any]]
    subscribers_total: int
    checks: list[Check] | None = None
    slo_source: str = ""
    deltas: list[Delta] | None = None
    baseline_id: str = ""
    #: what differs between the two runs' set-ups (scenario, users, workers): deltas then mean less
    baseline_differs: list[str] = field(default_factory=list)
    tolerance_pct: float = DEFAULT_TOLERANCE_PCT
    tolerance_ms: float = 0.0
    charts: dict[str, Chart] = field(default_factory=dict)
    #: ``--faults`` phases, each with its figures (``telemetry._fault_figures``)
    faults: list[dict[str, Any]] = field(default_factory=list)
    #: the HTTP-vs-MQTT ingest comparison (``report._ingest``), when the run was one
    comparison: dict[str, Any] | None = None
    #: MQTT vs AMQP rows (``report._protocols``), empty for other runs
    protocols: list[dict[str, Any]] = field(default_factory=list)
    #: Locust vs redis-benchmark rows (``python -m bench redis``), empty for other runs
    redis_bench: list[dict[str, Any]] = field(default_factory=list)

    @property
    def failed_checks(self) -> list[Check]:
        return [c for c in self.checks or [] if not c.passed]

    @property
    def verdict(self) -> str:
        """``PASS`` / ``FAIL`` against the SLOs, ``NO SLO`` when none were given."""
        if self.checks is None:
            return "NO SLO"
        return "FAIL" if self.failed_checks else "PASS"

    @property
    def regressions(self) -> list[Delta]:
        return [d for d in self.deltas or [] if d.flagged]

    def headline(self, key: str) -> Headline | None:
        return next((h for h in self.headlines if h.key == key), None)


def figures_of(run: Run, requests: list[RequestFigures]) -> Figures:
    """The SLO figures of a run (``telemetry.slo``'s one definition of each)."""
    series = [
        {"epoch_s": r.epoch_s, "path": r.path, "delivered": r.delivered} for r in run.timeseries
    ]
    totals = {path: h for (path, hop), h in run.hist.items() if hop == "total"}
    figures = e2e_figures(run.e2e, series, float(run.run.get("duration_s") or 0), totals)
    figures.requests = requests
    figures.add_faults([f["figures"] for f in fault_rows(run) if f["figures"]])
    return figures


def fault_rows(run: Run) -> list[dict[str, Any]]:
    """Each phase of ``faults.json`` with its ``figures`` (None for one that never ran),
    recomputed from the time series as the run's console table was."""
    if not run.faults:
        return []
    phases = run.faults.get("phases", [])
    final_lost = sum(int(p["totals"].get("lost", 0)) for p in run.e2e["paths"].values())
    figures = phase_figures(phases, seconds_of(run.timeseries), final_lost)
    by_spec = {f["phase"]: f for f in figures}
    return [
        {**p, "figures": by_spec.get(p["spec"]) if p.get("started_epoch_s") else None}
        for p in phases
    ]


def _worker_labels(health: list[WorkerHealth], run: Run) -> dict[str, str]:
    labels = {"local": "local"}
    for w in run.run.get("workers", []):
        labels[str(w.get("index"))] = f"worker {w.get('index')} ({w.get('host', '')})"
    return labels


def _subscribers(run: Run) -> list[dict[str, Any]]:
    rows = []
    for s in run.e2e.get("subscribers", [])[:SUBSCRIBERS_SHOWN]:
        counters = s.get("counters") or {}
        rows.append(
            {
                "id": s.get("id", ""),
                "kind": s.get("kind", ""),
                "mode": s.get("mode", ""),
                "devices": "all" if s.get("devices") is None else len(s.get("devices") or []),
                "delivered": sum(int(c.get("delivered", 0)) for c in counters.values()),
                "duplicated": sum(int(c.get("duplicated", 0)) for c in counters.values()),
                "lost": int(s.get("lost", 0)),
                "closed_early": bool(s.get("closed_ns")),
                "final_state": bool(s.get("final_state", True)),
            }
        )
    return rows


def _setup_differences(now: dict[str, Any], then: dict[str, Any]) -> list[str]:
    out = []
    for key, label in (("scenario", "scenario"), ("user_count", "users"), ("worker_count", "workers"),
                       ("hosts", "hosts")):  # fmt: skip
        if now.get(key) != then.get(key):
            out.append(f"{label}: {then.get(key)} → {now.get(key)}")
    return out


def build_report(
    run: Run,
    *,
    slo: Slo | None = None,
    baseline: Run | None = None,
    tolerance_pct: float = DEFAULT_TOLERANCE_PCT,
    tolerance_ms: float = 0.0,
    charts_dir: Path | None = None,
    charts: bool = True,
) -> Report:
    """Compute every section; render charts into ``charts_dir`` when given."""
    rows, aggregated = request_rows(run.locust)
    paths = path_tables(run)
    figures = figures_of(run, rows)
    health = generator_health(run)
    exceptions = exception_rows(run.locust)
    report = Report(
        run=run,
        meta=metadata(run),
        figures=figures,
        requests=[r for r in rows if r.type != E2E_TYPE],
        e2e_requests=[r for r in rows if r.type == E2E_TYPE],
        aggregated=aggregated,
        paths=paths,
        all_paths=latency_row("all paths", merged_total(run)),
        schedule_lag=latency_row("schedule lag", run.schedule_lag, "tp − t0 of every publish"),
        batch_push=[
            latency_row(k, h, "snapshot sent → received") for k, h in run.batch_push.items()
        ],
        commands=command_rows(rows),
        failures=failure_rows(run.locust),
        exceptions=exceptions,
        health=health,
        headlines=headlines(figures, rows, health),
        warnings=warnings(run, figures, paths, rows, health, exceptions),
        subscribers=_subscribers(run),
        subscribers_total=len(run.e2e.get("subscribers", [])),
        tolerance_pct=tolerance_pct,
        tolerance_ms=tolerance_ms,
        faults=fault_rows(run),
        comparison=comparison_view(run),
        protocols=protocol_rows(run),
        redis_bench=list(run.redis_bench["rows"]) if run.redis_bench else [],
    )
    if slo is not None:
        report.checks = evaluate(slo, figures)
        report.slo_source = slo.source
    if baseline is not None:
        b_rows, _ = request_rows(baseline.locust)
        b_figures = figures_of(baseline, b_rows)
        b_heads = headlines(b_figures, b_rows, generator_health(baseline))
        report.deltas = compare(report.headlines, b_heads, tolerance_pct, tolerance_ms)
        report.baseline_id = baseline.run_id
        report.baseline_differs = _setup_differences(report.meta, metadata(baseline))
    if charts:
        report.charts = render_charts(run, paths, _worker_labels(health, run), charts_dir)
    return report
