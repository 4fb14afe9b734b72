"""Prometheus config and rules, Grafana provisioning and dashboards, checked without a run.

What a run proves (every dashboard query returns series) is in
tests/integration/test_observability.py; here: promtool accepts the files, the
alerts fire on synthetic series, and the dashboards only use documented names,
defined recording rules and their own variables.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from tests.promql import (
    CONFIG,
    ROOT,
    RULES,
    base_name,
    dashboards,
    documented,
    metric_names,
    panel_queries,
    recorded,
    used_names,
    variable_queries,
)

PROMTOOL = shutil.which("promtool")


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL, "promtool is missing: `make setup` installs Debian's prometheus package"
    return subprocess.run(
        [PROMTOOL, *args], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )


def test_promtool_check_config():
    result = _promtool("check", "config", str(CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_rules():
    result = _promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_alerts_fire_on_synthetic_series():
    result = _promtool("test", "rules", "tests/unit/prometheus_rules_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_scrape_targets_are_compose_services():
    config = yaml.safe_load(CONFIG.read_text())
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    jobs = {}
    for job in config["scrape_configs"]:
        for static in job["static_configs"]:
            for target in static["targets"]:
                host = target.rsplit(":", 1)[0]
                assert host in services, f"{job['job_name']}: {host} is not a compose service"
                jobs[job["job_name"]] = host
    assert jobs["pipeswarm"] == "locust-master"
    assert {"pipeline-bridge", "pipeline-consumer", "pipeline-gateway"} <= set(jobs)
    assert "127.0.0.1:9646:9646" in services["locust-master"]["ports"]


def test_grafana_provisioning_points_at_the_mounted_dashboards():
    provider = yaml.safe_load((ROOT / "grafana/provisioning/dashboards/pipeswarm.yml").read_text())[
        "providers"
    ][0]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    datasource = yaml.safe_load(
        (ROOT / "grafana/provisioning/datasources/prometheus.yml").read_text()
    )["datasources"][0]
    assert (datasource["type"], datasource["url"]) == ("prometheus", "http://prometheus:9090")
    grafana = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["grafana"]
    assert "./grafana/dashboards:/var/lib/grafana/dashboards:ro" in grafana["volumes"]


def test_the_three_dashboards_exist_with_run_and_instance_variables():
    docs = dashboards()
    assert set(docs) == {"load", "end_to_end", "pipeline"}
    assert len({d["uid"] for d in docs.values()}) == 3
    for name, doc in docs.items():
        variables = {v["name"]: v for v in doc["templating"]["list"]}
        assert {"datasource", "run", "instance"} <= set(variables), name
        assert variables["datasource"]["query"] == "prometheus"


def test_no_hard_coded_hosts_or_datasources():
    host = re.compile(r"localhost|\b\d{1,3}(?:\.\d{1,3}){3}\b|https?://|:\d{4,5}\b")
    for path in sorted((ROOT / "grafana/dashboards").glob("*.json")):
        text = path.read_text()
        assert not host.search(text), f"{path.name}: {host.search(text).group(0)}"
    for name, doc in dashboards().items():
        stack = list(doc["panels"])
        while stack:
            panel = stack.pop()
            stack.extend(panel.get("panels", []))
            sources = [
                panel.get("datasource"),
                *(t.get("datasource") for t in panel.get("targets", [])),
            ]
            for ds in sources:
                if ds is not None:
                    assert ds == {"type": "prometheus", "uid": "${datasource}"}, (
                        name,
                        panel["title"],
                    )


def test_load_side_queries_filter_by_run_and_instance():
    load_side = re.compile(r"^(?:locust_|pipeswarm_)|:(?:locust_|pipeswarm_)")
    for q in panel_queries():
        for name in metric_names(q.expr):
            if load_side.search(name):
                # every selector of a load-side name carries the run filter
                for m in re.finditer(re.escape(name) + r"(\{[^}]*\})?", q.expr):
                    assert m.group(1) and 'run=~"$run"' in m.group(1), (q.dashboard, q.panel, name)
                    if q.dashboard != "pipeline":
                        assert 'instance=~"$instance"' in m.group(1), (q.dashboard, q.panel, name)


def test_every_used_name_is_documented_and_every_recording_rule_defined():
    docs = documented()
    rules = recorded()
    for name, where in sorted(used_names().items()):
        assert base_name(name, docs), f"{name} (used by {sorted(where)}) is not in docs/metrics.md"
        if ":" in name:
            assert name in rules, f"{name} (used by {sorted(where)}) is not a recording rule"
    for name in rules:
        assert name in docs, f"recording rule {name} is not in docs/metrics.md"


def test_variable_queries_are_label_values():
    queries = list(variable_queries())
    assert queries
    for q in queries:
        assert q.expr.startswith("label_values("), q


@pytest.mark.parametrize(
    "expr, names",
    [
        ('sum by (path) (rate(a_total{x="y"}[1m])) / b', {"a_total", "b"}),
        ("histogram_quantile(0.99, sum by (le) (rate(h_bucket[$__rate_interval])))", {"h_bucket"}),
        ('r:x:rate1m{run=~"$run"} > 0.9', {"r:x:rate1m"}),
        ('{__name__=~"a_ready|b_up"}', {"a_ready", "b_up"}),
    ],
)
def test_metric_names_of_promql(expr, names):
    assert metric_names(expr) == names


def test_every_dashboard_shows_fault_phases_as_annotations():
    docs = documented()
    for name, doc in dashboards().items():
        (faults,) = [a for a in doc["annotations"]["list"] if a["name"] == "Faults"]
        assert faults["enable"] and faults["datasource"] == {
            "type": "prometheus",
            "uid": "${datasource}",
        }, name
        assert metric_names(faults["expr"]) == {"pipeswarm_fault_active"}, name
        assert 'pipeswarm_fault_active{run=~"$run"}' in faults["expr"], name
        assert "pipeswarm_fault_active" in docs


def test_the_load_dashboards_request_rates_count_real_requests_only():
    """End-to-end deliveries are measurements: with --e2e-in-stats Locust counts them as
    requests of type E2E, and the Requests/s and failure figures must still leave them out."""
    titles = {"Requests/s", "Failure ratio", "Requests per second by type"}
    queries = [q for q in panel_queries() if q.dashboard == "load" and q.panel in titles]
    assert {q.panel for q in queries} == titles
    for q in queries:
        for m in re.finditer(r"locust_(?:requests|failures):rate1m(\{[^}]*\})", q.expr):
            assert 'request_type!="E2E"' in m.group(1), (q.panel, q.expr)
