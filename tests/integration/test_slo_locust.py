"""``locust --slo`` for real: a headless Locust process whose exit code follows the objectives.

An integration test: it runs Locust itself, local and as a master with two
worker processes. The locustfile is self-contained (no network): each user
publishes into the telemetry ledger and receives its own message 1 ms later, so
the run has real end-to-end figures and results files without any broker.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from report.cli import main as analyze
from tests.swarm import private_master

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

LOCUSTFILE = """
import os
import time
from locust import User, constant, task
import telemetry
from telemetry import envelope

class Loopback(User):
    wait_time = constant(0.02)

    def on_start(self):
        self.ledger = telemetry.get_ledger(self.environment)
        # id() alone repeats across forked worker processes: two workers' users would
        # share a device id and the master would count one's sequence as the other's loss
        self.device = "dev-%d-%d" % (os.getpid(), id(self))
        self.sub = self.ledger.subscriber("loop", [self.device])
        self.seq = 0

    @task
    def publish(self):
        if self.ledger.draining:
            return
        self.seq += 1
        t0 = time.time_ns()
        self.ledger.published(self.device, self.seq, t0, t0)
        body = envelope.build(self.device, 1.0, 2.0, run=self.ledger.run_id, seq=self.seq, t0=t0)
        self.sub.received(body, t0 + 1_000_000)
        self.environment.events.request.fire(
            request_type="LOOP", name="publish", response_time=1.0, response_length=len(body),
            exception=None, context={},
        )
"""


def _locust(
    tmp_path: Path, slo_text: str, *extra: str
) -> tuple[subprocess.CompletedProcess[str], Path]:
    (tmp_path / "loopback.py").write_text(LOCUSTFILE)
    (tmp_path / "slo.yaml").write_text(slo_text)
    out = tmp_path / "results"
    cmd = [
        sys.executable, "-m", "locust", "-f", "loopback.py", "--headless", "-u", "2", "-r", "2",
        "-t", "3s", "--only-summary", "--slo", "slo.yaml", "--results-dir", str(out),
        "--e2e-drain", "0.5", "--csv", str(out / "locust"), "--html", str(out / "locust.html"),
        "--prometheus-port", "0", *extra,
    ]  # fmt: skip
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    done = subprocess.run(
        cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    return done, out


@pytest.mark.parametrize("processes", [None, "2"], ids=["local", "master+2 workers"])
def test_a_failed_objective_makes_locust_exit_1(tmp_path, processes, capsys):
    extra = ("--processes", processes, *private_master()) if processes else ()
    done, out = _locust(tmp_path, "e2e_p99_ms: 0.5\nloss_ratio_max: 0\n", *extra)
    log = done.stdout + done.stderr
    assert done.returncode == 1, log[-3000:]
    assert "SLO slo.yaml: FAIL (1 of 2 failed)" in log, log[-3000:]
    assert "FAIL  e2e_p99_ms" in log and "PASS  loss_ratio_max" in log
    assert log.count("SLO slo.yaml:") == 1  # checked once, on the master (or the local process)
    for name in ("run.json", "e2e.json", "timeseries.csv", "locust_stats.csv", "locust.html"):
        assert (out / name).is_file(), name
    # analyze.py reaches the same verdict from the files
    assert analyze([str(out), "--slo", str(tmp_path / "slo.yaml"), "-q"]) == 1
    capsys.readouterr()


def test_met_objectives_leave_the_exit_code_0(tmp_path, capsys):
    done, out = _locust(
        tmp_path, "e2e_p99_ms: 50\nloss_ratio_max: 0\nrequests:\n  publish: {p95_ms: 5}\n"
    )
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    assert "SLO slo.yaml: PASS" in log
    capsys.readouterr()
    verdict = analyze([str(out), "--slo", str(tmp_path / "slo.yaml"), "--no-charts"])
    printed = capsys.readouterr()
    # the same verdict from the files; if not, both tables side by side say which figure
    assert verdict == 0, f"{printed.out}{printed.err}\n--- Locust's:\n{log[-3000:]}"


def test_a_bad_slo_file_stops_locust_before_the_test(tmp_path):
    done, out = _locust(tmp_path, "e2e_p99_ms: 50\np99: 3\n")
    assert done.returncode == 2
    assert "pipeswarm: SLO file slo.yaml: unknown key 'p99'" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (out / "e2e.json").exists()
