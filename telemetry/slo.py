"""Service-level objectives: one YAML file, checked by ``analyze.py`` and at the end of a Locust run.

The file (``docs/slo.example.yaml``)::

    e2e_p95_ms: 50              # end to end (t0 -> receive), all stream paths, exact (HDR)
    e2e_p99_ms: 100
    loss_ratio_max: 0.001       # lost / expected, all stream paths
    failure_ratio_max: 0.01     # Locust failures / requests (E2E entries left out)
    min_delivered_per_s: 900    # deliveries per second over the seconds messages arrived
    requests:                   # per Locust request name (or "TYPE name")
      "publish:1:sensors/+/coordinates": {p95_ms: 20}
    paths:                      # per end-to-end path
      "mqtt→stomp": {p99_ms: 80, loss_ratio_max: 0}

Every key is listed in :data:`TOP_KEYS`, :data:`REQUEST_KEYS` and :data:`PATH_KEYS`;
anything else is a :class:`SloError` naming the key. An objective whose figure
does not exist in the run (no samples, no such request) fails: a gate that passes
on missing data is no gate.

Evaluation is pure — :func:`evaluate` on :class:`Figures` — and lives only here.
``analyze.py`` (``report/``) builds the figures from the results files and
Locust's ``--csv`` files; the Locust hook below builds them from the same results
files and ``environment.stats``.

With ``--slo PATH`` (env ``PIPESWARM_SLO``) the master or local process checks
the objectives at ``quitting`` — after the telemetry wrote the run's results —
logs a pass/fail table and sets ``environment.process_exit_code`` to 1 when one
failed, the way k6 thresholds do. A file that cannot be used stops Locust at
start-up with one sentence and exit code 2.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import locust
import yaml
from locust.runners import STATE_RUNNING, STATE_SPAWNING, WorkerRunner

from telemetry.hdr import Histogram
from telemetry.options import option

if TYPE_CHECKING:
    from locust.argument_parser import LocustArgumentParser
    from locust.env import Environment
    from locust.stats import RequestStats

__all__ = [
    "TOP_KEYS",
    "REQUEST_KEYS",
    "PATH_KEYS",
    "PERCENTILES",
    "E2E_TYPE",
    "Check",
    "Figures",
    "PathFigures",
    "RequestFigures",
    "Slo",
    "SloError",
    "add_arguments",
    "check_at_quit",
    "e2e_figures",
    "evaluate",
    "format_value",
    "load",
    "parse",
    "request_figures",
]

log = logging.getLogger(__name__)

#: Locust request type of the telemetry's end-to-end entries (``telemetry.plugin``).
E2E_TYPE = "E2E"

#: Figure key -> percentile (``max`` is the 100th).
PERCENTILES: dict[str, float] = {
    "p50_ms": 50.0,
    "p90_ms": 90.0,
    "p95_ms": 95.0,
    "p99_ms": 99.0,
    "p999_ms": 99.9,
    "max_ms": 100.0,
}

# objective key -> (figure name, "<=" or ">=", unit)
_Objective = tuple[str, str, str]

TOP_KEYS: dict[str, _Objective] = {
    **{f"e2e_{k}": (k, "<=", "ms") for k in PERCENTILES},
    "loss_ratio_max": ("loss_ratio", "<=", "ratio"),
    "failure_ratio_max": ("failure_ratio", "<=", "ratio"),
    "min_delivered_per_s": ("delivered_per_s", ">=", "/s"),
    "schedule_lag_p99_ms": ("schedule_lag_p99_ms", "<=", "ms"),
    "loop_lag_p99_ms": ("loop_lag_p99_ms", "<=", "ms"),
}
REQUEST_KEYS: dict[str, _Objective] = {
    **{k: (k, "<=", "ms") for k in ("p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms")},
    "failure_ratio_max": ("failure_ratio", "<=", "ratio"),
    "min_rps": ("rps", ">=", "/s"),
}
PATH_KEYS: dict[str, _Objective] = {
    **{k: (k, "<=", "ms") for k in PERCENTILES},
    "loss_ratio_max": ("loss_ratio", "<=", "ratio"),
    "min_delivered_per_s": ("delivered_per_s", ">=", "/s"),
}
_SECTIONS = {"requests": REQUEST_KEYS, "paths": PATH_KEYS}


class SloError(ValueError):
    """An SLO file that cannot be used; ``str(err)`` is one sentence naming the problem."""


# --- the file -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Slo:
    """Parsed objectives, in file order: ``top`` key -> threshold; sections name -> key -> threshold."""

    source: str
    top: dict[str, float] = field(default_factory=dict)
    requests: dict[str, dict[str, float]] = field(default_factory=dict)
    paths: dict[str, dict[str, float]] = field(default_factory=dict)


def _threshold(source: str, where: str, key: str, value: Any, unit: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SloError(f"SLO file {source}: {where}{key} must be a number, not {value!r}.")
    if value < 0:
        raise SloError(f"SLO file {source}: {where}{key} must not be negative ({value}).")
    if unit == "ratio" and value > 1:
        raise SloError(f"SLO file {source}: {where}{key} is a ratio between 0 and 1, not {value}.")
    return float(value)


def _unknown(source: str, where: str, key: Any, known: Iterable[str]) -> SloError:
    return SloError(
        f"SLO file {source}: unknown key {key!r}{' under ' + where.rstrip('.') if where else ''} "
        f"(known: {', '.join(known)})."
    )


def parse(doc: Any, source: str = "<slo>") -> Slo:
    """Validate a loaded YAML document; raise :class:`SloError` naming the first problem."""
    if not isinstance(doc, dict) or not doc:
        raise SloError(
            f"SLO file {source} must be a mapping of objectives, e.g. 'e2e_p99_ms: 100'."
        )
    slo = Slo(source)
    for key, value in doc.items():
        if key in TOP_KEYS:
            slo.top[key] = _threshold(source, "", key, value, TOP_KEYS[key][2])
        elif key in _SECTIONS:
            known = _SECTIONS[key]
            target = slo.requests if key == "requests" else slo.paths
            if not isinstance(value, dict):
                raise SloError(
                    f"SLO file {source}: {key} must map names to objectives, "
                    f'e.g. {key}: {{"<name>": {{p95_ms: 100}}}}.'
                )
            for name, objectives in value.items():
                where = f"{key}[{str(name)!r}]."
                if not isinstance(objectives, dict) or not objectives:
                    raise SloError(
                        f"SLO file {source}: {where.rstrip('.')} must be a mapping such as "
                        "{p95_ms: 100}."
                    )
                entry = target.setdefault(str(name), {})
                for sub, threshold in objectives.items():
                    if sub not in known:
                        raise _unknown(source, where, sub, known)
                    entry[sub] = _threshold(source, where, sub, threshold, known[sub][2])
        else:
            raise _unknown(source, "", key, [*TOP_KEYS, *_SECTIONS])
    return slo


def load(path: str | Path) -> Slo:
    """Read and validate an SLO file (:class:`SloError` on any problem)."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SloError(f"SLO file {source} does not exist.") from None
    except IsADirectoryError:
        raise SloError(f"SLO file {source} is a directory, not a YAML file.") from None
    except (OSError, UnicodeDecodeError) as err:
        raise SloError(f"SLO file {source} cannot be read ({err}).") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or "syntax error"
        raise SloError(f"SLO file {source} is not valid YAML{at}: {problem}.") from None
    return parse(doc, source)


