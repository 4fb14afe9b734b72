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
    .venv/bin/python -m bench idle-devices --devices 50000 --processes 3 --sources 4

Past one process: ``--processes P`` runs P children at once, each with its
own Mosquitto (a process holds under 20,000 sockets here, the broker as much
as the generator: the open-files hard limit, which root cannot raise), and
sums them; ``--keepalive`` and ``--idle-seconds`` make the idle window span
keepalives, and the brokers' own RSS and CPU are reported.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import subprocess
import sys
import time

from bench._broker import Mosquitto

__all__ = ["main"]


def _command(args: argparse.Namespace, impl: str, port: int, devices: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "bench._workload",
        "idle",
        "--impl",
        impl,
        "--port",
        str(port),
        "--devices",
        str(devices),
        "--sources",
        str(args.sources),
        "--spawn-rate",
        str(args.spawn_rate),
        "--timeout",
        str(args.timeout),
        "--idle-seconds",
        str(args.idle_seconds),
        "--keepalive",
        str(args.keepalive),
    ]


def _child(args: argparse.Namespace, impl: str, port: int) -> dict[str, object]:
    cmd = _command(args, impl, port, args.devices)
    timeout = args.timeout + args.idle_seconds + 120
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
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
    p.add_argument("--processes", type=int, default=1, help="children, each with its own broker")
    p.add_argument("--keepalive", type=int, default=60, help="MQTT keepalive of the devices (s)")
    p.add_argument("--idle-seconds", type=float, default=5.0, help="the idle window measured")
    args = p.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if args.processes > 1:
        return _many(args, hard)
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


def _many(args: argparse.Namespace, hard: int) -> int:
    """``--processes P``: P children at once, each against a Mosquitto of its own."""
    import psutil

    per = -(-args.devices // args.processes)
    if per + 200 > hard or args.processes > 8 or args.idle_seconds > 300:
        raise SystemExit(
            f"bench: {per} devices per process exceed the open-files limit ({hard}); "
            "use more --processes (at most 8, --idle-seconds <= 300)"
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    print(
        f"# idle-devices  {time.strftime('%Y-%m-%d %H:%M')}  {platform.node()}  {os.cpu_count()} cores  "
        f"devices={args.devices} processes={args.processes} ({per} each, one Mosquitto each) "
        f"sources={args.sources or 1}  keepalive={args.keepalive}s  open-files limit {hard}"
    )
    with contextlib.ExitStack() as stack:
        brokers = [stack.enter_context(Mosquitto(nofile=hard)) for _ in range(args.processes)]
        procs = [
            subprocess.Popen(_command(args, "ours", b.port, per), stdout=subprocess.PIPE, text=True)
            for b in brokers
        ]
        watched = [psutil.Process(b.pid) for b in brokers]
        results = []
        for proc in procs:
            out, _ = proc.communicate(timeout=args.timeout + args.idle_seconds + 120)
            lines = [ln for ln in out.splitlines() if ln.startswith("{")]
            if proc.returncode or not lines:
                raise SystemExit(f"bench: an idle-devices child failed (exit {proc.returncode})")
            results.append(json.loads(lines[-1]))
        broker_rss = sum(w.memory_info().rss for w in watched)
    connected = sum(r["connected"] for r in results)
    failures = sum(r["failures"] for r in results)
    rss = sum(r["rss_delta_mb"] for r in results) * 2**20
    slowest = max(r["seconds_to_connect"] for r in results)
    print(
        f"  MqttDevice: {connected:,} connected, {sum(r['subscribed'] for r in results):,} subscribed, "
        f"{failures} failures (connection lost or refused) over a {args.idle_seconds:g} s idle window; "
        f"{rss / max(connected, 1) / 1024:.1f} KB per device; {connected / slowest:,.0f} connects/s "
        f"({slowest:.1f} s); generator idle CPU {sum(r['idle_cpu_pct'] for r in results):.1f} % "
        f"over {args.processes} processes"
    )
    print(
        f"  Mosquitto x{args.processes}: RSS {broker_rss / 2**20:.0f} MB "
        f"({broker_rss / max(connected, 1) / 1024:.1f} KB per connection)"
    )
    for r in results:
        print(
            f"    child: {json.dumps({k: r[k] for k in ('connected', 'failures', 'kb_per_device', 'connects_per_s', 'idle_cpu_pct', 'connect_ms')})}"
        )
    ok = connected >= args.devices and failures == 0
    print(
        "target: all connected, none lost, at <= 16 KB each:",
        "met" if ok and rss / max(connected, 1) / 1024 <= 16 else "NOT met",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
