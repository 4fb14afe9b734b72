"""HTTP vs MQTT ingest through the whole embedded stack: ``locustfiles/http_vs_mqtt.py``.

Starts its own stack on free ports (or uses a running one with --state-dir), runs
the comparison headless in one Locust process (MqttDevice QoS 1 and HttpDevice
fleets taking turns at the same rate, to the same STOMP subscribers; a rising
sweep with --sweep-steps), then prints each phase and the ratios. The results
folder (``comparison.json``, ``comparison.csv``, the usual files) is kept::

    .venv/bin/python -m bench http-vs-mqtt --sweep-steps 6 --compare-devices 25
    .venv/bin/python analyze.py <results folder>      # the report's comparison section

Every option after the known ones goes to Locust as it is (``--device-interval``,
``--compare-seconds``, ``--sweep-factor``, …).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.soak import bench_stack
from telemetry.ingest_compare import format_summary

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--state-dir", type=Path, help="use the stack recorded there instead")
    p.add_argument("--results", type=Path, help="results folder (default: a new temporary one)")
    args, locust_args = p.parse_known_args(argv)
    out = args.results or Path(tempfile.mkdtemp(prefix="http-vs-mqtt-"))
    with bench_stack(args.state_dir) as stack:
        urls = stack.urls
        cmd = [
            sys.executable, "-m", "locust", "-f", "locustfiles/http_vs_mqtt.py", "--headless",
            "--only-summary", "--mqtt-url", urls["mqtt"], "--gateway-url", urls["gateway"],
            "--kafka-bootstrap", urls["kafka"], "--redis-url", urls["redis"],
            "--results-dir", str(out), "--csv", str(out / "locust"), "--prometheus-port", "0",
            *locust_args,
        ]  # fmt: skip
        done = subprocess.run(cmd, cwd=ROOT, env=os.environ, check=False)
    path = out / "comparison.json"
    if done.returncode != 0 or not path.exists():
        print(f"bench: the comparison did not finish (exit {done.returncode})", file=sys.stderr)
        return 1
    doc = json.loads(path.read_text())
    print(format_summary(doc))
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
