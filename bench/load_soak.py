"""Soak the load side: Locust's master and workers at the demo's load for minutes.

``bench soak`` watches the pipeline's processes; this watches the generator's.
It starts the embedded stack on free ports (or uses the one in --state-dir),
runs ``--locustfile`` (the demo's, ``locustfiles/pipeline.py``) headless with
``--processes`` workers for ``--minutes``, and prints, once a minute, the RSS
and CPU of the master and of each worker, then the run's deliveries and loss.

    PATH=$PATH:/usr/sbin .venv/bin/python -m bench load-soak --minutes 10

The verdict: every Locust process's RSS after the first minute (warm-up) grows
by less than ``--max-growth-mb`` over the rest of the run, and nothing is lost.
It found hdrh's histogram <-> encoder cycle, which the load side's garbage
freezer (``telemetry/_gc.py``) kept for the whole run: the master grew by
~22 MB a minute at this load (``telemetry/hdr.py: _acyclic``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.soak import bench_stack

__all__ = ["main"]

REPO = Path(__file__).resolve().parent.parent


def _locust(args: argparse.Namespace, stack_dir: Path, results: Path) -> subprocess.Popen[bytes]:
    from pipeline._procs import free_port

    master = str(free_port())
    cmd = [
        str(Path(sys.executable).with_name("locust")),
        "-f", args.locustfile, "--headless",
        "-u", str(args.users), "-r", "20", "-t", f"{int(args.minutes * 60)}s",
        "--processes", str(args.processes),
        "--results-dir", str(results),
        "--master-bind-host", "127.0.0.1", "--master-bind-port", master, "--master-port", master,
        "--only-summary",
    ]  # fmt: skip
    env = {**os.environ, "PIPESWARM_STATE_DIR": str(stack_dir)}
    with open(results / "locust.log", "wb") as log:  # the child has its own copy
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)


def _sample(master: Any, last: dict[int, float], dt: float) -> dict[str, tuple[float, float]]:
    """``{"master"|"worker N": (RSS MB, CPU % of a core)}``, CPU since the last sample
    (``master``: the ``psutil.Process`` of Locust's master)."""
    import psutil

    procs = [("master", master)] + [
        (f"worker {i + 1}", c) for i, c in enumerate(sorted(master.children(), key=lambda c: c.pid))
    ]
    row = {}
    for name, p in procs:
        try:
            t = p.cpu_times()
            cpu = t.user + t.system
            rss = p.memory_info().rss / 2**20
        except psutil.Error:
            continue
        row[name] = (rss, 100 * (cpu - last.get(p.pid, cpu)) / dt)
        last[p.pid] = cpu
    return row


def main(argv: list[str] | None = None) -> int:
    import psutil

    p = argparse.ArgumentParser(
        prog="python -m bench load-soak",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--locustfile", default="locustfiles/pipeline.py")
    p.add_argument("--users", type=int, default=53, help="Locust users (the demo's 53)")
    p.add_argument("--processes", type=int, default=2, help="Locust worker processes")
    p.add_argument("--state-dir", type=Path, help="use the stack recorded there instead")
    p.add_argument("--max-growth-mb", type=float, default=20.0)
    args = p.parse_args(argv)
    if not 2 <= args.minutes <= 120 or args.users > 5000 or args.processes > 8:
        # the verdict compares minute 1 with a later one
        p.error("keep runs bounded: 2 <= --minutes <= 120, --users <= 5000, --processes <= 8")
    print(
        f"# load-soak  {time.strftime('%Y-%m-%d %H:%M')}  {platform.node()}  "
        f"{args.locustfile} -u {args.users} --processes {args.processes}  {args.minutes:g} min"
    )
    results = Path(tempfile.mkdtemp(prefix="load-soak-"))
    rows: list[dict[str, tuple[float, float]]] = []
    with bench_stack(args.state_dir) as stack:
        proc = _locust(args, stack.state_dir, results)
        try:
            master = psutil.Process(proc.pid)
            last: dict[int, float] = {}
            t_last = time.monotonic()
            time.sleep(5)  # the workers forked and connected
            _sample(master, last, 1.0)
            minute = 0
            while proc.poll() is None:
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    now = time.monotonic()
                    row = _sample(master, last, now - t_last)
                    t_last = now
                    minute += 1
                    rows.append(row)
                    cells = "  ".join(
                        f"{n} {rss:.1f}MB {cpu:.0f}%" for n, (rss, cpu) in row.items()
                    )
                    print(f"minute {minute:>3}  {cells}", flush=True)
        finally:
            if proc.poll() is None:  # interrupted: stop the master (its workers follow) by PID
                proc.terminate()
                proc.wait(30)
        rc = proc.returncode
    found = sorted(results.glob("**/e2e.json"))
    paths = json.loads(found[0].read_text())["paths"] if found else {}
    print(f"\nlocust exit {rc}; results in {results}")
    for path, entry in paths.items():
        t = entry["totals"]
        print(f"  {path:<14} delivered {t['delivered']:>9,}  lost {t['lost']:>5,}")
    lost = sum(int(e["totals"]["lost"]) for e in paths.values()) if paths else -1
    growth = {
        name: rows[-1][name][0] - rows[0][name][0]
        for name in rows[0]
        if len(rows) > 1 and name in rows[-1]
    }
    worst = max(growth.items(), key=lambda kv: kv[1], default=("-", 0.0))
    flat = len(rows) > 1 and worst[1] < args.max_growth_mb
    print(
        f"RSS after minute 1 grows < {args.max_growth_mb:g} MB: "
        f"{'PASS' if flat else 'FAIL'} (worst {worst[0]} {worst[1]:+.1f} MB)"
    )
    print(f"0 lost: {'PASS' if lost == 0 else 'FAIL'} ({lost})")
    return 0 if flat and lost == 0 and rc == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
