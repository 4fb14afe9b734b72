"""PUBACK time and schedule lag of MqttDevice well below capacity (no saturation).

Starts a Mosquitto on a free port and runs, one after the other, each
``DEVICESxINTERVAL`` load in a child process (``bench._workload latency``): the
average PUBACK time (Locust's entry; its percentiles are whole milliseconds,
too coarse here) and the schedule lag ``tp - t0`` from the ledger's HDR
histogram (µs). The lag floor is the event loop's timer granularity: libev
waits in ``epoll_wait``, whose timeout is whole milliseconds.

    .venv/bin/python -m bench mqtt-latency
    .venv/bin/python -m bench mqtt-latency --loads 1x0.001 1000x0.1
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

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench mqtt-latency", description=__doc__)
    p.add_argument(
        "--loads", nargs="+", default=["1x0.001", "100x0.1", "1000x0.1"], help="DEVICESxINTERVAL"
    )
    p.add_argument("--seconds", type=float, default=10.0)
    args = p.parse_args(argv)
    if args.seconds > 60:
        p.error("keep runs bounded: --seconds <= 60")
    print(
        f"# mqtt-latency  {time.strftime('%Y-%m-%d %H:%M')}  {platform.node()}  {os.cpu_count()} cores  QoS 1"
    )
    print(
        "| devices x interval | msg/s | PUBACK avg ms | PUBACK max ms | lag p50 / p90 / p99 / p99.9 µs |"
    )
    print("|---|---|---|---|---|")
    with Mosquitto() as broker:
        for load in args.loads:
            devices, interval = load.split("x")
            cmd = [sys.executable, "-m", "bench._workload", "latency", "--port", str(broker.port)]
            cmd += ["--devices", devices, "--interval", interval, "--seconds", str(args.seconds)]
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.seconds + 60)
            lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
            if not lines:
                sys.stderr.write(out.stderr[-2000:])
                raise SystemExit(f"bench: the {load} child failed")
            r = json.loads(lines[-1])
            lag = " / ".join(str(v) for v in r["lag_us"].values())
            print(
                f"| {devices} x {interval} s | {r['rate']:,.0f} | {r['puback_avg_ms']:.3f} | "
                f"{r['puback_max_ms']:.1f} | {lag} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
