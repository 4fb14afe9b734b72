"""Read the dashboards, the rules and docs/metrics.md; pull metric names out of PromQL.

Shared by the static checks (tests/unit/test_observability_config.py) and the
run against a real Prometheus (tests/integration/test_observability.py).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DASHBOARDS = sorted((ROOT / "grafana/dashboards").glob("*.json"))
RULES = ROOT / "prometheus/rules.yml"
CONFIG = ROOT / "prometheus/prometheus.yml"
METRICS_DOC = ROOT / "docs/metrics.md"

_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACES = re.compile(r"\{[^}]*\}")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_RANGE = re.compile(r"\[[^\]]*\]")
_IDENT = re.compile(r"(?<![\w.$])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?")
_LABEL_VALUES = re.compile(r"^label_values\((.*),\s*(\w+)\)$")


@dataclass(frozen=True)
class Query:
    dashboard: str
    panel: str
    expr: str


def dashboards() -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in DASHBOARDS}


def panel_queries() -> Iterator[Query]:
    """Every target expression of every panel (rows' nested panels included)."""
    for name, doc in dashboards().items():
        stack = list(doc.get("panels", []))
        while stack:
            panel = stack.pop(0)
            stack.extend(panel.get("panels", []))
            for t in panel.get("targets", []):
                if t.get("expr"):
                    yield Query(name, panel.get("title", ""), t["expr"])


def variable_queries() -> Iterator[Query]:
    """``label_values(selector, label)`` of every query variable."""
    for name, doc in dashboards().items():
        for var in doc.get("templating", {}).get("list", []):
            if var.get("type") == "query":
                q = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
                yield Query(name, f"${var['name']}", q)


def label_values_as_promql(query: str) -> str:
    """``label_values(sel, label)`` → ``count by (label) (sel)`` (what Grafana asks for)."""
    m = _LABEL_VALUES.match(query.strip())
    assert m, f"not a label_values() query: {query}"
    return f"count by ({m.group(2)}) ({m.group(1)})"


def substitute(expr: str, run: str, instance: str = ".*", rate_interval: str = "15s") -> str:
    """Grafana's variables as Grafana would fill them for one run and all instances."""
    expr = expr.replace("$__rate_interval", rate_interval).replace(
        "${__rate_interval}", rate_interval
    )
    # Grafana escapes regex characters of a value put into =~ (a PromQL string needs two \\)
    escaped = re.sub(r"([\\.^$*+?()\[\]{}|])", r"\\\\\1", run)
    for name, value in (("run", escaped), ("instance", instance)):
        expr = expr.replace("${" + name + "}", value).replace("$" + name, value)
    assert "$" not in expr, f"unsubstituted variable in {expr}"
    return expr


def metric_names(expr: str) -> set[str]:
    """Metric (and recording-rule) names a PromQL expression selects."""
    s = _STRING.sub('""', expr)
    s = _BRACES.sub(" ", s)
    s = _GROUPING.sub(" ", s)
    s = _RANGE.sub(" ", s)
    names = set()
    for m in _IDENT.finditer(s):
        word, call = m.group(1), m.group(2)
        if call or word.lower() in _KEYWORDS:
            continue
        names.add(word)
    # __name__ matchers inside braces
    for m in re.finditer(r'__name__\s*=~?\s*"([^"]+)"', expr):
        names.update(n for n in m.group(1).split("|") if n)
    return names


def rules() -> list[dict]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def recorded() -> set[str]:
    return {r["record"] for r in rules() if "record" in r}


def documented() -> dict[str, str]:
    """``name -> type`` of every table row of docs/metrics.md."""
    rows = re.findall(r"^\| `([a-z0-9_:]+)` \| (\w+) \|", METRICS_DOC.read_text(), re.M)
    return dict(rows)


def base_name(name: str, docs: dict[str, str]) -> str | None:
    """The documented family ``name`` belongs to (``x_bucket`` → ``x`` for a histogram)."""
    if name in docs:
        return name
    for suffix, kinds in (("_bucket", {"histogram"}), ("_sum", {"histogram", "summary"})):
        if name.endswith(suffix) and docs.get(name[: -len(suffix)]) in kinds:
            return name[: -len(suffix)]
    if name.endswith("_count") and docs.get(name[:-6]) in {"histogram", "summary"}:
        return name[:-6]
    return None


def used_names() -> dict[str, set[str]]:
    """Every name a dashboard panel, a dashboard variable or a rule uses → where."""
    out: dict[str, set[str]] = {}
    for q in [*panel_queries(), *variable_queries()]:
        expr = label_values_as_promql(q.expr) if q.panel.startswith("$") else q.expr
        for name in metric_names(expr):
            out.setdefault(name, set()).add(f"{q.dashboard}: {q.panel}")
    for rule in rules():
        for name in metric_names(rule["expr"]):
            out.setdefault(name, set()).add(f"rule {rule.get('record') or rule.get('alert')}")
    return out
