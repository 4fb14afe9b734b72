"""Run a real headless Locust scenario against a stack, as a user would, and read its results."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from pipeline import auth
from pipeline._procs import free_port

ROOT = Path(__file__).resolve().parents[1]


def locust_command(stack, out: Path, locustfile: str, *extra: str) -> list[str]:
    """``python -m locust -f <locustfile> --headless`` aimed at `stack`, results into `out`."""
    urls = stack.urls
    return [
        sys.executable, "-m", "locust", "-f", locustfile, "--headless", "--only-summary",
        "--mqtt-url", urls["mqtt"], "--gateway-url", urls["gateway"],
        "--kafka-bootstrap", urls["kafka"], "--redis-url", urls["redis"],
        "--results-dir", str(out), "--csv", str(out / "locust"), "--html", str(out / "locust.html"),
        "--prometheus-port", "0", f"--jwt-secret={auth.read_secret(stack.secret_file)}",
        *(("--mqtt-secret-file", str(stack.secret_file)) if stack.mqtt_auth else ()), *extra,
    ]  # fmt: skip


def private_master() -> tuple[str, ...]:
    """Master options for ``--processes``/``--master`` runs: a free port on loopback only.

    Locust's default 5557 is shared by every run on the machine: another test's
    workers would join this master (seen here: a demo picked up two strangers).
    """
    port = str(free_port())
    return ("--master-bind-host", "127.0.0.1", "--master-bind-port", port,
            "--master-host", "127.0.0.1", "--master-port", port)  # fmt: skip


def locust_env(tmp: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PATH": os.environ.get("PATH", "") + ":/usr/sbin:/sbin",
        "PIPESWARM_STATE_DIR": str(tmp / "no-stack-file"),  # only the URLs given on the CLI
    }


def run_locust(stack, out: Path, locustfile: str, *extra: str, timeout: float = 180) -> None:
    """Run to completion; fail the test with Locust's output when it exits non-zero."""
    done = subprocess.run(
        locust_command(stack, out, locustfile, *extra), cwd=ROOT, env=locust_env(out.parent),
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]


def e2e(out: Path) -> dict[str, Any]:
    return json.loads((out / "e2e.json").read_text())


def locust_stats(out: Path) -> dict[tuple[str, str], dict[str, str]]:
    """Rows of Locust's own ``locust_stats.csv`` keyed by (Type, Name)."""
    with open(out / "locust_stats.csv", newline="") as f:
        return {(row["Type"], row["Name"]): row for row in csv.DictReader(f)}
