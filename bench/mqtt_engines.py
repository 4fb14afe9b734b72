"""Which engine for MqttDevice: paho-mqtt on gevent's hub, or the lean hand-written client.

Both run the same driver in a child process (``bench._engines``: one message per
publish call, no batching, an acknowledgement = one Locust request event) against
one Mosquitto this script starts; a ``mosquitto_sub`` counts what arrives. Then
both hold ``--idle-clients`` idle connections for RSS per connection. No Locust
users here: the figures are the engines' own cost.

    .venv/bin/python -m bench mqtt-engines
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

from bench._broker import Mosquitto
from bench.mqtt_ratio import measure

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench mqtt-engines", description=__doc__)
    p.add_argument("--clients", type=int, default=100)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--idle-clients", type=int, default=5000)
    args = p.parse_args(argv)
    if args.seconds > 60 or args.clients > 2000 or args.idle_clients > 19000:
        p.error("keep runs bounded: --seconds <= 60, --clients <= 2000, --idle-clients <= 19000")
    print(
        f"# mqtt-engines  {time.strftime('%Y-%m-%d %H:%M')}  {platform.node()}  {os.cpu_count()} cores"
    )
    print("| engine | QoS | msg/s | generator CPU | msg/s per core |")
    print("|---|---|---|---|---|")
    with Mosquitto() as broker:
        for qos in (0, 1):
            for engine in ("paho", "lean"):
                cmd = [
                    sys.executable,
                    "-m",
                    "bench._engines",
                    "--engine",
                    engine,
                    "--mode",
                    "throughput",
                ]
                cmd += [
                    "--qos",
                    str(qos),
                    "--port",
                    str(broker.port),
                    "--clients",
                    str(args.clients),
                ]
                cmd += ["--seconds", str(args.seconds)]
                rate, cpu, _total, _raw = measure(broker.port, qos, cmd)
                print(
                    f"| {engine} | {qos} | {rate:,.0f} | {cpu * 100:.0f} % | {rate / cpu:,.0f} |",
                    flush=True,
                )
        print()
        print("| engine | idle connections | KB per connection | connects/s | idle CPU |")
        print("|---|---|---|---|---|")
        for engine in ("paho", "lean"):
            cmd = [sys.executable, "-m", "bench._engines", "--engine", engine, "--mode", "idle"]
            cmd += ["--port", str(broker.port), "--clients", str(args.idle_clients)]
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
            if not lines:
                sys.stderr.write(out.stderr[-2000:])
                raise SystemExit(f"bench: the {engine} idle child failed")
            r = json.loads(lines[-1])
            print(
                f"| {engine} | {r['connected']:,} | {r['kb_per_client']:.1f} | {r['connects_per_s']:,.0f} "
                f"| {r['idle_cpu_pct']:.1f} % |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