# --- the figures -------------------------------------------------------------------------------
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


# --- evaluation -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Check:
    """One objective against its figure."""

    key: str
    op: str
    threshold: float
    unit: str
    actual: float | None
    passed: bool
    note: str = ""

    @property
    def objective(self) -> str:
        return f"{'≤' if self.op == '<=' else '≥'} {format_value(self.threshold, self.unit)}"

    @property
    def measured(self) -> str:
        return format_value(self.actual, self.unit) if self.actual is not None else "no data"


def _num(value: float, digits: int) -> str:
    text = f"{value:,.{digits}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def format_value(value: float | None, unit: str) -> str:
    """``12.5 ms``, ``0.1 %``, ``950.3/s`` (about 3 significant digits); ``—`` for None."""
    if value is None:
        return "—"
    if unit == "ratio":
        pct = value * 100
        return (f"{pct:.3g}" if pct < 100 else _num(pct, 1)) + " %"
    if unit == "ms":
        v = abs(value)
        return _num(value, 3 if v < 1 else 2 if v < 10 else 1 if v < 100 else 0) + " ms"
    return _num(value, 1) + unit


def _check(key: str, obj: _Objective, threshold: float, actual: float | None, note: str) -> Check:
    _, op, unit = obj
    if actual is None:
        return Check(key, op, threshold, unit, None, False, note or "no data in this run")
    ok = actual <= threshold if op == "<=" else actual >= threshold
    return Check(key, op, threshold, unit, actual, ok, note if not ok else "")


_INCOMPLETE = "loss figures incomplete: a worker's final state never arrived"


