"""N idle MqttDevice connections in one process: RSS per connection and connects/s.

Starts its own Mosquitto on a free port (``max_connections -1`` in the generated
config; it inherits this process's open-files limit, 20,000 here, enough for
19,000 clients plus its own files), then one child process
(``bench._workload idle``) spawns N devices (``--device-interval 0``: connect,
subscribe to the command topic, keep alive) and prints:

- ``kb_per_device``: (RSS after all connected - RSS before the first) / N, both
  after ``gc.collect()``; it includes the Locust user (greenlet, user object)
  and the MQTT client. ``--bare`` measures a Locust user alone, for comparison.
- ``connects_per_s``: N / seconds from start to the N-th CONNACK (spawning included).
- ``idle_cpu_pct``: the process's CPU while every device idles (keepalive ticker).

One destination port gives ~28k local ports (``ip_local_port_range``), and
TIME_WAIT from a previous run can still hold some: ``--sources K`` spreads the
devices over 127.0.0.2 .. 127.0.0.(K+1) (``MqttDevice.source_addresses``).

    .venv/bin/python -m bench idle-devices                      # 19,000 devices
    .venv/bin/python -m bench idle-devices --devices 5000 --bare
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

from bench._broker import Mosquitto

__all__ = ["main"]


def _child(args: argparse.Namespace, impl: str, port: int) -> dict[str, object]:
    cmd = [
        sys.executable,
        "-m",
        "bench._workload",
        "idle",
        "--impl",
        impl,
        "--port",
        str(port),
        "--devices",
        str(args.devices),
        "--sources",
        str(args.sources),
        "--spawn-rate",
        str(args.spawn_rate),
        "--timeout",
        str(args.timeout),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout + 120)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode != 0 or not lines:
        sys.stderr.write(out.stderr[-3000:])
        raise SystemExit(f"bench: the idle-devices child failed (exit {out.returncode})")
    result: dict[str, object] = json.loads(lines[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench idle-devices",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--devices", type=int, default=19000)
    p.add_argument(
        "--sources", type=int, default=0, help="spread over K source addresses 127.0.0.2.."
    )
    p.add_argument("--spawn-rate", type=float, default=20000.0)
    p.add_argument("--timeout", type=float, default=120.0, help="bound on the connect phase")
    p.add_argument(
        "--bare", action="store_true", help="also measure a bare Locust user, for comparison"
    )
    args = p.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if args.devices + 200 > hard:
        p.error(f"{args.devices} devices need more open files than this process may have ({hard})")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by both children

    print(
        f"# idle-devices  {time.strftime('%Y-%m-%d %H:%M')}  {platform.node()}  {os.cpu_count()} cores  "
        f"devices={args.devices} sources={args.sources or 1}  open-files limit {hard}"
    )
    with Mosquitto(nofile=hard) as broker:
        print(f"# mosquitto pid {broker.pid} port {broker.port}")
        res = _child(args, "ours", broker.port)
    print(
        f"  MqttDevice: {res['connected']:,} connected, {res['subscribed']:,} subscribed, {res['failures']} failures; "
        f"{res['kb_per_device']:.1f} KB per device (RSS +{res['rss_delta_mb']:.0f} MB); "
        f"{res['connects_per_s']:,.0f} connects/s ({res['seconds_to_connect']:.1f} s, of which "
        f"Locust spent {res['seconds_to_spawn']:.1f} s creating users); "
        f"idle CPU {res['idle_cpu_pct']:.1f} %"
    )
    print(
        f"  CONNACK time ms (p50/p90/p99/max): {'/'.join(str(v) for v in res['connect_ms'].values())}"
    )  # type: ignore[union-attr]
    if args.bare:
        bare = _child(args, "bare", 0)
        print(
            f"  bare Locust user: {bare['kb_per_device']:.1f} KB per user "
            f"(so the MQTT client itself is ~{float(res['kb_per_device']) - float(bare['kb_per_device']):.1f} KB)"
        )
    ok = res["connected"] == args.devices and float(res["kb_per_device"]) <= 20.0  # type: ignore[arg-type]
    print("target: all connected at <= 20 KB each:", "met" if ok else "NOT met")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
