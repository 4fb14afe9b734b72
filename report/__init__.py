"""``analyze.py``'s engine: a finished run's folder -> ``report.html``, ``summary.md``, ``charts/``.

::

    from report import load_run, build_report, write_report
    run = load_run("results/20261124-015839-2e85")        # checked; UnusableInput if not
    report = build_report(run, slo=telemetry.slo.load("slo.yaml"), charts_dir=out / "charts")
    write_report(report, out)
    report.verdict                                         # "PASS" / "FAIL" / "NO SLO"

It reads only the results formats (``docs/results.md``) and uses ``telemetry``'s
decoders (``telemetry.hdr``) and SLO evaluation (``telemetry.slo``); it never
imports ``users/`` or ``pipeline/``.
"""

from __future__ import annotations

from report._build import Report, build_report
from report._load import Run, load_run
from report._render import render_html, render_markdown, terminal_summary, write_report
from report.cli import main
from report.exceptions import ReportError, UnusableInput

__all__ = [
    "Report",
    "ReportError",
    "Run",
    "UnusableInput",
    "build_report",
    "load_run",
    "main",
    "render_html",
    "render_markdown",
    "terminal_summary",
    "write_report",
]
