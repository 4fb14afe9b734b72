"""The chart's master and worker command lines, run as rendered: the worker joins, users run.

The containers' ``locust`` arguments and the ConfigMap's files come from ``helm template``;
only what Kubernetes would provide is stood in for: the ConfigMap mount (a folder), the
master Service's DNS name (127.0.0.1) and the image's /app (this checkout).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pipeline._procs import free_port
from tests.helpers import wait_for
from tests.unit.test_helm import CHART, container, helm, objects, tools  # noqa: F401 - a fixture

# the tools fixture builds helm and kubeconform when `make setup` has not
pytestmark = pytest.mark.timeout(1200)

ROOT = Path(__file__).resolve().parents[2]
LOCUSTFILE = """
from locust import User, constant, task

import users  # noqa: F401  (every pipeswarm option, as a real scenario has)


class Clock(User):
    wait_time = constant(0.05)

    @task
    def tick(self):
        self.environment.events.request.fire(
            request_type="TICK", name="tick", response_time=1.0, response_length=0,
            exception=None, context={},
        )
"""


def _get(url: str, data: bytes | None = None) -> str | None:
    try:
        with urllib.request.urlopen(url, data=data, timeout=2) as response:  # noqa: S310 - loopback
            return response.read().decode()
    except OSError:
        return None


def test_rendered_master_and_worker_form_a_swarm(tools, tmp_path):  # noqa: F811
    web, master_port, metrics = free_port(), free_port(), free_port()
    (tmp_path / "scenario.py").write_text(LOCUSTFILE)
    sets = [
        f"master.webPort={web}", f"master.masterPort={master_port}", f"master.prometheusPort={metrics}",
        "master.extraArgs={--web-host=127.0.0.1,--master-bind-host=127.0.0.1}",
        "options.prometheus-host=127.0.0.1", "options.device-interval=0.25",
        f"options.results-dir={tmp_path}/results",
    ]  # fmt: skip
    done = helm(tools, "template", "swarm", str(CHART), *[a for s in sets for a in ("--set", s)],
                "--set-file", f"locustfileContent={tmp_path / 'scenario.py'}")  # fmt: skip
    assert done.returncode == 0, done.stderr
    objs = objects(done.stdout)
    mount = tmp_path / "etc-pipeswarm"  # the ConfigMap, as the pods see it
    mount.mkdir()
    for name, text in objs[("ConfigMap", "swarm-pipeswarm")]["data"].items():
        (mount / name).write_text(text)

    def argv(role: str) -> list[str]:
        c = container(objs, role)
        args = [a.replace("/etc/pipeswarm", str(mount)) for a in c["command"] + c["args"]]
        args = [a.replace("=swarm-pipeswarm-master", "=127.0.0.1") for a in args]  # the Service
        return [sys.executable, "-m", *args]

    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOCUST_", "PIPESWARM_"))}
    env["PYTHONPATH"] = str(ROOT)
    procs = []
    try:
        for role in ("master", "worker"):
            log = (tmp_path / f"{role}.log").open("wb")
            procs.append(
                subprocess.Popen(argv(role), cwd=tmp_path, env=env, stdout=log, stderr=log)
            )

        def scrape(metric: str, **labels: str) -> float:
            """The sum of the master exporter's samples ``metric`` with ``labels``."""
            for p, role in zip(procs, ("master", "worker"), strict=True):
                assert p.poll() is None, (tmp_path / f"{role}.log").read_text()[-2000:]
            text = _get(f"http://127.0.0.1:{metrics}/metrics") or ""
            return sum(
                s.value
                for family in text_string_to_metric_families(text)
                for s in family.samples
                if s.name == metric and labels.items() <= s.labels.items()
            )

        wait_for(lambda: scrape("locust_workers", state="ready") == 1, 40, "the worker joined")
        assert _get(f"http://127.0.0.1:{web}/") is not None  # the readiness probe's path

        started = _get(f"http://127.0.0.1:{web}/swarm", b"user_count=2&spawn_rate=2")
        assert started is not None and '"success": true' in started, started
        wait_for(
            lambda: scrape("locust_requests_total", name="tick") > 0, 30, "ticks from the worker"
        )
        assert scrape("locust_workers", state="running") == 1
    finally:
        for p in procs:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(p.pid, signal.SIGKILL)
                p.wait(5)
