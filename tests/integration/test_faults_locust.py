"""``--faults`` for real: a headless Locust run on a stack behind Toxiproxy, parts failing under load.

One stack of the module's own (``up --fault-proxies``), one ~30 s CI-sized run
of ``locustfiles/fault_tolerance.py`` with a process kill, a frozen consumer, a
network partition (Toxiproxy) and a graceful broker restart, the process
actions done by ``--fault-command`` calling our own CLI. Then the files, the
console table and the report; the embedded stack's own executor; a bad schedule.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.stack import Stack
from report.cli import main as analyze
from telemetry._fault_actions import StackExecutor
from telemetry._fault_spec import parse_faults
from tests.integration.test_slo_locust import LOCUSTFILE as LOOPBACK
from tests.swarm import ROOT, locust_command, locust_env, private_master

pytestmark = pytest.mark.integration

SCHEDULE = "kill:bridge@3s+2s, pause:consumer@8s+2s, partition:kafka@13s+2s, restart:mosquitto@18s"


@pytest.fixture(scope="module")
def proxied(tmp_path_factory):
    """A stack with Toxiproxy in front of Mosquitto, Kafka and Redis (4 partitions)."""
    s = Stack.with_ports(
        auto=True, state_dir=tmp_path_factory.mktemp("faults"), partitions=4, fault_proxies=True
    )
    s.start()
    try:
        yield s
    finally:
        # the fault commands (`python -m pipeline start bridge`, `restart mosquitto`) started
        # new PIDs, recorded only in stack.json: stop those too, or they outlive the test
        if (s.state_dir / "stack.json").exists():
            Stack.load(s.state_dir).stop()
        s.stop(remove_data=True)


def test_each_kind_of_fault_under_load_loses_nothing_and_is_reported(proxied, tmp_path):
    out = tmp_path / "results"
    cli = f"{sys.executable} -m pipeline --state-dir {proxied.state_dir} {{action}} {{component}}"
    cmd = locust_command(
        proxied, out, "locustfiles/fault_tolerance.py", "-u", "23", "-r", "23", "-t", "26s",
        "--faults", SCHEDULE, "--fault-command", cli, "--toxiproxy-url", proxied.urls["toxiproxy"],
        "--e2e-drain", "4",
    )  # fmt: skip
    done = subprocess.run(
        cmd, cwd=ROOT, env=locust_env(tmp_path), capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip
    log = done.stdout + done.stderr
    # Locust exits 1 because the devices' "connection lost" events are failures
    assert done.returncode in (0, 1) and "Traceback" not in log, log[-4000:]
    doc = json.loads((out / "faults.json").read_text())
    assert doc["format"] == "pipeswarm-faults/1" and doc["executor"] == "command"
    phases = {p["action"]: p for p in doc["phases"]}
    assert set(phases) == {"kill", "pause", "partition", "restart"}
    for p in doc["phases"]:
        assert p["ok"] and p["started_s"] is not None and p["ended_s"] is not None, p
    assert [s["command"].split()[-2:] for s in phases["kill"]["steps"]] == [
        ["kill", "bridge"], ["start", "bridge"],
    ]  # fmt: skip
    assert [s["step"] for s in phases["partition"]["steps"]] == ["partition", "heal"]
    assert phases["pause"]["ended_s"] - phases["pause"]["started_s"] >= 2.0
    # nothing lost, per phase and in the run; delivery came back after each phase
    e2e = json.loads((out / "e2e.json").read_text())
    totals = [p["totals"] for p in e2e["paths"].values()]
    assert e2e["published"]["messages"] > 2000
    assert sum(t["lost"] for t in totals) == 0, totals
    assert len(doc["figures"]) == 4
    for f in doc["figures"]:
        assert f["lost"] == 0 and f["published"] > 0 and f["first_delivery_s"] is not None, f
    assert "pipeswarm faults:" in log and "partition:kafka@13s+2s" in log
    # the stack is whole again
    assert set(Stack.load(proxied.state_dir).status(window=0).values()) == {"healthy"}
    # the report's Faults section
    assert analyze([str(out), "-q"]) == 0
    html = (out / "report.html").read_text()
    assert 'id="faults"' in html and "restart:mosquitto@18s" in html
    assert "| `kill:bridge@3s+2s` |" in (out / "summary.md").read_text()


def test_the_embedded_stack_executor_pauses_and_resumes_a_part(proxied):
    (fault,) = parse_faults("pause:consumer@0s+1s")
    executor = StackExecutor(proxied.state_dir)
    assert executor.do(fault).ok
    assert Stack.load(proxied.state_dir).status(window=0)["consumer"] == "paused"
    undo = executor.undo(fault)
    assert undo is not None and undo.ok and undo.command.endswith("resume consumer")
    assert Stack.load(proxied.state_dir).status(window=0)["consumer"] == "healthy"


def test_a_schedule_past_the_end_of_the_run_stops_locust_with_one_sentence(tmp_path):
    state = tmp_path / "no-stack"
    cmd = [sys.executable, "-m", "locust", "-f", "locustfiles/fault_tolerance.py", "--headless",
           "-t", "10s", "--prometheus-port", "0", "--results-dir", str(tmp_path / "r")]  # fmt: skip
    env = {**locust_env(tmp_path), "PIPESWARM_STATE_DIR": str(state)}
    done = subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2, (done.stdout + done.stderr)[-2000:]
    assert done.stderr.strip().splitlines()[-1] == (
        "pipeswarm: --faults 'kill:bridge@20s+10s': the phase ends at 30 s but the run stops "
        "at 10 s (-t); move it earlier or run longer."
    )
    assert "Traceback" not in done.stderr and not Path(tmp_path / "r").exists()


def test_with_workers_the_master_alone_runs_the_schedule(tmp_path):
    """Two worker processes, a self-contained locustfile: each action is run exactly once."""
    (tmp_path / "loopback.py").write_text(LOOPBACK)
    actions = tmp_path / "actions.log"
    cmd = [sys.executable, "-m", "locust", "-f", "loopback.py", "--headless", "-u", "4", "-r", "4",
           "-t", "5s", "--processes", "2", *private_master(), "--prometheus-port", "0",
           "--results-dir", str(tmp_path / "r"), "--e2e-drain", "0.5",
           "--faults", "kill:bridge@1s+1s, restart:gateway@2s",
           "--fault-command", f"echo {{action}} {{component}} >> {actions}"]  # fmt: skip
    env = {**locust_env(tmp_path), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert sorted(actions.read_text().splitlines()) == [
        "kill bridge", "restart gateway", "start bridge",
    ]  # fmt: skip
    doc = json.loads((tmp_path / "r" / "faults.json").read_text())
    assert [p["ok"] for p in doc["phases"]] == [True, True]
