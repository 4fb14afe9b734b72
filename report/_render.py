"""Render a :class:`~report._build.Report`: ``report.html``, ``summary.md`` (jinja2) and the terminal summary."""

from __future__ import annotations

import os
from pathlib import Path

import jinja2

from report._build import Report
from report._charts import CHART_NAMES
from report._health import HOT_CPU_PERCENT, HOT_LOOP_LAG_P99_MS
from report._tables import TABLE_PERCENTILES
from telemetry.slo import format_value, table

__all__ = ["render_html", "render_markdown", "terminal_summary", "write_report"]

_TEMPLATES = Path(__file__).with_name("templates")


def _ms(value: float | None) -> str:
    if value is None:
        return "—"
    v = abs(value)
    digits = 3 if v < 1 else 2 if v < 10 else 1 if v < 100 else 0
    return f"{value:,.{digits}f}"


def _locust_ms(value: float | None) -> str:
    """Locust's own figures: its percentiles are whole ms (2 significant digits), keep them so."""
    if value is not None and float(value).is_integer():
        return f"{int(value):,}"
    return _ms(value)


def _num(value: float | None) -> str:
    return "—" if value is None else f"{int(value):,}"


def _rate(value: float | None) -> str:
    return "—" if value is None else f"{value:,.1f}"


def _trim(value: float) -> str:
    return f"{value:g}"


def _duration(seconds: float) -> str:
    seconds = float(seconds or 0)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return (f"{hours} h " if hours else "") + f"{minutes} min {sec} s"


def _md(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _environment(out_dir: Path, autoescape: bool) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(_TEMPLATES),
        autoescape=autoescape,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(
        ms=_ms,
        lms=_locust_ms,
        num=_num,
        rate=_rate,
        fv=format_value,
        duration=_duration,
        trim_num=_trim,
        md=_md,
        relpath=lambda p: Path(os.path.relpath(Path(p).resolve(), out_dir.resolve())).as_posix(),
    )
    env.globals.update(
        pct_titles=[t for _, t in TABLE_PERCENTILES],
        hot_cpu=f"{HOT_CPU_PERCENT:.0f}",
        hot_lag=f"{HOT_LOOP_LAG_P99_MS:.0f}",
    )
    return env


def render_html(report: Report, out_dir: Path) -> str:
    return _environment(out_dir, True).get_template("report.html.j2").render(r=report)


def render_markdown(report: Report, out_dir: Path) -> str:
    return _environment(out_dir, False).get_template("summary.md.j2").render(r=report)


def terminal_summary(report: Report, out_dir: Path) -> str:
    """A few lines for the terminal: what ran, the verdict, the headline figures, where the report is."""
    m = report.meta
    h = {x.key: x for x in report.headlines}
    workers = f", {m['worker_count']} workers" if m["worker_count"] else ""
    lines = [
        f"pipeswarm run {m['run_id']} ({m['scenario']}, {m['mode']}, {_duration(m['duration_s'])}, "
        f"{m['user_count']:,} users{workers})"
    ]
    if report.checks is None:
        lines.append("  verdict: no SLO file given (--slo) — figures only")
    else:
        failed = report.failed_checks
        verdict = f"FAIL — {len(failed)} of {len(report.checks)} objectives failed" if failed else (
            f"PASS — {len(report.checks)} objectives met")  # fmt: skip
        lines.append(f"  verdict: {verdict}")
        lines.append(table(report.checks))
    for p in report.paths:
        t, total = p.totals, p.total
        pct = (
            f", p50 {_ms(total.get('p50'))} ms, p99 {_ms(total.get('p99'))} ms"
            if total and total.count
            else ""
        )
        lines.append(
            f"  {p.path}: delivered {t.get('delivered', 0):,}, lost {t.get('lost', 0):,} "
            f"({format_value(p.loss_ratio, 'ratio')}){pct}"
        )
    if not report.paths:
        lines.append("  end to end: no deliveries")
    if report.requests:
        lines.append(
            f"  Locust: {sum(r.requests for r in report.requests):,} requests, "
            f"{h['requests_per_s'].text}, failures {h['failure_ratio'].text}"
        )
    for w in report.warnings[:3]:
        lines.append(f"  ! {w}")
    if len(report.warnings) > 3:
        lines.append(f"  ! … {len(report.warnings) - 3} more in the report")
    if report.deltas is not None:
        worse = report.regressions
        lines.append(
            f"  baseline {report.baseline_id}: "
            + (f"{len(worse)} figures worse by more than {report.tolerance_pct:g} %: "
               + "; ".join(f"{d.label} {d.change_text}" for d in worse[:4])
               if worse else f"nothing worse by more than {report.tolerance_pct:g} %")
        )  # fmt: skip
        if report.baseline_differs:
            lines.append(f"  ! baseline set up differently: {'; '.join(report.baseline_differs)}")
    lines.append(f"  report: {out_dir / 'report.html'}")
    return "\n".join(lines)


def write_report(report: Report, out_dir: Path) -> None:
    """Write ``report.html`` and ``summary.md`` (charts are written while they render)."""
    charts = out_dir / "charts"
    for name in CHART_NAMES:  # a chart this run has no data for must not survive from an old one
        if name not in report.charts:
            (charts / f"{name}.svg").unlink(missing_ok=True)
    for name, text in (("report.html", render_html(report, out_dir)),
                       ("summary.md", render_markdown(report, out_dir))):  # fmt: skip
        tmp = out_dir / f".{name}.tmp"
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(out_dir / name)
