"""The figures an SLO is checked against: from ``e2e.json`` + ``timeseries.csv`` rows and Locust's stats.

``analyze.py`` (``report/``) builds them from the results files; the Locust hook
(``telemetry.slo``) from the plugin's in-memory results and ``environment.stats``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from telemetry._slo_file import PERCENTILES
from telemetry.hdr import Histogram

if TYPE_CHECKING:
    from locust.stats import RequestStats

__all__ = [
    "E2E_TYPE",
    "Figures",
    "PathFigures",
    "RequestFigures",
    "e2e_figures",
    "latency_ms",
    "request_figures",
]

#: Locust request type of the telemetry's end-to-end entries (``telemetry.plugin``).
E2E_TYPE = "E2E"


@dataclass(slots=True)
class RequestFigures:
    """One row of Locust's request statistics (times in ms; None = no response times)."""

    type: str
    name: str
    requests: int
    failures: int
    p50_ms: float | None = None
    p90_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    rps: float = 0.0

    @property
    def failure_ratio(self) -> float | None:
        return self.failures / self.requests if self.requests else None


@dataclass(slots=True)
class PathFigures:
    """One end-to-end path: exact ``total`` latency (ms by :data:`PERCENTILES` key) and ledger."""

    latency_ms: dict[str, float] = field(default_factory=dict)
    delivered: int = 0
    expected: int = 0
    lost: int = 0
    active_s: float = 0.0

    @property
    def loss_ratio(self) -> float | None:
        return self.lost / self.expected if self.expected else None

    @property
    def delivered_per_s(self) -> float | None:
        return self.delivered / self.active_s if self.active_s > 0 else None


@dataclass(slots=True)
class Figures:
    """Everything an objective can be checked against."""

    e2e_ms: dict[str, float] = field(default_factory=dict)
    paths: dict[str, PathFigures] = field(default_factory=dict)
    requests: list[RequestFigures] = field(default_factory=list)
    loss_complete: bool = True
    active_s: float = 0.0
    schedule_lag_p99_ms: float | None = None
    loop_lag_p99_ms: float | None = None
    #: why e2e figures are absent, when they are (shown with failed checks)
    e2e_note: str = ""
    #: ``--faults``: most messages lost in one phase, longest recovery (inf: one never
    #: recovered within its window); None when the run had no faults
    fault_loss: float | None = None
    recovery_s: float | None = None

    def add_faults(self, figures: list[dict[str, Any]]) -> None:
        """Take the fault figures of ``faults.json`` (``telemetry._fault_figures``)."""
        if not figures:
            return
        self.fault_loss = float(max(int(f.get("lost") or 0) for f in figures))
        recoveries = [f.get("recovery_s") for f in figures]
        self.recovery_s = max(float("inf") if r is None else float(r) for r in recoveries)

    @property
    def delivered(self) -> int:
        return sum(p.delivered for p in self.paths.values())

    @property
    def expected(self) -> int:
        return sum(p.expected for p in self.paths.values())

    @property
    def lost(self) -> int:
        return sum(p.lost for p in self.paths.values())

    @property
    def loss_ratio(self) -> float | None:
        return self.lost / self.expected if self.expected else None

    @property
    def delivered_per_s(self) -> float | None:
        return self.delivered / self.active_s if self.active_s > 0 and self.paths else None

    @property
    def failure_ratio(self) -> float | None:
        rows = [r for r in self.requests if r.type != E2E_TYPE]
        total = sum(r.requests for r in rows)
        return sum(r.failures for r in rows) / total if total else None

    def figure(self, name: str) -> float | None:
        if name in PERCENTILES:
            return self.e2e_ms.get(name)
        return getattr(self, name)  # type: ignore[no-any-return]


def latency_ms(h: Histogram) -> dict[str, float]:
    """Exact percentiles of ``h`` in ms by :data:`PERCENTILES` key; empty when ``h`` is."""
    if not h.count:
        return {}
    pct = h.percentiles([p for p in PERCENTILES.values() if p < 100])
    out = {k: pct[p] / 1000 for k, p in PERCENTILES.items() if p < 100}
    out["max_ms"] = h.hdr.get_max_value() / 1000
    return out


def _active_seconds(rows: Iterable[Mapping[str, Any]]) -> tuple[float, dict[str, float]]:
    """Seconds from the first to the last with deliveries (inclusive): overall and per path."""
    spans: dict[str, list[int]] = {}
    for row in rows:
        if not row.get("path") or not int(row.get("delivered") or 0):
            continue
        sec = int(row["epoch_s"])
        for key in ("", row["path"]):
            span = spans.setdefault(key, [sec, sec])
            span[0], span[1] = min(span[0], sec), max(span[1], sec)
    width = {k: float(hi - lo + 1) for k, (lo, hi) in spans.items()}
    return width.pop("", 0.0), width


def e2e_figures(
    e2e: Mapping[str, Any],
    timeseries: Iterable[Mapping[str, Any]] = (),
    duration_s: float = 0.0,
    histograms: Mapping[str, Histogram] | None = None,
) -> Figures:
    """Figures of ``e2e.json`` (and ``timeseries.csv`` rows, for the per-second rates).

    ``histograms`` may pass the already decoded ``total`` histogram of each path
    (a caller that decoded them for other reasons); otherwise they are decoded here.
    Rates divide by the seconds in which messages arrived (``timeseries.csv``),
    else by ``duration_s``.
    """
    active, per_path = _active_seconds(timeseries)
    figures = Figures(loss_complete=bool(e2e.get("complete", True)), active_s=active or duration_s)
    merged = Histogram()
    for path, entry in e2e.get("paths", {}).items():
        hist = (histograms or {}).get(path)
        if hist is None:
            total = entry.get("latency", {}).get("total")
            hist = Histogram.from_wire(total) if total else Histogram()
        merged.add(hist)
        totals = entry.get("totals", {})
        figures.paths[path] = PathFigures(
            latency_ms=latency_ms(hist),
            delivered=int(totals.get("delivered", 0)),
            expected=int(totals.get("expected", 0)),
            lost=int(totals.get("lost", 0)),
            active_s=per_path.get(path, 0.0) or figures.active_s,
        )
    figures.e2e_ms = latency_ms(merged)
    sched = e2e.get("schedule_lag") or {}
    if sched.get("count"):
        figures.schedule_lag_p99_ms = sched["p99_us"] / 1000
    lags = [v["p99_us"] / 1000 for v in (e2e.get("loop_lag") or {}).values() if v.get("count")]
    figures.loop_lag_p99_ms = max(lags) if lags else None
    return figures


def request_figures(stats: RequestStats) -> list[RequestFigures]:
    """Rows of Locust's live statistics (what its ``_stats.csv`` would hold)."""
    rows = []
    for entry in stats.entries.values():
        timed = entry.num_requests - entry.num_none_requests > 0
        keys = ("p50_ms", "p90_ms", "p95_ms", "p99_ms") if timed else ()
        pct = {k: float(entry.get_response_time_percentile(PERCENTILES[k] / 100)) for k in keys}
        rows.append(
            RequestFigures(
                type=str(entry.method or ""),
                name=str(entry.name),
                requests=entry.num_requests,
                failures=entry.num_failures,
                max_ms=float(entry.max_response_time) if timed else None,
                rps=float(entry.total_rps),
                **pct,
            )
        )
    return rows