def evaluate(slo: Slo, figures: Figures) -> list[Check]:
    """Every objective of ``slo`` against ``figures``, in file order."""
    checks: list[Check] = []

    def add(key: str, obj: _Objective, threshold: float, actual: float | None, note: str) -> None:
        if obj[0] == "loss_ratio" and not figures.loss_complete:
            actual, note = None, _INCOMPLETE
        checks.append(_check(key, obj, threshold, actual, note))

    no_e2e = figures.e2e_note or "no end-to-end deliveries in this run"
    for key, threshold in slo.top.items():
        obj = TOP_KEYS[key]
        actual = figures.figure(obj[0])
        e2e = key.startswith("e2e_") or obj[0] in ("loss_ratio", "delivered_per_s")
        add(key, obj, threshold, actual, no_e2e if e2e and actual is None else "")
    for name, objectives in slo.requests.items():
        rows = [r for r in figures.requests if name in (r.name, f"{r.type} {r.name}")]
        for key, threshold in objectives.items():
            obj = REQUEST_KEYS[key]
            if not rows:
                add(f"requests[{name!r}].{key}", obj, threshold, None, "no such request")
            for row in rows:
                label = f"requests[{name!r}]" + (f" ({row.type})" if len(rows) > 1 else "")
                add(f"{label}.{key}", obj, threshold, getattr(row, obj[0]), "")
    for path, objectives in slo.paths.items():
        pf = figures.paths.get(path)
        for key, threshold in objectives.items():
            obj = PATH_KEYS[key]
            if pf is None:
                actual, note = None, "no such path in this run"
            else:
                actual = pf.latency_ms.get(key) if key in PERCENTILES else getattr(pf, obj[0])
                note = ""
            add(f"paths[{path!r}].{key}", obj, threshold, actual, note)
    return checks


def table(checks: Sequence[Check]) -> str:
    """Plain-text pass/fail table (the Locust log and ``analyze.py``'s terminal)."""
    if not checks:
        return "(no objectives)"
    width = max(len(c.key) for c in checks)
    lines = []
    for c in checks:
        line = (
            f"  {'PASS' if c.passed else 'FAIL'}  {c.key:<{width}}  {c.measured:>14}  {c.objective}"
        )
        lines.append(line + (f"  ({c.note})" if c.note else ""))
    return "\n".join(lines)


# --- the Locust hook -----------------------------------------------------------------------
def add_arguments(parser: LocustArgumentParser) -> None:
    """``--slo`` (``events.init_command_line_parser`` listener)."""
    parser.add_argument(
        "--slo",
        type=str,
        default="",
        env_var="PIPESWARM_SLO",
        include_in_web_ui=False,
        help="YAML file of service-level objectives (docs/slo.example.yaml), checked when "
        "Locust quits; a failed objective sets the exit code to 1",
    )


def _on_init(environment: Environment, **_kw: Any) -> None:
    """A bad SLO file is one sentence and exit code 2 before any user starts."""
    path = option(environment, "slo", "")
    if not path or isinstance(environment.runner, WorkerRunner):
        return
    try:
        load(path)
    except SloError as err:
        sys.stderr.write(f"pipeswarm: {err}\n")
        raise SystemExit(2) from None


def _read_results(directory: Path, run_id: str) -> tuple[dict[str, Any], list[dict[str, str]], str]:
    """``e2e.json`` of ``run_id`` and the ``timeseries.csv`` rows, or a note why not."""
    try:
        e2e = json.loads((directory / "e2e.json").read_text(encoding="utf-8"))
        with open(directory / "timeseries.csv", encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, ValueError) as err:
        return {}, [], f"the run's results could not be read from {directory} ({err})"
    if e2e.get("run_id") != run_id:
        return {}, [], f"{directory}/e2e.json is not of run {run_id}"
    return e2e, rows, ""


def check_at_quit(environment: Environment) -> list[Check] | None:
    """Check ``--slo`` against the finished run; set the exit code on failure.

    Runs on the master or the local process only; None when there is nothing to do.
    """
    from telemetry.plugin import get_plugin  # the plugin imports nothing of this module

    path = option(environment, "slo", "")
    runner = environment.runner
    if not path or isinstance(runner, WorkerRunner):
        return None
    try:
        slo = load(path)
    except SloError as err:
        log.error("%s", err)
        environment.process_exit_code = 2
        return None
    if runner is not None and runner.state in (STATE_SPAWNING, STATE_RUNNING):
        runner.stop()  # interrupted: finish the test so the telemetry writes its results
    plugin = get_plugin(environment)
    e2e: dict[str, Any] = {}
    rows: list[dict[str, str]] = []
    note = "no test ran"
    if plugin.run_id and plugin.results_path is not None:
        e2e, rows, note = _read_results(Path(plugin.results_path), plugin.run_id)
    duration = time.time() - plugin.started_s if plugin.started_s else 0.0
    figures = e2e_figures(e2e, rows, duration)
    figures.e2e_note = note
    figures.requests = request_figures(environment.stats)
    checks = evaluate(slo, figures)
    failed = [c for c in checks if not c.passed]
    verdict = f"FAIL ({len(failed)} of {len(checks)} failed)" if failed else "PASS"
    log.info("SLO %s: %s\n%s", slo.source, verdict, table(checks))
    if failed:
        environment.process_exit_code = max(environment.process_exit_code or 0, 1)
    return checks


def _on_quitting(environment: Environment, **_kw: Any) -> None:
    check_at_quit(environment)


locust.events.init_command_line_parser.add_listener(add_arguments)
locust.events.init.add_listener(_on_init)
locust.events.quitting.add_listener(_on_quitting)
