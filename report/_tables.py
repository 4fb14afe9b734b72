"""The report's tables: run metadata, Locust requests, end-to-end percentiles, ledger, commands.

Pure functions of a loaded :class:`~report._load.Run`; every latency of the
end-to-end section comes from the decoded HDR histograms (exact to 3 significant
digits), never from Locust's rounded response-time buckets.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from report._hdr import mean_us
from report._load import LocustCsv, Run
from telemetry.hdr import Histogram
from telemetry.slo import E2E_TYPE, RequestFigures
from telemetry.stages import LEG_MEANING, LEGS, split_path

__all__ = [
    "HOP_ORDER",
    "HOP_MEANING",
    "LatencyRow",
    "PathTables",
    "latency_row",
    "metadata",
    "request_rows",
    "path_tables",
    "command_rows",
    "failure_rows",
    "exception_rows",
    "iso",
]

#: Percentiles of every latency table (and their column titles).
TABLE_PERCENTILES: tuple[tuple[float, str], ...] = (
    (50.0, "p50"),
    (90.0, "p90"),
    (95.0, "p95"),
    (99.0, "p99"),
    (99.9, "p99.9"),
    (99.99, "p99.99"),
)
#: Hops in path order (docs/results.md); combined hops (``kafka+redis``) sort by their first leg.
HOP_ORDER: tuple[str, ...] = ("total", "service", *LEGS, "staleness")
HOP_MEANING: dict[str, str] = {
    "total": "t0 (intended send) → receive",
    "service": "tp (actual publish) → receive",
    **LEG_MEANING,
    "staleness": "t0 of the value shown → receive (snapshot mode)",
}
#: Locust entries that time a command (MQTT receipt, REST round trip).
COMMAND_NAME = re.compile(r"^command\b|/commands\b", re.IGNORECASE)


def iso(epoch_s: float | None) -> str:
    if not epoch_s:
        return "—"
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def hop_key(hop: str) -> tuple[int, str]:
    first = hop.split("+", 1)[0]
    return (HOP_ORDER.index(first) if first in HOP_ORDER else len(HOP_ORDER), hop)


# --- run metadata -----------------------------------------------------------------------------
def _clock_cell(clock: Any) -> str:
    """A worker's clock offset to the master: ``+50.061 ± 0.170 ms`` (run.json ``clock``)."""
    if not isinstance(clock, dict):
        return ""
    return f"{clock.get('offset_ms', 0):+.3f} ± {clock.get('uncertainty_ms', 0):.3f} ms"


def metadata(run: Run) -> dict[str, Any]:
    r = run.run
    options = r.get("options", {})
    workers = [
        {
            "index": w.get("index", i),
            "host": w.get("host", "?"),
            "id": w.get("id", ""),
            "users": ", ".join(
                f"{k} {v}" for k, v in sorted((w.get("user_classes_count") or {}).items())
            ),
            "address": w.get("address") or "",
            "clock": _clock_cell(w.get("clock")),
            "state": (w.get("state") or "") + ("" if w.get("final", True) else ", no final state"),
        }
        for i, w in enumerate(r.get("workers", []))
    ]
    shown = ("run_time", "num_users", "spawn_rate", "shape", "e2e_grace", "e2e_drain", "mqtt_url",
             "gateway_url", "kafka_bootstrap", "redis_url", "device_interval", "mqtt_qos")  # fmt: skip
    return {
        "run_id": run.run_id,
        "scenario": r.get("scenario") or "—",
        "locustfile": r.get("locustfile") or "—",
        "mode": r.get("mode", "—"),
        "started": iso(r.get("started_epoch_s")),
        "ended": iso(r.get("ended_epoch_s")),
        "duration_s": float(r.get("duration_s") or 0),
        "host": r.get("host") or "—",
        "users_by_class": sorted((r.get("user_classes_count") or {}).items()),
        "user_count": r.get("user_count", 0),
        "peak_users": r.get("peak_users", 0),
        "worker_count": r.get("worker_count", len(workers)),
        "workers": workers,
        "hosts": r.get("hosts", []),
        "cross_host_timing": bool(r.get("cross_host_timing")),
        "master": r.get("master", {}),
        "versions": sorted((r.get("versions") or {}).items()),
        "key_options": [(k, options[k]) for k in shown if options.get(k) not in (None, "")],
        "options": sorted(options.items()),
        "grace_s": run.e2e.get("grace_s"),
        "drain_s": run.e2e.get("drain_s"),
        "complete": bool(run.e2e.get("complete", True)),
    }


# --- Locust's request table ----------------------------------------------------------------
def _ms(text: str | None) -> float | None:
    return None if text in (None, "", "N/A") else float(text)  # type: ignore[arg-type]


def request_rows(locust: LocustCsv | None) -> tuple[list[RequestFigures], RequestFigures | None]:
    """Locust's ``_stats.csv`` rows (checked numeric on load) and its Aggregated row.

    A row whose response-time columns are all 0 had no response times (Locust
    counts e.g. QoS 0 publishes with ``response_time=None``): its times are None.
    """
    rows: list[RequestFigures] = []
    aggregated = None
    for r in locust.stats if locust else []:
        times = {k: _ms(r.get(col)) for k, col in
                 (("p50_ms", "50%"), ("p90_ms", "90%"), ("p95_ms", "95%"), ("p99_ms", "99%"),
                  ("max_ms", "Max Response Time"))}  # fmt: skip
        if not any(times.values()):
            times = dict.fromkeys(times)
        row = RequestFigures(
            type=r.get("Type") or "",
            name=r.get("Name") or "",
            requests=int(float(r.get("Request Count") or 0)),
            failures=int(float(r.get("Failure Count") or 0)),
            rps=float(r.get("Requests/s") or 0),
            **times,
        )
        if row.name == "Aggregated" and not row.type:
            aggregated = row
        else:
            rows.append(row)
    return rows, aggregated


