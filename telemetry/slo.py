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

Evaluation is pure — :func:`evaluate` on :class:`Figures` — and lives only in
this package: the file (``telemetry._slo_file``), the figures
(``telemetry._slo_figures``), the evaluation and its formatting
(``telemetry._slo_check``); this module is their public face and the Locust
hook. ``analyze.py`` (``report/``) builds the figures from the results files and
Locust's ``--csv`` files; the hook builds them from the results the telemetry
plugin holds in memory (the same ``e2e.json`` document and ``timeseries.csv``
rows it has just written) and ``environment.stats``.

With ``--slo PATH`` (env ``PIPESWARM_SLO``) the master or local process checks
the objectives at ``quitting`` — after the telemetry wrote the run's results —
logs a pass/fail table and sets ``environment.process_exit_code`` to 1 when one
failed, the way k6 thresholds do. A file that cannot be used stops Locust at
start-up with one sentence and exit code 2.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import locust
from locust.runners import STATE_RUNNING, STATE_SPAWNING, WorkerRunner

from telemetry._slo_check import Check, evaluate, format_value, table
from telemetry._slo_figures import (
    E2E_TYPE,
    Figures,
    PathFigures,
    RequestFigures,
    e2e_figures,
    latency_ms,
    request_figures,
)
from telemetry._slo_file import PATH_KEYS, PERCENTILES, REQUEST_KEYS, TOP_KEYS, Slo, load, parse
from telemetry.exceptions import SloError
from telemetry.options import Option, OptionGroup

if TYPE_CHECKING:
    from locust.env import Environment

__all__ = [
    "TOP_KEYS",
    "REQUEST_KEYS",
    "PATH_KEYS",
    "PERCENTILES",
    "E2E_TYPE",
    "OPTIONS",
    "SLO",
    "Check",
    "Figures",
    "PathFigures",
    "RequestFigures",
    "Slo",
    "SloError",
    "check_at_quit",
    "e2e_figures",
    "evaluate",
    "format_value",
    "latency_ms",
    "load",
    "parse",
    "request_figures",
    "table",
]

log = logging.getLogger(__name__)

SLO = Option(
    "--slo",
    str,
    "",
    "PIPESWARM_SLO",
    "YAML file of service-level objectives (docs/slo.example.yaml), checked when "
    "Locust quits; a failed objective sets the exit code to 1",
    doc_default="none",
)
OPTIONS = OptionGroup("pipeswarm SLO check", SLO)


def _check_file(environment: Environment) -> None:
    """A bad SLO file is one sentence and exit code 2 before any user starts (master/local)."""
    path = SLO.get(environment)
    if path and not isinstance(environment.runner, WorkerRunner):
        load(path)


OPTIONS.validators.append(_check_file)


def check_at_quit(environment: Environment) -> list[Check] | None:
    """Check ``--slo`` against the finished run; set the exit code on failure.

    Runs on the master or the local process only; None when there is nothing to do.
    """
    from telemetry.plugin import get_plugin  # the plugin imports nothing of this module

    path = SLO.get(environment)
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
    rows: list[dict[str, Any]] = []
    note = "no test ran"
    if plugin.run_id and plugin.final_e2e is not None and plugin.timeseries is not None:
        e2e, rows, note = plugin.final_e2e, plugin.timeseries.rows, ""
    elif plugin.run_id:
        note = f"the results of run {plugin.run_id} were not written"
    duration = time.time() - plugin.started_s if plugin.started_s else 0.0
    figures = e2e_figures(e2e, rows, duration)
    figures.e2e_note = note
    figures.requests = request_figures(environment.stats)
    from telemetry.faults import get_schedule

    schedule = get_schedule(environment)
    if schedule is not None:
        figures.add_faults(schedule.figures)
    checks = evaluate(slo, figures)
    failed = [c for c in checks if not c.passed]
    verdict = f"FAIL ({len(failed)} of {len(checks)} failed)" if failed else "PASS"
    log.info("SLO %s: %s\n%s", slo.source, verdict, table(checks))
    if failed:
        environment.process_exit_code = max(environment.process_exit_code or 0, 1)
    return checks


def _on_quitting(environment: Environment, **_kw: Any) -> None:
    check_at_quit(environment)


OPTIONS.register()
locust.events.quitting.add_listener(_on_quitting)
