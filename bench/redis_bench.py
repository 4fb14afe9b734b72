"""The pipeline's Redis operations from Locust (``RedisUser``) and from ``redis-benchmark``.

Starts a redis-server of its own on a free port (or uses ``--redis-url``), runs
``locustfiles/redis_bench.py`` headless with ``--users`` users for ``--seconds``,
then ``redis-benchmark`` (Debian's redis-tools, C, the server's own tool) with
as many clients and ``--operations`` requests per command, and prints both: the
gap is what the Python generator costs, so its ceiling is known before a
Redis figure from a pipeswarm run is trusted.

    .venv/bin/python -m bench redis --users 10 --seconds 20 --operations 100000

The Locust run's results folder (``--results-dir``, default ``results/redis-<time>``)
also gets ``redis_benchmark.json`` (both sides per operation) and ``report.html``
with a "Redis: Locust vs redis-benchmark" section (``analyze.py``).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "pipeswarm:bench:"
#: (label, Locust request name, redis-benchmark command)
OPS = [
    ("SET with TTL", "SET latest", ["SET", f"{PREFIX}latest:bench-0001", "x" * 90, "EX", "3600"]),
    ("GET", "GET latest", ["GET", f"{PREFIX}latest:bench-0001"]),
    ("HINCRBY", "HINCRBY counts", ["HINCRBY", f"{PREFIX}counts", "bench-0001", "1"]),
    ("XADD MAXLEN ~", "XADD stream", ["XADD", f"{PREFIX}stream", "MAXLEN", "~", "100000", "*", "m", "x" * 90]),
]  # fmt: skip


FORMAT = "pipeswarm-redis/1"


def run_locust(url: str, users: int, seconds: int, out: Path) -> dict[str, dict[str, str]]:
    """Locust's stats rows by name; the run's results (run.json, e2e.json…) go to ``out``."""
    cmd = [
        sys.executable, "-m", "locust", "-f", str(ROOT / "locustfiles/redis_bench.py"),
        "--headless", "-u", str(users), "-r", str(users), "-t", f"{seconds}s",
        "--redis-url", url, "--csv", str(out / "locust"), "--only-summary",
        "--prometheus-port", "0", "--results-dir", str(out),
    ]  # fmt: skip
    subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True, timeout=seconds + 120)
    with (out / "locust_stats.csv").open() as f:
        return {row["Name"]: row for row in csv.DictReader(f)}


def run_redis_benchmark(
    url: str, clients: int, operations: int, command: list[str]
) -> dict[str, str]:
    parts = urlsplit(url)
    cmd = [
        "redis-benchmark", "-h", parts.hostname or "127.0.0.1", "-p", str(parts.port or 6379),
        "-c", str(clients), "-n", str(operations), "--csv", *command,
    ]  # fmt: skip
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600).stdout
    rows = list(csv.DictReader(io.StringIO(out)))
    return rows[-1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--users", type=int, default=10, help="Locust users = redis-benchmark clients")
    p.add_argument("--seconds", type=int, default=20, help="Locust run time")
    p.add_argument(
        "--operations", type=int, default=100_000, help="redis-benchmark requests per command"
    )
    p.add_argument("--redis-url", help="a server of your own (default: one started here)")
    p.add_argument(
        "--results-dir",
        type=Path,
        help="where the run's results, redis_benchmark.json and report.html go "
        "(default results/redis-<UTC time>)",
    )
    args = p.parse_args(argv)
    out = args.results_dir or ROOT / "results" / time.strftime("redis-%Y%m%d-%H%M%S", time.gmtime())
    out.mkdir(parents=True, exist_ok=True)
    stack = None
    if args.redis_url is None:
        from pipeline.stack import Stack

        stack = Stack.with_ports(auto=True, state_dir=Path(tempfile.mkdtemp(prefix="bench-redis-")))
        stack.start_service("redis")
    url = args.redis_url or stack.urls["redis"]  # type: ignore[union-attr]
    try:
        stats = run_locust(url, args.users, args.seconds, out)
        native = {
            label: run_redis_benchmark(url, args.users, args.operations, cmd)
            for label, _, cmd in OPS
        }
    finally:
        if stack is not None:
            stack.stop(remove_data=True)
    print(f"Redis at {url}: {args.users} Locust users (1 process, {os.cpu_count()} cores) "
          f"vs redis-benchmark with {args.users} clients")  # fmt: skip
    print(f"{'operation':<16} {'locust ops/s':>12} {'avg ms':>7} {'p99 ms':>7}   "
          f"{'redis-benchmark ops/s':>21} {'p50 ms':>7} {'p99 ms':>7}")  # fmt: skip
    for label, name, _ in OPS:
        s, n = stats[name], native[label]
        print(
            f"{label:<16} {float(s['Requests/s']):>12,.0f} {float(s['Average Response Time']):>7.2f} {s['99%']:>7}   "
            f"{float(n['rps']):>21,.0f} {n['p50_latency_ms']:>7} {n['p99_latency_ms']:>7}"
        )
    batch = stats["MULTI batch"]
    print(
        f"{'MULTI batch':<16} {float(batch['Requests/s']):>12,.0f} "
        f"{float(batch['Average Response Time']):>7.2f} "
        f"{batch['99%']:>7}   (10 x SET+HINCRBY+XADD per request; no redis-benchmark equivalent)"
    )
    print("(Locust's percentiles are whole milliseconds; its average is exact)")
    agg = stats["Aggregated"]
    print(
        f"Locust in total: {float(agg['Requests/s']):,.0f} requests/s, failures {agg['Failure Count']}"
    )
    doc = comparison(stats, native, args.users, args.operations)
    (out / "redis_benchmark.json").write_text(json.dumps(doc, indent=2) + "\n")
    from report.cli import main as analyze

    analyze([str(out), "--quiet"])
    print(f"Results: {out}/  (redis_benchmark.json, report.html)")
    return 0


def comparison(
    stats: dict[str, dict[str, str]], native: dict[str, dict[str, str]], users: int, operations: int
) -> dict[str, Any]:
    """``redis_benchmark.json``: per operation, Locust's figures beside redis-benchmark's."""
    rows = []
    for label, name, _ in OPS:
        s, n = stats[name], native[label]
        locust_rps, native_rps = float(s["Requests/s"]), float(n["rps"])
        rows.append(
            {
                "operation": label,
                "locust_per_s": locust_rps,
                "locust_avg_ms": float(s["Average Response Time"]),
                "locust_p99_ms": float(s["99%"]),
                "locust_failures": int(s["Failure Count"]),
                "native_per_s": native_rps,
                "native_p50_ms": float(n["p50_latency_ms"]),
                "native_p99_ms": float(n["p99_latency_ms"]),
                "ratio": native_rps / locust_rps if locust_rps else None,
            }
        )
    return {
        "format": FORMAT,
        "users": users,
        "operations": operations,
        "cpu_count": os.cpu_count(),
        "rows": rows,
    }


if __name__ == "__main__":
    raise SystemExit(main())
