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

Charts: an extended tab renders a table only, so ``/pipeswarm/e2e/charts`` is a
self-contained page (``static/e2e_charts.html``, inline SVG, no external script)
drawing per-path p50/p99, delivered/s and loss over time from
``/pipeswarm/e2e/series`` (the per-second rows of ``timeseries.csv``, as they
close) and the per-hop breakdown from ``/pipeswarm/e2e``; ``static/e2e_tab.js``,
added to Locust's index page, shows that page above the tab's table.

Custom parameters: the form lists the pipeswarm options group by group, each
help text starting with its group (Flask's ``before_render_template`` signal on
the index page; its ``tojson`` keeps that order instead of sorting keys).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import locust
from flask import Flask, Response, before_render_template, jsonify, request, send_from_directory
from locust.runners import WorkerRunner

from telemetry._live import lost_by_path, path_counters
from telemetry.options import GROUPS
from telemetry.plugin import get_plugin
from telemetry.stages import LEGS

if TYPE_CHECKING:
    from locust.env import Environment

    from telemetry.plugin import E2EPlugin

__all__ = ["TAB_KEY", "COLUMNS", "rows", "series", "grouped_options", "install"]

STATIC = Path(__file__).with_name("static")

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


def series(plugin: E2EPlugin, start: int = 0) -> dict[str, Any]:
    """Per-second rows of the current run from index ``start`` on (``timeseries.csv``'s, as
    they close): ``{"run", "from", "next", "rows": [{t, path, published, delivered, p50, p99,
    lost}]}``; ``t`` is seconds since the run started, latencies in ms (None: no delivery)."""
    ts = plugin.timeseries
    closed = ts.rows if ts is not None else []
    start = min(max(start, 0), len(closed))
    out = []
    for row in closed[start:]:
        path = row.get("path")
        if not path or path.startswith("*"):
            continue
        out.append(
            {
                "t": row["elapsed_s"],
                "path": path,
                "published": row.get("published", 0),
                "delivered": row.get("delivered", 0),
                "p50": row.get("e2e_p50_ms"),
                "p99": row.get("e2e_p99_ms"),
                "lost": row.get("lost_so_far", 0),
            }
        )
    return {"run": plugin.run_id or None, "from": start, "next": len(closed), "rows": out}


def grouped_options(extra: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Locust's ``extra_options`` with the pipeswarm ones first, group by group, each help
    text starting with its group ("STOMP subscriber: ..."); other options follow unchanged."""
    out: dict[str, dict[str, Any]] = {}
    for group in GROUPS:
        label = group.title.removeprefix("pipeswarm ")
        label = label[:1].upper() + label[1:]
        for opt in group.options:
            entry = extra.get(opt.dest)
            if entry is not None:
                out[opt.dest] = {**entry, "help_text": f"{label}: {entry.get('help_text') or ''}"}
    out.update((k, v) for k, v in extra.items() if k not in out)
    return out


def _group_custom_parameters(app: Flask) -> None:
    # Jinja's tojson sorts keys by default, which would undo the grouping in the page's
    # templateArgs (its "json.dumps_kwargs" policy; Locust's pages use tojson for nothing else)
    app.jinja_env.policies["json.dumps_kwargs"] = {"sort_keys": False}

    def regroup(_sender: Flask, template: Any, context: dict[str, Any], **_kw: Any) -> None:
        args = context.get("template_args")
        if template.name == "index.html" and isinstance(args, dict) and args.get("extra_options"):
            args["extra_options"] = grouped_options(args["extra_options"])

    before_render_template.connect(regroup, app, weak=False)


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
        if request.endpoint == "locust.index" and response.status_code == 200:
            return _add_tab_script(response)
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

    @web_ui.auth_required_if_enabled
    def pipeswarm_e2e_series() -> Response:
        return jsonify(series(get_plugin(environment), request.args.get("from", 0, type=int)))

    @web_ui.auth_required_if_enabled
    def pipeswarm_e2e_charts() -> Response:
        return send_from_directory(STATIC, "e2e_charts.html", max_age=0)

    @web_ui.auth_required_if_enabled
    def pipeswarm_e2e_tab_js() -> Response:
        return send_from_directory(STATIC, "e2e_tab.js", max_age=0)

    app.add_url_rule("/pipeswarm/e2e", "pipeswarm_e2e", pipeswarm_e2e)
    app.add_url_rule("/pipeswarm/e2e.csv", "pipeswarm_e2e_csv", pipeswarm_e2e_csv)
    app.add_url_rule("/pipeswarm/e2e/series", "pipeswarm_e2e_series", pipeswarm_e2e_series)
    app.add_url_rule("/pipeswarm/e2e/charts", "pipeswarm_e2e_charts", pipeswarm_e2e_charts)
    app.add_url_rule("/pipeswarm/e2e/tab.js", "pipeswarm_e2e_tab_js", pipeswarm_e2e_tab_js)
    _group_custom_parameters(app)


_TAB_SCRIPT = b'<script src="./pipeswarm/e2e/tab.js" defer></script>'


def _add_tab_script(response: Response) -> Response:
    """Locust's index page with ``static/e2e_tab.js`` loaded after its own bundle."""
    if response.direct_passthrough or not response.mimetype == "text/html":
        return response
    body = response.get_data()
    if _TAB_SCRIPT not in body and b"</body>" in body:
        response.set_data(body.replace(b"</body>", _TAB_SCRIPT + b"</body>", 1))
    return response


def _on_init(environment: Environment, **_kw: Any) -> None:
    install(environment)


locust.events.init.add_listener(_on_init)
