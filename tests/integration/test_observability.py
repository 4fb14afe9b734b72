"""Live observability against the real stack: one short run feeds every check.

A Locust master and one worker run ``observe_locustfile.py`` (MQTT devices →
pipeline → STOMP subscriber, REST commands back) for a few seconds with the web
UI and the exporter on free ports; a real ``prometheus`` (Debian's package),
started here with a config generated from ``prometheus/prometheus.yml`` and
the rules of ``prometheus/rules.yml``, scrapes the exporter and the pipeline
services every second. While the run is live a headless Chromium opens the web
UI's "End to end" tab. Then:

- every PromQL expression of every dashboard panel (variables substituted as
  Grafana would for this run) returns at least one series through Prometheus'
  HTTP API, and so does every variable query;
- every name a dashboard or rule uses is documented and was really ingested;
- ``promtool check metrics`` accepts a live scrape of the exporter;
- the tab's DOM has rows with counts, and a screenshot exists.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline._procs import free_port
from tests.helpers import metric_value, mqtt_client, stack_secret, wait_for
from tests.promql import (
    CONFIG,
    ROOT,
    RULES,
    base_name,
    documented,
    label_values_as_promql,
    panel_queries,
    substitute,
    used_names,
    variable_queries,
)

pytestmark = pytest.mark.integration

RUN_S = 90  # an upper bound: the fixture stops the run through the web UI once it has looked
LOCUSTFILE = "tests/integration/observe_locustfile.py"
DOCS_SCREENSHOT = ROOT / "docs/img/webui-e2e.png"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--virtual-time-budget=5000",  # let the UI fetch /stats/requests and render
]


def _get(url: str | urllib.request.Request, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def _tool(name: str) -> str:
    path = shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/usr/bin")
    assert path, f"{name} is missing: `make setup` installs it (Debian package)"
    return path


class Procs:
    """Processes this module started, stopped by their PID."""

    def __init__(self) -> None:
        self.started: list[tuple[str, subprocess.Popen[bytes], Path]] = []

    def start(
        self, name: str, argv: list[str], log_dir: Path, **kw: Any
    ) -> subprocess.Popen[bytes]:
        log = log_dir / f"{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, **kw)
        self.started.append((name, proc, log))
        return proc

    def log(self, name: str) -> str:
        for n, _proc, log in self.started:
            if n == name:
                return log.read_text(errors="replace")[-3000:]
        return ""

    def stop_all(self) -> None:
        for _name, proc, _log in reversed(self.started):
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
        for _name, proc, _log in reversed(self.started):
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(5)


@dataclass
class Observed:
    run_id: str
    start: float
    end: float
    prometheus: str
    results: Path
    metrics_text: str
    dom: str
    screenshot: Path
    chromium: list[str] = field(default_factory=list)

    def query_range(self, expr: str) -> list[dict[str, Any]]:
        params = urllib.parse.urlencode(
            {"query": expr, "start": self.start, "end": self.end, "step": "1"}
        )
        try:
            body = json.loads(_get(f"{self.prometheus}/api/v1/query_range?{params}", 30))
        except urllib.error.HTTPError as err:  # 400: the expression does not parse
            raise AssertionError(f"{expr}: {err.read().decode(errors='replace')}") from None
        assert body["status"] == "success", body
        return body["data"]["result"]


def _prometheus_config(tmp: Path, targets: dict[str, str]) -> Path:
    """prometheus/prometheus.yml with this test's targets, 1 s intervals, the repo's rules."""
    config = yaml.safe_load(CONFIG.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(targets) <= set(jobs), f"prometheus.yml lacks jobs {set(targets) - set(jobs)}"
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(RULES)]
    config["scrape_configs"] = []
    for name, target in targets.items():
        job = dict(jobs[name], static_configs=[{"targets": [target]}])
        config["scrape_configs"].append(job)
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def _chromium(url: str, tmp: Path, *extra: str) -> subprocess.CompletedProcess[bytes]:
    profile = tempfile.mkdtemp(prefix="chromium-", dir=tmp)
    argv = [_tool("chromium"), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra, url]
    return subprocess.run(argv, capture_output=True, timeout=90, check=False)


@pytest.fixture(scope="module")
def observed(stack, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("observe")
    procs = Procs()
    ports = {name: free_port() for name in ("prometheus", "exporter", "web", "master")}
    exporter = f"http://127.0.0.1:{ports['exporter']}/metrics"
    web = f"http://127.0.0.1:{ports['web']}"
    prom = f"http://127.0.0.1:{ports['prometheus']}"
    results = tmp / "results"
    try:
        config = _prometheus_config(
            tmp,
            {
                "pipeswarm": f"127.0.0.1:{ports['exporter']}",
                "pipeline-bridge": f"127.0.0.1:{stack.ports['bridge_metrics']}",
                "pipeline-consumer": f"127.0.0.1:{stack.ports['consumer_metrics']}",
                "pipeline-gateway": f"127.0.0.1:{stack.ports['gateway']}",
            },
        )
        procs.start(
            "prometheus",
            [
                _tool("prometheus"),
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{ports['prometheus']}",
                "--log.level=warn",
            ],
            tmp,
        )
        common = [
            "-f",
            LOCUSTFILE,
            "--mqtt-url",
            stack.urls["mqtt"],
            "--mqtt-secret-file",
            str(stack.secret_file),
            "--gateway-url",
            stack.urls["gateway"],
            "--host",
            stack.urls["gateway"],
        ]
        env_secret = {"PIPESWARM_JWT_SECRET": stack_secret(stack)}
        env = dict(
            os.environ, PIPESWARM_STATE_DIR=str(tmp), **env_secret
        )  # not a developer's stack
        start = time.time()
        master = procs.start(
            "master",
            [
                sys.executable,
                "-m",
                "locust",
                *common,
                "--master",
                "--master-bind-host=127.0.0.1",
                f"--master-bind-port={ports['master']}",
                "--expect-workers=1",
                "--autostart",
                "--autoquit=3",
                f"--run-time={RUN_S}s",
                "--users=11",
                "--spawn-rate=11",
                "--web-host=127.0.0.1",
                f"--web-port={ports['web']}",
                f"--prometheus-port={ports['exporter']}",
                "--prometheus-host=127.0.0.1",
                f"--results-dir={results}/{{run_id}}",
                "--e2e-drain=2",
            ],
            tmp,
            env=env,
        )
        procs.start(
            "worker",
            [
                sys.executable,
                "-m",
                "locust",
                *common,
                "--worker",
                "--master-host=127.0.0.1",
                f"--master-port={ports['master']}",
            ],
            tmp,
            env=env,
        )
        prometheus = procs.started[0][1]

        def ready() -> bytes | None:
            assert prometheus.poll() is None, procs.log("prometheus")
            try:
                return _get(f"{prom}/-/ready", 2)
            except OSError:
                return None

        wait_for(ready, 30, "prometheus ready")

        def live() -> str | None:
            try:
                text = _get(exporter, 2).decode()
            except OSError:
                assert master.poll() is None, procs.log("master")
                return None
            delivered = metric_value(text, "pipeswarm_e2e_delivered_total")
            commands = metric_value(text, "pipeswarm_command_latency_seconds_count")
            return text if delivered > 0 and commands > 0 else None

        wait_for(live, 40, "e2e deliveries and a command at the exporter")
        # one malformed message: the bridge's DLQ counter gets its first series
        client = mqtt_client(stack, client_id="observe-dlq")
        client.publish("sensors/bad/coordinates", b"not json", qos=1).wait_for_publish(5)
        client.disconnect()
        client.loop_stop()

        metrics_text = _get(exporter, 5).decode()
        tab = f"{web}/?tab=e2e"
        dump = _chromium(tab, tmp, "--dump-dom")
        screenshot = tmp / "webui.png"
        shot = _chromium(tab, tmp, f"--screenshot={screenshot}", "--window-size=1400,900")
        # Chromium takes seconds or tens of seconds on a busy box: the run lasts until
        # here, whatever that took, and then stops the way a user stops it in the UI
        assert master.poll() is None, "the run ended before the web UI was read\n" + procs.log(
            "master"
        )
        _get(urllib.request.Request(f"{web}/stop", data=b"", method="POST"), 10)
        wait_for(lambda: list(results.glob("*/e2e.json")), 60, "e2e.json after the stop")
        os.kill(master.pid, signal.SIGTERM)  # --autoquit only follows --run-time's own stop
        master.wait(30)
        end = time.time()
        run_ids = [
            r["metric"]["run"]
            for r in Observed("", start, end, prom, results, "", "", screenshot).query_range(
                'pipeswarm_run_info{mode="distributed"}'
            )
            if r["metric"].get("run")
        ]
        assert len(run_ids) == 1, run_ids
        yield Observed(
            run_id=run_ids[0],
            start=start,
            end=end,
            prometheus=prom,
            results=results / run_ids[0],
            metrics_text=metrics_text,
            dom=dump.stdout.decode(errors="replace"),
            screenshot=screenshot,
            chromium=[
                f"dump-dom rc={dump.returncode}: {dump.stderr.decode(errors='replace')[-800:]}",
                f"screenshot rc={shot.returncode}: {shot.stderr.decode(errors='replace')[-800:]}",
            ],
        )
    finally:
        procs.stop_all()


def test_every_dashboard_query_returns_series(observed):
    empty = []
    queries = list(panel_queries())
    assert len(queries) > 40
    for q in queries:
        expr = substitute(q.expr, observed.run_id)
        if not observed.query_range(expr):
            empty.append(f"{q.dashboard} / {q.panel}: {expr}")
    assert not empty, "queries without series:\n" + "\n".join(empty)


def test_every_dashboard_variable_query_returns_values(observed):
    for q in variable_queries():
        expr = substitute(label_values_as_promql(q.expr), observed.run_id)
        assert observed.query_range(expr), f"{q.dashboard} {q.panel}: {expr}"


def test_every_used_name_is_documented_and_was_ingested(observed):
    body = json.loads(_get(f"{observed.prometheus}/api/v1/label/__name__/values", 10))
    ingested = set(body["data"])
    docs = documented()
    for name, where in sorted(used_names().items()):
        assert base_name(name, docs), f"{name} ({sorted(where)}) is not in docs/metrics.md"
        assert name in ingested, f"{name} ({sorted(where)}) was never emitted during the run"


def test_promtool_check_metrics_on_a_live_scrape(observed):
    assert "pipeswarm_e2e_latency_seconds_bucket" in observed.metrics_text
    result = subprocess.run(
        [_tool("promtool"), "check", "metrics"],
        input=observed.metrics_text,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_saw_the_runs_figures(observed):
    """What Prometheus scraped agrees with the run's own e2e.json."""
    e2e = json.loads((observed.results / "e2e.json").read_text())
    path, entry = next(iter(e2e["paths"].items()))
    series = observed.query_range(
        f'max_over_time(pipeswarm_e2e_delivered_total{{run="{observed.run_id}", path="{path}"}}[1h])'
    )
    scraped = max(float(v) for _t, v in series[0]["values"])
    assert 0 < scraped <= entry["totals"]["delivered"]
    hops = observed.query_range(
        f'count by (hop) (pipeswarm_e2e_latency_seconds_count{{path="{path}"}})'
    )
    assert {s["metric"]["hop"] for s in hops} >= {
        "total",
        "service",
        "mqtt",
        "kafka",
        "redis",
        "push",
    }
    workers = observed.query_range('max(locust_workers{state="running"})')
    assert max(float(v) for _t, v in workers[0]["values"]) == 1


def test_webui_tab_shows_e2e_rows(observed):
    dom = observed.dom
    assert "End to end" in dom, observed.chromium
    rows = []
    for tr in re.findall(r"<tr[^>]*>(.*?)</tr>", dom, re.S):
        cells = [re.sub(r"<[^>]+>", "", td) for td in re.findall(r"<td[^>]*>(.*?)</td>", tr, re.S)]
        if len(cells) == 11 and "→" in cells[0]:
            rows.append(cells)
    totals = [r for r in rows if r[1] == "total"]
    assert totals, f"no e2e rows in the DOM: {observed.chromium}\n{dom[-2000:]}"
    path, _hop, count, p50, _p90, _p95, p99, top, lost, _dup, _reorder = totals[0]
    assert int(count) > 0 and 0 < float(p50) <= float(p99) <= float(top)
    assert lost.isdigit()
    assert {r[1] for r in rows if r[0] == path} >= {"total", "service", "push"}
    assert observed.screenshot.stat().st_size > 10_000, observed.chromium
    if not DOCS_SCREENSHOT.exists() or os.environ.get("PIPESWARM_UPDATE_SCREENSHOT"):
        DOCS_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(observed.screenshot, DOCS_SCREENSHOT)
