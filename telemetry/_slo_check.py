"""Evaluation of an SLO against figures (pure), and its plain-text formatting."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from telemetry._slo_figures import Figures
from telemetry._slo_file import PATH_KEYS, PERCENTILES, REQUEST_KEYS, TOP_KEYS, Objective, Slo

__all__ = ["Check", "evaluate", "format_value", "table"]


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


def _check(key: str, obj: Objective, threshold: float, actual: float | None, note: str) -> Check:
    _, op, unit = obj
    if actual is None:
        return Check(key, op, threshold, unit, None, False, note or "no data in this run")
    ok = actual <= threshold if op == "<=" else actual >= threshold
    return Check(key, op, threshold, unit, actual, ok, note if not ok else "")


_INCOMPLETE = "loss figures incomplete: a worker's final state never arrived"


def evaluate(slo: Slo, figures: Figures) -> list[Check]:
    """Every objective of ``slo`` against ``figures``, in file order."""
    checks: list[Check] = []

    def add(key: str, obj: Objective, threshold: float, actual: float | None, note: str) -> None:
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
