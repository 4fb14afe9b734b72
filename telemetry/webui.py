"""An "End to end" tab in Locust's web UI: the live e2e table per path and hop.

Locust 2.x builds its UI from ``window.templateArgs``: ``extended_tabs`` adds a
tab, ``extended_tables`` gives its columns, and the rows come from an
``extended_stats`` list added to the ``/stats/requests`` JSON the UI polls
every 2 s while a test runs (Locust's ``examples/extend_web_ui.py``). The tab
opens directly at ``http://HOST:8089/?tab=e2e``.

Rows are read from the master's merged collector at each poll (exact HDR
percentiles over all workers, in milliseconds): one row per (path, hop), the
``total`` row of a path carrying its lost/duplicated/reordered counts. The same
rows are served as JSON at ``/pipeswarm/e2e`` and as CSV at
``/pipeswarm/e2e.csv`` (linked from the UI's download list).
"""

from __future__ import annotations

import csv
import io
import json
from typing import TYPE_CHECKING, Any

import locust
from flask import Response, jsonify, request
from locust.runners import WorkerRunner

from telemetry._live import lost_by_path, path_counters
from telemetry.plugin import get_plugin
from telemetry.stages import LEGS

if TYPE_CHECKING:
    from locust.env import Environment

    from telemetry.plugin import E2EPlugin

__all__ = ["TAB_KEY", "COLUMNS", "rows", "install"]

TAB_KEY = "e2e"
TAB_TITLE = "End to end"
#: (key, title): single lowercase words, so Locust's camelCase conversion leaves them alone.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("path", "Path"),
    ("hop", "Hop"),
    ("count", "Count"),
    ("p50", "p50 ms"),
    ("p90", "p90 ms"),
    ("p95", "p95 ms"),
    ("p99", "p99 ms"),
    ("max", "Max ms"),
    ("lost", "Lost"),
    ("dup", "Duplicated"),
    ("reorder", "Reordered"),
)
_PERCENTILES = (50.0, 90.0, 95.0, 99.0)
_HOP_ORDER = {"total": 0, "service": 1, **{leg: 2 + i for i, leg in enumerate(LEGS)}}


def _hop_key(hop: str) -> tuple[float, str]:
    first = hop.split("+", 1)[0]
    rank = _HOP_ORDER.get(first, len(_HOP_ORDER) + 1)
    return (rank + (0.5 if "+" in hop else 0.0), hop)


def _ms(us: int) -> float:
    return round(us / 1000, 3)


def rows(plugin: E2EPlugin) -> list[dict[str, Any]]:
    """The table: one dict per (path, hop), paths sorted, hops in pipeline order."""
    collector = plugin.collector
    if collector is None:
        return []
    counters = path_counters(collector)
    lost = lost_by_path(plugin)
    by_path: dict[str, list[tuple[str, Any]]] = {}
    for (path, hop), h in collector.histograms:
        by_path.setdefault(path, []).append((hop, h))
    out: list[dict[str, Any]] = []
    for path in sorted(by_path, key=lambda p: (p.startswith("*"), p)):
        for hop, h in sorted(by_path[path], key=lambda item: _hop_key(item[0])):
            pct = h.percentiles(_PERCENTILES)
            row: dict[str, Any] = {
                "path": path,
                "hop": hop,
                "count": h.count,
                "p50": _ms(pct[50.0]),
                "p90": _ms(pct[90.0]),
                "p95": _ms(pct[95.0]),
                "p99": _ms(pct[99.0]),
                "max": _ms(int(h.hdr.get_max_value()) if h.count else 0),
                "lost": "",
                "dup": "",
                "reorder": "",
            }
            if hop == "total" and path in counters:
                row["lost"] = lost.get(path, 0)
                row["dup"] = counters[path]["duplicated"]
                row["reorder"] = counters[path]["reordered"]
            out.append(row)
    return out


def _csv(table: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=[key for key, _ in COLUMNS], lineterminator="\n")
    writer.writeheader()
    writer.writerows(table)
    return buf.getvalue()


def install(environment: Environment) -> None:
    """Add the tab, its rows and the JSON/CSV routes to ``environment.web_ui`` (master/local)."""
    web_ui = environment.web_ui
    if web_ui is None or isinstance(environment.runner, WorkerRunner):
        return
    app = web_ui.app
    if app is None or "pipeswarm_e2e" in app.view_functions:
        return
    web_ui.template_args["extended_tabs"] = [
        *web_ui.template_args.get("extended_tabs", []),
        {"title": TAB_TITLE, "key": TAB_KEY},
    ]
    web_ui.template_args["extended_tables"] = [
        *web_ui.template_args.get("extended_tables", []),
        {"key": TAB_KEY, "structure": [{"key": k, "title": t} for k, t in COLUMNS]},
    ]
    web_ui.template_args["extended_csv_files"] = [
        *web_ui.template_args.get("extended_csv_files", []),
        {"href": "./pipeswarm/e2e.csv", "title": "Download end-to-end CSV"},
    ]

    def current() -> list[dict[str, Any]]:
        return rows(get_plugin(environment))

    @app.after_request
    def add_e2e_rows(response: Response) -> Response:
        if request.path != "/stats/requests" or response.status_code != 200:
            return response
        body = response.get_json(silent=True)
        if not isinstance(body, dict):
            return response
        extended = [*body.get("extended_stats", []), {"key": TAB_KEY, "data": current()}]
        response.set_data(json.dumps({**body, "extended_stats": extended}))
        return response

    @web_ui.auth_required_if_enabled
    def pipeswarm_e2e() -> Response:
        return jsonify(current())

    @web_ui.auth_required_if_enabled
    def pipeswarm_e2e_csv() -> Response:
        return Response(
            _csv(current()),
            mimetype="text/csv",
            headers={"Content-Disposition": "attachment;filename=pipeswarm_e2e.csv"},
        )

    app.add_url_rule("/pipeswarm/e2e", "pipeswarm_e2e", pipeswarm_e2e)
    app.add_url_rule("/pipeswarm/e2e.csv", "pipeswarm_e2e_csv", pipeswarm_e2e_csv)


def _on_init(environment: Environment, **_kw: Any) -> None:
    install(environment)


locust.events.init.add_listener(_on_init)
