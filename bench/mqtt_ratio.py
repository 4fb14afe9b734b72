"""Our MqttDevice against Locust's own MqttUser: messages/s per fully used generator core.

In one invocation, against one Mosquitto this script starts on a free port:
for each QoS, each implementation runs in a child process of its own
(``bench._workload``: Locust's ``Environment`` + ``LocalRunner``, the same user
count, the same ~190-byte envelope payload), while a separate ``mosquitto_sub``
(C, its own process) counts what really arrives. The generator's CPU
(user+system, psutil in the generator process) over the measured window turns
arrivals into messages/s per fully used core::

    per_core = received_in_window / window_s / (generator_cpu_s / window_s)

Both sides saturate: ``MqttUser`` publishes in a ``constant(0)`` task loop, our
devices run an interval far below what one process can serve (``--interval``),
so they are always behind schedule and send their backlog in batches of up to
``--max-batch`` messages per write. ``--max-batch 1`` shows the per-message cost
without batching.

    .venv/bin/python -m bench mqtt-ratio                   # QoS 0 and 1, 100 users, 15 s each
    .venv/bin/python -m bench mqtt-ratio --qos 1 --seconds 5 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from bench._broker import Mosquitto

__all__ = ["main", "measure", "run_one", "Counter"]


class Counter:
    """``mosquitto_sub`` on the device topics; counts arrivals (one ``x`` line each)."""

    def __init__(self, port: int, qos: int) -> None:
        exe = shutil.which("mosquitto_sub")
        if exe is None:
            raise SystemExit("bench: mosquitto_sub is not installed (package mosquitto-clients).")
        self.count = 0
        self.proc = subprocess.Popen(
            [
                exe,
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-q",
                str(qos),
                "-t",
                "sensors/+/coordinates",
                "-F",
                "x",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                return
            self.count += chunk.count(b"\n")

    def wait_ready(self, port: int, timeout: float = 10.0) -> None:
        """Publish probes (``mosquitto_pub``) until one arrives: the subscription is in place."""
        pub = shutil.which("mosquitto_pub") or "mosquitto_pub"
        probe = [
            pub,
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-t",
            "sensors/probe/coordinates",
            "-m",
            "probe",
        ]
        deadline = time.monotonic() + timeout
        while self.count == 0:
            if time.monotonic() > deadline:
                raise SystemExit("bench: the counting subscriber received nothing")
            subprocess.run(probe, check=False, capture_output=True, timeout=5)
            time.sleep(0.1)
        time.sleep(0.2)

    def settle(self, quiet_s: float = 1.0, timeout: float = 30.0) -> int:
        """Wait until nothing arrived for ``quiet_s`` (the broker's queues drained)."""
        deadline = time.monotonic() + timeout
        last = -1
        while time.monotonic() < deadline:
            if self.count == last:
                break
            last = self.count
            time.sleep(quiet_s)
        return self.count

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            self.proc.wait(10)
        self._thread.join(5)


@dataclass
class Result:
    impl: str
    qos: int
    rate: float
    per_core: float
    cpu_frac: float
    received_total: int
    published: int
    raw: dict[str, Any] = field(default_factory=dict)


def measure(port: int, qos: int, cmd: list[str]) -> tuple[float, float, int, dict[str, Any]]:
    """Run a generator child (``START``/``END`` lines, then JSON) under a counting subscriber.

    Returns (received msg/s in the window, generator CPU fraction, received in
    total after the broker drained, the child's JSON).
    """
    counter = Counter(port, qos)
    try:
        counter.wait_ready(port)
        base = counter.count
        env = {**os.environ, "PYTHONWARNINGS": "ignore"}
        child = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
        assert child.stdout is not None
        at_start = at_end = 0
        raw: dict[str, Any] = {}
        for line in child.stdout:
            if line.startswith("START"):
                at_start = counter.count
            elif line.startswith("END"):
                at_end = counter.count
            elif line.startswith("{"):
                raw = json.loads(line)
        if child.wait(120) != 0 or not raw:
            raise SystemExit(
                f"bench: generator {' '.join(cmd[2:5])} failed (exit {child.returncode})"
            )
        total = counter.settle() - base
    finally:
        counter.stop()
    window = raw["wall_s"]
    return (at_end - at_start) / window, raw["cpu_s"] / window, total, raw


def run_one(port: int, impl: str, qos: int, args: argparse.Namespace) -> Result:
    cmd = [sys.executable, "-m", "bench._workload", "ratio", "--impl", impl]
    cmd += [
        "--qos",
        str(qos),
        "--port",
        str(port),
        "--users",
        str(args.users),
        "--seconds",
        str(args.seconds),
    ]
    cmd += ["--interval", str(args.interval), "--max-batch", str(args.max_batch)]
    rate, cpu_frac, total, raw = measure(port, qos, cmd)
    published = raw["ledger_published"] if impl == "ours" else raw["publish_entries"]
    return Result(
        impl, qos, rate, rate / cpu_frac if cpu_frac else 0.0, cpu_frac, total, published, raw
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench mqtt-ratio",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--qos", type=int, nargs="+", default=[0, 1], choices=(0, 1, 2))
    p.add_argument("--users", type=int, default=100)
    p.add_argument("--seconds", type=float, default=15.0, help="measured window per run (bounded)")
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs per implementation and QoS; the median is reported",
    )
    p.add_argument(
        "--interval", type=float, default=1e-5, help="our devices' interval (tiny = saturate)"
    )
    p.add_argument(
        "--max-batch", type=int, default=32, help="our devices' messages per write when behind"
    )
    p.add_argument("--impl", nargs="+", default=["theirs", "ours"], choices=("theirs", "ours"))
    args = p.parse_args(argv)
    if args.seconds > 120 or args.users > 5000 or args.repeat > 10:
        p.error("keep runs bounded: --seconds <= 120, --users <= 5000, --repeat <= 10")

    print(
        f"# mqtt-ratio  {time.strftime('%Y-%m-%d %H:%M')}  {platform.node()}  {os.cpu_count()} cores  "
        f"users={args.users} window={args.seconds:g}s repeat={args.repeat}"
    )
    table: dict[tuple[str, int], list[Result]] = {}
    with Mosquitto() as broker:
        print(f"# mosquitto pid {broker.pid} port {broker.port}")
        for qos in args.qos:
            for _ in range(args.repeat):
                for impl in args.impl:
                    res = run_one(broker.port, impl, qos, args)
                    table.setdefault((impl, qos), []).append(res)
                    print(
                        f"  qos{qos} {impl:6s} {res.rate:9.0f} msg/s received  cpu {res.cpu_frac * 100:5.1f}%  "
                        f"-> {res.per_core:9.0f} msg/s per core   (published {res.published}, "
                        f"received {res.received_total})",
                        flush=True,
                    )
    print()
    print("| QoS | MqttUser msg/s | per core | MqttDevice msg/s | per core | ratio per core |")
    print("|---|---|---|---|---|---|")
    ok = True
    compared = 0
    for qos in args.qos:
        theirs = table.get(("theirs", qos), [])
        ours = table.get(("ours", qos), [])
        if not theirs or not ours:
            continue
        compared += 1
        t_rate = statistics.median(r.rate for r in theirs)
        t_core = statistics.median(r.per_core for r in theirs)
        o_rate = statistics.median(r.rate for r in ours)
        o_core = statistics.median(r.per_core for r in ours)
        ratio = o_core / t_core if t_core else float("inf")
        ok = ok and ratio >= 3
        print(
            f"| {qos} | {t_rate:,.0f} | {t_core:,.0f} | {o_rate:,.0f} | {o_core:,.0f} | **{ratio:.1f}x** |"
        )
    print()
    if compared:
        print("target: >= 3x per core at every QoS:", "met" if ok else "NOT met")
    else:
        print("no ratio: run both --impl theirs and ours to compare")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
