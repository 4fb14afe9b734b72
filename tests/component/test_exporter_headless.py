"""The exporter in a headless local run of a locustfile that merely imports telemetry."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from pipeline._procs import free_port
from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parents[2]


def _scrape(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.read().decode()
    except OSError:
        return None


def test_headless_local_run_serves_metrics(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    argv = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        "tests/component/headless_locustfile.py",
        "--headless",
        "--users=2",
        "--spawn-rate=2",
        "--run-time=6s",
        "--prometheus-host=127.0.0.1",
        f"--results-dir={tmp_path}/{{run_id}}",
        "--e2e-drain=0",
    ]
    env = dict(os.environ, PIPESWARM_PROMETHEUS_PORT=str(port))  # the environment variable works
    log = tmp_path / "locust.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:

        def ticking() -> str | None:
            assert proc.poll() is None, log.read_text()[-2000:]
            text = _scrape(url)
            return text if text and 'locust_requests_total{name="tick"' in text else None

        text = wait_for(ticking, 20, "tick requests at the exporter")
        families = {f.name: f for f in text_string_to_metric_families(text)}
        requests = families["locust_requests"].samples
        assert requests[0].labels["request_type"] == "TICK" and requests[0].value > 0
        hist = families["locust_response_time_seconds"]
        assert any(s.name.endswith("_count") and s.value > 0 for s in hist.samples)
        assert families["locust_users"].samples[0].value == 2
        info = families["pipeswarm_run_info"].samples[0].labels
        assert info["mode"] == "local" and info["scenario"] == "headless_locustfile"
        promtool = shutil.which("promtool")
        assert promtool, "promtool is missing: `make setup` installs Debian's prometheus package"
        check = subprocess.run(
            [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
        )
        assert check.returncode == 0, check.stdout + check.stderr
        assert proc.wait(40) == 0, log.read_text()[-2000:]
        assert _scrape(url) is None  # stopped with Locust
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(10)