def command_rows(rows: list[RequestFigures]) -> list[RequestFigures]:
    """Entries that time a command: ``command:orin/+/command``, ``POST /api/commands/{id}``."""
    return [r for r in rows if r.type != E2E_TYPE and COMMAND_NAME.search(r.name)]


def failure_rows(locust: LocustCsv | None) -> list[dict[str, Any]]:
    rows = [
        {
            "type": r.get("Method") or "",
            "name": r.get("Name") or "",
            "error": r.get("Error") or "",
            "occurrences": int(float(r.get("Occurrences") or 0)),
        }
        for r in (locust.failures if locust else [])
    ]
    return sorted(rows, key=lambda r: -r["occurrences"])


def exception_rows(locust: LocustCsv | None) -> list[dict[str, Any]]:
    return [
        {
            "count": int(float(r.get("Count") or 0)),
            "message": r.get("Message") or "",
            "traceback": r.get("Traceback") or "",
            "nodes": r.get("Nodes") or "",
        }
        for r in (locust.exceptions if locust else [])
    ]


# --- end to end -------------------------------------------------------------------------------
@dataclass(slots=True)
class LatencyRow:
    """One histogram's exact figures, in ms."""

    label: str
    count: int
    min_ms: float
    mean_ms: float
    pct_ms: list[float]
    max_ms: float
    negative: int = 0
    clamped_high: int = 0
    meaning: str = ""

    def get(self, title: str) -> float:
        return dict(zip([t for _, t in TABLE_PERCENTILES], self.pct_ms, strict=True))[title]


def latency_row(label: str, h: Histogram, meaning: str = "") -> LatencyRow:
    if not h.count:
        return LatencyRow(label, 0, 0.0, 0.0, [0.0] * len(TABLE_PERCENTILES), 0.0,
                          h.negative, h.clamped_high, meaning)  # fmt: skip
    pct = h.percentiles([p for p, _ in TABLE_PERCENTILES])
    hdr = h.hdr
    return LatencyRow(
        label=label,
        count=h.count,
        min_ms=hdr.get_min_value() / 1000,
        mean_ms=mean_us(h) / 1000,
        pct_ms=[pct[p] / 1000 for p, _ in TABLE_PERCENTILES],
        max_ms=hdr.get_max_value() / 1000,
        negative=h.negative,
        clamped_high=h.clamped_high,
        meaning=meaning,
    )


@dataclass(slots=True)
class PathTables:
    """Everything the report shows for one path."""

    path: str
    src: str
    subscriber: str
    modes: list[str]
    subscribers: int
    hops: list[LatencyRow] = field(default_factory=list)
    totals: dict[str, int] = field(default_factory=dict)
    snapshot: dict[str, int] = field(default_factory=dict)
    worst_lost: list[dict[str, Any]] = field(default_factory=list)
    worst_total: list[dict[str, Any]] = field(default_factory=list)
    worst_staleness: list[dict[str, Any]] = field(default_factory=list)

    @property
    def loss_ratio(self) -> float | None:
        expected = self.totals.get("expected", 0)
        return self.totals.get("lost", 0) / expected if expected else None

    @property
    def total(self) -> LatencyRow | None:
        return next((h for h in self.hops if h.label == "total"), None)

    @property
    def legs(self) -> list[LatencyRow]:
        return [h for h in self.hops if h.label not in ("total", "service", "staleness")]

    @property
    def is_snapshot(self) -> bool:
        return "snapshot" in self.modes or "mixed" in self.modes


def path_tables(run: Run) -> list[PathTables]:
    out = []
    for path, entry in run.e2e["paths"].items():
        hops = sorted(entry["latency"], key=hop_key)
        worst = entry.get("worst_devices", {})
        pt = PathTables(
            path=path,
            src=str(entry.get("src", split_path(path)[0])),
            subscriber=str(entry.get("subscriber", split_path(path)[1])),
            modes=list(entry.get("modes", [])),
            subscribers=int(entry.get("subscribers", 0)),
            hops=[
                latency_row(
                    hop,
                    run.hist[(path, hop)],
                    HOP_MEANING.get(hop, " + ".join(HOP_MEANING.get(p, p) for p in hop.split("+"))),
                )
                for hop in hops
            ],
            totals=dict(entry["totals"]),
            snapshot=dict(entry.get("snapshot", {})),
            worst_lost=worst.get("lost", [])[:10],
            worst_total=[
                dict(r, max_total_ms=r.get("max_total_us", 0) / 1000)
                for r in worst.get("max_total_us", [])[:10]
            ],
            worst_staleness=[
                dict(r, max_staleness_ms=r.get("max_staleness_us", 0) / 1000)
                for r in worst.get("max_staleness_us", [])[:10]
            ],
        )
        out.append(pt)
    return out


def merged_total(run: Run) -> Histogram:
    """The ``total`` histogram of every path added together (exact)."""
    merged = Histogram()
    for (_path, hop), h in run.hist.items():
        if hop == "total":
            merged.add(h)
    return merged
