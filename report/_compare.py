"""Headline figures of a run, and their deltas against a baseline run.

A delta is *flagged* when the figure got worse by more than the tolerance
(``--tolerance``, percent of the baseline value) and, for latencies, also by
more than ``--tolerance-ms`` (so 0.2 ms → 0.3 ms on loopback is not a
regression unless you say so). A figure the baseline had and this run lacks
(a path that no longer delivers) is flagged too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from report._health import WorkerHealth
from telemetry.slo import E2E_TYPE, Figures, RequestFigures, format_value

__all__ = ["Headline", "Delta", "headlines", "compare", "DEFAULT_TOLERANCE_PCT"]

DEFAULT_TOLERANCE_PCT = 10.0


@dataclass(frozen=True, slots=True)
class Headline:
    """One figure: ``better`` is ``"lower"`` or ``"higher"``."""

    key: str
    label: str
    value: float | None
    unit: str
    better: str

    @property
    def text(self) -> str:
        return format_value(self.value, self.unit)


@dataclass(frozen=True, slots=True)
class Delta:
    label: str
    unit: str
    better: str
    current: float | None
    baseline: float | None
    flagged: bool

    @property
    def change(self) -> float | None:
        if self.current is None or self.baseline is None:
            return None
        return self.current - self.baseline

    @property
    def change_pct(self) -> float | None:
        change = self.change
        if change is None:
            return None
        if self.baseline == 0:
            return 0.0 if change == 0 else math.copysign(math.inf, change)
        return 100 * change / abs(self.baseline)  # type: ignore[arg-type]

    @property
    def worse(self) -> bool:
        change = self.change
        if change is None:
            return self.current is None and self.baseline is not None
        return change > 0 if self.better == "lower" else change < 0

    @property
    def change_text(self) -> str:
        change, pct = self.change, self.change_pct
        if change is None:
            return "only in baseline" if self.current is None else "new"
        sign = "+" if change > 0 else ("−" if change < 0 else "±")
        value = format_value(abs(change), self.unit)
        if pct is None or math.isinf(pct):
            return f"{sign}{value}"
        return f"{sign}{value} ({sign}{abs(pct):.1f} %)"


def headlines(
    figures: Figures, requests: list[RequestFigures], health: list[WorkerHealth]
) -> list[Headline]:
    """The figures a run is judged by, with stable keys (for comparison)."""
    out = [
        Headline("e2e_p50_ms", "end to end p50", figures.e2e_ms.get("p50_ms"), "ms", "lower"),
        Headline("e2e_p95_ms", "end to end p95", figures.e2e_ms.get("p95_ms"), "ms", "lower"),
        Headline("e2e_p99_ms", "end to end p99", figures.e2e_ms.get("p99_ms"), "ms", "lower"),
        Headline("e2e_p999_ms", "end to end p99.9", figures.e2e_ms.get("p999_ms"), "ms", "lower"),
        Headline("e2e_max_ms", "end to end max", figures.e2e_ms.get("max_ms"), "ms", "lower"),
        Headline("delivered_per_s", "delivered", figures.delivered_per_s, "/s", "higher"),
        Headline("loss_ratio", "loss", figures.loss_ratio, "ratio", "lower"),
    ]
    timed = [r for r in requests if r.type != E2E_TYPE]
    out.append(
        Headline(
            "requests_per_s",
            "Locust requests",
            sum(r.rps for r in timed) if timed else None,
            "/s",
            "higher",
        )
    )
    out.append(
        Headline("failure_ratio", "request failures", figures.failure_ratio, "ratio", "lower")
    )
    out.append(
        Headline(
            "schedule_lag_p99_ms", "schedule lag p99", figures.schedule_lag_p99_ms, "ms", "lower"
        )
    )
    out.append(Headline("loop_lag_p99_ms", "loop lag p99 (worst process)", figures.loop_lag_p99_ms, "ms", "lower"))  # fmt: skip
    cpus = [w.cpu_max for w in health if w.cpu_max is not None]
    out.append(Headline("cpu_max", "generator CPU max", max(cpus) if cpus else None, " %", "lower"))
    for path, pf in figures.paths.items():
        out += [
            Headline(f"path:{path}:p50", f"{path} p50", pf.latency_ms.get("p50_ms"), "ms", "lower"),
            Headline(f"path:{path}:p99", f"{path} p99", pf.latency_ms.get("p99_ms"), "ms", "lower"),
            Headline(f"path:{path}:loss", f"{path} loss", pf.loss_ratio, "ratio", "lower"),
            Headline(f"path:{path}:rate", f"{path} delivered", pf.delivered_per_s, "/s", "higher"),
        ]
    for r in timed:
        name = f"{r.type} {r.name}"
        out += [
            Headline(f"request:{name}:p95", f"{name} p95", r.p95_ms, "ms", "lower"),
            Headline(f"request:{name}:rps", f"{name} rate", r.rps, "/s", "higher"),
        ]
    return out


def compare(
    current: list[Headline],
    baseline: list[Headline],
    tolerance_pct: float = DEFAULT_TOLERANCE_PCT,
    tolerance_ms: float = 0.0,
) -> list[Delta]:
    """Every headline of either run, side by side; worse beyond the tolerance is flagged."""
    base = {h.key: h for h in baseline}
    keys = [h.key for h in current] + [
        h.key for h in baseline if h.key not in {c.key for c in current}
    ]
    now = {h.key: h for h in current}
    out = []
    for key in keys:
        ref = now.get(key) or base[key]
        cur = now[key].value if key in now else None
        old = base[key].value if key in base else None
        delta = Delta(ref.label, ref.unit, ref.better, cur, old, False)
        flagged = False
        if delta.worse:
            change, pct = delta.change, delta.change_pct
            if change is None:
                flagged = True
            else:
                flagged = pct is not None and abs(pct) > tolerance_pct
                if ref.unit == "ms" and abs(change) <= tolerance_ms:
                    flagged = False
        out.append(Delta(ref.label, ref.unit, ref.better, cur, old, flagged))
    return out
