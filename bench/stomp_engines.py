"""Which engine for StompSubscriber: ours, wsproto, or stomp.py on websocket-client.

One frame source (``bench._stomp_source``, its own process: MESSAGE frames as
fast as a socket takes them, fresh trace envelopes) and each engine in a child
process of its own (``bench._stomp_engines``) with a real ledger: every
MESSAGE goes through ``Subscriber.received`` and its ``E2E`` request events
into Locust's stats, as in a run. Frames/s per core = frames received / the
child's CPU seconds over the window. Then each engine holds ``--idle-clients``
idle subscriptions (RSS per connection, connects/s), and so do whole
``StompSubscriber`` users.

    PATH=$PATH:/usr/sbin .venv/bin/python -m bench stomp-engines
    .venv/bin/python -m bench stomp-engines --repeat 3 --idle-clients 10000
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator

__all__ = ["main", "source"]

ENGINES = ("ours", "wsproto", "stomppy")


@contextlib.contextmanager
def source(seconds: float) -> Iterator[int]:
    """Start the frame source on a free port; yield the port; stop it by its PID."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench._stomp_source", "--seconds", str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("PORT "):
            raise SystemExit("bench: the frame source did not start")
        yield int(line.split()[1])
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def child(args: list[str], timeout: float) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-m", "bench._stomp_engines", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode != 0 or not lines:
        sys.stderr.write(out.stderr[-2000:])
        raise SystemExit(f"bench: the engine child {' '.join(args[:2])} failed")
    result: dict[str, float] = json.loads(lines[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench stomp-engines",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--clients", type=int, default=10, help="connections per engine")
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--repeat", type=int, default=1, help="runs per engine (median reported)")
    p.add_argument("--idle-clients", type=int, default=2000)
    p.add_argument("--engines", default=",".join(ENGINES))
    p.add_argument("--no-ledger", action="store_true", help="bodies dropped: the engines alone")
    p.add_argument(
        "--e2e-hop-events",
        choices=("true", "false"),
        default="true",
        help="false: one E2E request event per message, not one per hop (as the Locust option)",
    )
    args = p.parse_args(argv)
    if args.seconds > 60 or args.clients > 1000 or args.idle_clients > 19000 or args.repeat > 5:
        p.error("keep runs bounded: --seconds <= 60, --clients <= 1000, --idle-clients <= 19000")
    engines = [e for e in args.engines.split(",") if e]
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the children inherit it
    print(
        f"# stomp-engines  {time.strftime('%Y-%m-%d %H:%M')}  {platform.node()}  "
        f"{os.cpu_count()} cores  clients={args.clients} window={args.seconds:g}s"
    )
    print("| engine | frames/s | CPU | **frames/s per core** | µs per frame |")
    print("|---|---|---|---|---|")
    bound = args.seconds * args.repeat * len(engines) * 3 + 300
    with source(bound) as port:
        for engine in engines:
            runs = []
            for _ in range(args.repeat):
                r = child(
                    [
                        "--engine",
                        engine,
                        "--mode",
                        "throughput",
                        "--port",
                        str(port),
                        "--clients",
                        str(args.clients),
                        "--seconds",
                        str(args.seconds),
                        "--fair-yield",
                        *(["--no-ledger"] if args.no_ledger else []),
                        "--hop-events",
                        args.e2e_hop_events,
                    ],
                    timeout=args.seconds + 120,
                )
                runs.append(
                    (r["frames"] / r["cpu_s"], r["frames"] / r["wall_s"], r["cpu_s"] / r["wall_s"])
                )
            per_core = statistics.median(x[0] for x in runs)
            rate = statistics.median(x[1] for x in runs)
            cpu = statistics.median(x[2] for x in runs)
            print(
                f"| {engine} | {rate:,.0f} | {cpu * 100:.0f} % | **{per_core:,.0f}** | {1e6 / per_core:.1f} |",
                flush=True,
            )
        if args.idle_clients:
            print()
            print("| engine | idle subscriptions | KB each | connects/s | idle CPU |")
            print("|---|---|---|---|---|")
            for engine in [e for e in engines if e != "wsproto"] + ["users"]:
                r = child(
                    [
                        "--engine",
                        engine,
                        "--mode",
                        "idle",
                        "--port",
                        str(port),
                        "--clients",
                        str(args.idle_clients),
                    ],
                    timeout=300,
                )
                name = "StompSubscriber users (ours)" if engine == "users" else engine
                print(
                    f"| {name} | {r['connected']:,} of {r['clients']:,} | {r['kb_per_client']:.1f} "
                    f"| {r['connects_per_s']:,.0f} | {r['idle_cpu_pct']:.1f} % |",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
