"""What each fault phase cost, from the per-second time series: one definition.

The console table at the end of a run (``telemetry.faults``), ``faults.json``'s
``figures`` and the Faults section of ``report.html`` all come from
:func:`phase_figures`, fed with the seconds of ``timeseries.csv`` (all paths of
a second added up: ``published`` of the busiest source, ``delivered`` summed,
latencies the worst path's).

Per phase (times in seconds; "back" = when the part was back, i.e. the end
step returned — a started part is healthy by then):

- ``published`` — messages published from the start of the phase until it was back;
- ``lost`` — growth of the run's loss (gaps older than ``--e2e-grace``) from the
  start of the phase until the next phase starts (the last: until the end of the
  run, the final loss of ``e2e.json``);
- ``duplicated`` — copies of messages already received, from the start of the
  phase until the next one starts (redelivered after the part came back);
- ``late`` — messages delivered from the start of the phase until the backlog
  drained, in seconds whose p99 was above the pre-fault p99;
- ``first_delivery_s`` — from back to the first second with a delivery;
- ``recovery_s`` — from back to the first second whose p99 is at or under the
  pre-fault p99 again (the backlog drained); ``None``: not within the window;
- ``peak_ms`` — the highest end-to-end latency from the start until drained;
- ``baseline_p99_ms`` — the pre-fault p99: the highest per-second p99 of the
  10 s before the phase, leaving out the seconds of an earlier phase (from its
  start until its backlog drained).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["BASELINE_S", "Second", "format_table", "phase_figures", "seconds_of"]

#: Seconds before a phase that define "normal" latency.
BASELINE_S = 10


@dataclass(slots=True)
class Second:
    epoch_s: int
    published: int = 0
    delivered: int = 0
    duplicated: int = 0
    p99_ms: float | None = None
    max_ms: float | None = None
    lost_so_far: int = 0


def seconds_of(rows: Iterable[Any]) -> list[Second]:
    """Per-second totals of ``timeseries`` rows (dicts of the file's columns, or objects
    with ``epoch_s``, ``published``, ``delivered``, ``p99_ms``, ``max_ms``, ``lost_so_far``)."""

    def get(row: Any, key: str, alt: str = "") -> Any:
        if isinstance(row, dict):
            value = row.get(key, row.get(alt) if alt else None)
        else:
            value = getattr(row, alt or key, None)
        return None if value in ("", None) else value

    out: dict[int, Second] = {}
    for row in rows:
        sec = int(get(row, "epoch_s"))
        s = out.setdefault(sec, Second(sec))
        s.published = max(s.published, int(get(row, "published") or 0))
        s.delivered += int(get(row, "delivered") or 0)
        s.duplicated += int(get(row, "duplicated") or 0)
        s.lost_so_far += int(get(row, "lost_so_far") or 0)
        for attr, key, alt in (
            ("p99_ms", "e2e_p99_ms", "p99_ms"),
            ("max_ms", "e2e_max_ms", "max_ms"),
        ):
            value = get(row, key, alt)
            if value is not None:
                current = getattr(s, attr)
                setattr(s, attr, float(value) if current is None else max(current, float(value)))
    return [out[k] for k in sorted(out)]


def phase_figures(
    phases: Sequence[dict[str, Any]], seconds: Sequence[Second], final_lost: int | None = None
) -> list[dict[str, Any]]:
    """The figures of each phase that ran (``faults.json`` phases, in start order)."""
    ran = sorted(
        (p for p in phases if p.get("started_epoch_s") is not None),
        key=lambda p: p["started_epoch_s"],
    )
    by_sec = {s.epoch_s: s for s in seconds}
    last_sec = seconds[-1].epoch_s if seconds else 0
    out = []
    disturbed: list[tuple[int, int]] = []  # (start, end) seconds of each earlier phase
    for i, phase in enumerate(ran):
        start = int(phase["started_epoch_s"])
        back_at = float(phase.get("ended_epoch_s") or phase["started_epoch_s"])
        back = int(back_at)
        nxt = int(ran[i + 1]["started_epoch_s"]) if i + 1 < len(ran) else last_sec + 1
        before = [
            by_sec[t]
            for t in range(start - BASELINE_S, start)
            if t in by_sec and not any(a <= t < b for a, b in disturbed)
        ]
        p99s = [s.p99_ms for s in before if s.delivered and s.p99_ms is not None]
        baseline = max(p99s) if p99s else None
        window = [by_sec[t] for t in range(start, nxt) if t in by_sec]
        after = [s for s in window if s.epoch_s >= back]
        first = next((s.epoch_s for s in after if s.delivered), None)
        drained = None
        if baseline is not None:
            drained = next(
                (
                    s.epoch_s
                    for s in after
                    if s.delivered and s.p99_ms is not None and s.p99_ms <= baseline
                ),
                None,
            )
        until = drained if drained is not None else nxt
        disturbed.append((start, until + 1))  # not "normal" for a later phase's baseline
        during = [s for s in window if s.epoch_s < until]
        lost_start = by_sec[start - 1].lost_so_far if start - 1 in by_sec else 0
        if i + 1 == len(ran) and final_lost is not None:
            lost_end = final_lost
        else:
            lost_end = window[-1].lost_so_far if window else lost_start
        peaks = [s.max_ms for s in during if s.max_ms is not None]
        out.append(
            {
                "phase": phase.get("spec", ""),
                "action": phase.get("action", ""),
                "component": phase.get("component", ""),
                "published": sum(s.published for s in window if s.epoch_s <= back),
                "lost": max(0, lost_end - lost_start),
                "duplicated": sum(s.duplicated for s in window),
                "late": sum(
                    s.delivered
                    for s in during
                    if baseline is not None and s.p99_ms is not None and s.p99_ms > baseline
                ),
                "first_delivery_s": None if first is None else max(0.0, round(first - back_at, 1)),
                "recovery_s": None if drained is None else max(0.0, round(drained - back_at, 1)),
                "peak_ms": round(max(peaks), 1) if peaks else None,
                "baseline_p99_ms": None if baseline is None else round(baseline, 1),
            }
        )
    return out


def _cell(value: Any, unit: str = "") -> str:
    return (
        "—"
        if value is None
        else f"{value:g}{unit}"
        if isinstance(value, float)
        else f"{value}{unit}"
    )


def format_table(figures: Sequence[dict[str, Any]], phases: Sequence[dict[str, Any]]) -> str:
    """The fault table printed at the end of a headless run."""
    ok = {p.get("spec"): p.get("ok", True) for p in phases}
    head = (
        f"{'phase':<34} {'published':>9} {'lost':>6} {'dup':>6} {'late':>7} {'first s':>8} "
        f"{'drained s':>9} {'peak ms':>9}  ok"
    )
    lines = ["pipeswarm faults:", head]
    for f in figures:
        lines.append(
            f"{f['phase'][:34]:<34} {f['published']:>9} {f['lost']:>6} {f['duplicated']:>6} "
            f"{f['late']:>7} "
            f"{_cell(f['first_delivery_s']):>8} {_cell(f['recovery_s']):>9} "
            f"{_cell(f['peak_ms']):>9}  {'yes' if ok.get(f['phase'], True) else 'NO'}"
        )
    skipped = [p.get("spec", "") for p in phases if p.get("started_epoch_s") is None]
    if skipped:
        lines.append(f"not reached before the run ended: {', '.join(skipped)}")
    return "\n".join(lines)
