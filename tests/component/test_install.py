"""pipeswarm as an installed package: the wheel, the `pipeswarm` command, a worker
started from another directory that gets its locustfile from the master (``-f -``)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from pipeline._procs import free_port

ROOT = Path(__file__).resolve().parents[2]

LOCUSTFILE = """
from locust import User, constant, task

from users import settings  # from the installed package, not a checkout


class Idle(User):
    wait_time = constant(0.05)

    @task
    def tick(self):
        settings(self.environment)
        self.environment.events.request.fire(
            request_type="T", name="tick", response_time=1, response_length=0,
            exception=None, context={},
        )
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The wheel built from this checkout, installed (without dependencies) into a folder."""
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(ROOT)],
        check=True, timeout=300, cwd=out,
    )  # fmt: skip
    (wheel,) = out.glob("pipeswarm-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "report/templates/report.html.j2" in names and "pipeline/jars/pom.xml" in names
    assert {"telemetry/static/e2e_charts.html", "telemetry/static/e2e_tab.js"} <= set(names)
    assert not any(n.startswith(("tests/", "bench/")) for n in names)
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
        check=True, timeout=300,
    )  # fmt: skip
    return target


def run_env(target: Path) -> dict[str, str]:
    # only the installed copy on the path: the checkout is not the working directory
    return {**os.environ, "PYTHONPATH": str(target), "PIPESWARM_STATE_DIR": str(target / "none")}


def test_the_pipeswarm_command_lists_every_option_in_help(installed, tmp_path):
    out = subprocess.run(
        [str(installed / "bin" / "pipeswarm"), "-f", str(ROOT / "locustfiles/pipeline.py"), "--help"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, env=run_env(installed),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    import users.shapes  # noqa: F401 - registers every load-side group
    from telemetry.options import GROUPS

    flags = [o.flag for g in GROUPS for o in g.options]
    assert len(flags) >= 37 and {"--mqtt-url", "--slo", "--shape", "--e2e-in-stats"} <= set(flags)
    for flag in flags:
        assert f"  {flag} " in out.stdout, flag
    for group in GROUPS:
        assert f"\n{group.title}:\n" in out.stdout, group.title


def test_a_worker_from_another_directory_runs_the_locustfile_the_master_sends(installed, tmp_path):
    (tmp_path / "master").mkdir()
    (tmp_path / "worker").mkdir()
    locustfile = tmp_path / "master" / "idle.py"
    locustfile.write_text(LOCUSTFILE)
    port = free_port()
    pipeswarm = str(installed / "bin" / "pipeswarm")
    common = ["--master-port", str(port), "--prometheus-port", "0"]
    master = subprocess.Popen(
        [pipeswarm, "-f", str(locustfile), "--master", "--headless", "--expect-workers", "1",
         "-u", "2", "-r", "2", "-t", "4s", "--master-bind-host", "127.0.0.1",
         "--master-bind-port", str(port), "--prometheus-port", "0", "--csv", "run"],
        cwd=tmp_path / "master", env=run_env(installed),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    worker = subprocess.Popen(
        [pipeswarm, "-f", "-", "--worker", "--master-host", "127.0.0.1", *common],
        cwd=tmp_path / "worker", env=run_env(installed),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        master_out, _ = master.communicate(timeout=90)
        worker_out, _ = worker.communicate(timeout=30)
    finally:
        for p in (master, worker):
            if p.poll() is None:
                p.kill()
                p.wait()
    assert master.returncode == 0, master_out[-3000:]
    assert worker.returncode == 0, worker_out[-3000:]
    rows = {r["Name"]: r for r in csv.DictReader((tmp_path / "master/run_stats.csv").open())}
    assert int(rows["tick"]["Request Count"]) > 20


def test_a_top_level_name_another_distribution_owns_stops_pipeswarm_in_one_sentence(
    monkeypatch, capsys
):
    from telemetry import cli

    monkeypatch.setattr(
        cli, "packages_distributions", lambda: {"pipeline": ["pipeswarm", "ci-pipeline"]}
    )
    assert cli.clashes() == {"pipeline": ["ci-pipeline"]}
    with pytest.raises(SystemExit) as stop:
        cli.main()
    assert stop.value.code == 2
    assert capsys.readouterr().err == (
        "pipeswarm: another installed distribution uses the same top-level module: "
        "pipeline (also from ci-pipeline); install pipeswarm in a virtualenv of its own.\n"
    )
