"""How long ``analyze.py`` takes on a one-hour run (target: under 10 s).

    python -m bench.analyze_speed                 # build the synthetic run in a temp dir, time 3 runs
    python -m bench.analyze_speed --keep DIR      # keep the folder (and its report) in DIR

The synthetic run is what a one-hour, two-worker test writes: 3,600 seconds of
``timeseries.csv`` (one row per second and path, two paths: 7,200 rows), an
``e2e.json`` whose HDR histograms hold 10,000,000 recorded values in total
(every hop of both paths, schedule lag, loop lag), and Locust's ``--csv`` files
with a 3,600-row history. Histograms are real ``telemetry.hdr`` histograms,
encoded as ``telemetry`` writes them; the files go through ``telemetry.results``.

Each timing is a fresh ``python analyze.py`` process (imports included), charts on.
"""

from __future__ import annotations

import argparse
import csv
import math
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from telemetry import results
from telemetry.hdr import Histogram

SECONDS = 3600
PATHS = ("mqtt→stomp", "mqtt→ws")
HOPS = {
    "total": 4.0,
    "service": 3.8,
    "mqtt": 0.6,
    "kafka": 2.2,
    "redis": 0.4,
    "push": 0.5,
}  # median ms
TOTAL_VALUES = 10_000_000
DEVICES = 1000
ROOT = Path(__file__).resolve().parent.parent


def _histogram(rng: random.Random, median_ms: float, values: int) -> Histogram:
    """``values`` samples of a log-normal latency, recorded as 4,000 weighted points."""
    h = Histogram()
    points = 4000
    for i in range(points):
        count = values // points + (1 if i < values % points else 0)
        value_us = int(median_ms * 1000 * math.exp(rng.gauss(0, 0.6)))
        h.hdr.record_value(max(1, value_us), count)
    return h


def _entry(h: Histogram) -> dict[str, Any]:
    return dict(h.summary(), hdr=h.encode())


def build(folder: Path, seed: int = 7) -> int:
    """Write the synthetic run into ``folder``; return the number of recorded values."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    run_id = "20260101-000000-1h00"
    start = 1_767_225_600  # 2026-01-01 00:00:00 UTC
    per_hist = TOTAL_VALUES // (len(PATHS) * len(HOPS) + 1 + 3)
    recorded = 0
    rate = 1000  # messages per second per path
    delivered = rate * SECONDS
    paths: dict[str, Any] = {}
    for path in PATHS:
        latency = {}
        for hop, median in HOPS.items():
            latency[hop] = _entry(_histogram(rng, median, per_hist))
            recorded += per_hist
        paths[path] = {
            "src": "mqtt", "subscriber": path.split("→")[1], "subscribers": 10, "modes": ["stream"],
            "totals": {
                "published": delivered, "expected": delivered, "delivered": delivered - 12,
                "duplicated": 3, "reordered": 40, "late": 1, "foreign_run": 0, "out_of_scope": 0,
                "lost": 12, "lost_estimated": 0, "devices_expected": DEVICES, "devices_seen": DEVICES,
                "devices_complete": DEVICES - 4, "devices_incomplete": 4, "devices_never_seen": 0,
            },
            "snapshot": {"batches": 0, "updates": 0, "repeats": 0, "conflated": 0, "regressions": 0},
            "latency": latency,
            "worst_devices": {
                "lost": [{"device_id": f"robot-{i:04d}", "subscriber": "w0/1", "lost": 4 - i} for i in range(3)],
                "max_total_us": [{"device_id": f"robot-{i:04d}", "subscriber": "w0/1",
                                  "max_total_us": 900_000 - i * 1000} for i in range(10)],
                "max_staleness_us": [],
            },
        }  # fmt: skip
    sched = _histogram(rng, 0.2, per_hist)
    workers = {f"vm_{i:032x}": _histogram(rng, 1.0, per_hist) for i in range(2)}
    master = _histogram(rng, 0.3, per_hist)
    recorded += per_hist * 4
    e2e = {
        "format": "pipeswarm-e2e/1", "run_id": run_id, "grace_s": 5.0, "drain_s": 3.0,
        "histogram": {"unit": "us", "lowest_us": 1, "highest_us": 3_600_000_000,
                      "significant_digits": 3, "encoding": "HdrHistogram V2 compressed, base64"},
        "complete": True, "workers_reported": sorted(workers),
        "published": {"messages": delivered, "devices": DEVICES, "by_src": {"mqtt": delivered}},
        "ignored": {"foreign_run": 0, "untraced": 0, "reports_of_other_runs": 0},
        "paths": paths, "batch_push": {}, "subscribers": [],
        "schedule_lag": _entry(sched),
        "loop_lag": {**{w: _entry(h) for w, h in workers.items()}, "master": _entry(master)},
    }  # fmt: skip
    results.write_json(folder / "e2e.json", e2e)

    rows = []
    for sec in range(SECONDS):
        cpu = [55 + 10 * math.sin(sec / 300 + i) + rng.random() * 5 for i in range(2)]
        for path in PATHS:
            p50 = 4 + math.sin(sec / 600)
            rows.append({
                "epoch_s": start + sec, "elapsed_s": sec, "path": path, "published": rate,
                "delivered": rate, "e2e_p50_ms": round(p50, 3), "e2e_p95_ms": round(p50 * 2.1, 3),
                "e2e_p99_ms": round(p50 * 3.4, 3), "e2e_max_ms": round(p50 * 9, 3),
                "lost_so_far": sec // 600, "users": 1010, "workers": 2,
                "cpu_max_percent": round(max(cpu), 1), "cpu_mean_percent": round(sum(cpu) / 2, 1),
                "cpu_by_worker": f"0:{cpu[0]:.1f};1:{cpu[1]:.1f}",
            })  # fmt: skip
    results.write_timeseries(folder / "timeseries.csv", rows)

    results.write_json(folder / "run.json", {
        "format": "pipeswarm-run/1", "run_id": run_id, "mode": "distributed",
        "started_at": "2026-01-01T00:00:00+00:00", "ended_at": "2026-01-01T01:00:03+00:00",
        "started_epoch_s": float(start), "ended_epoch_s": start + SECONDS + 3.0,
        "duration_s": SECONDS + 3.0, "locustfile": "locustfiles/pipeline.py", "scenario": "pipeline",
        "host": None, "user_classes": ["MqttDevice", "StompSubscriber"],
        "user_classes_count": {"MqttDevice": 1000, "StompSubscriber": 10}, "user_count": 1010,
        "peak_users": 1010, "worker_count": 2,
        "workers": [{"index": i, "id": w, "host": "vm", "user_classes_count": {"MqttDevice": 500,
                     "StompSubscriber": 5}} for i, w in enumerate(workers)],
        "hosts": ["vm"], "master": {"hostname": "vm", "platform": "Linux", "cpu_count": 2, "argv": []},
        "cross_host_timing": False, "versions": results.versions(), "options": {"run_time": 3600},
        "e2e": {"grace_s": 5.0, "drain_s": 3.0, "complete": True, "paths": list(PATHS)},
        "files": {"e2e": "e2e.json", "timeseries": "timeseries.csv"},
    })  # fmt: skip

    pct_cols = ["50%", "66%", "75%", "80%", "90%", "95%", "98%", "99%", "99.9%", "99.99%", "100%"]
    head = ["Type", "Name", "Request Count", "Failure Count", "Median Response Time",
            "Average Response Time", "Min Response Time", "Max Response Time",
            "Average Content Size", "Requests/s", "Failures/s", *pct_cols]  # fmt: skip
    with open(folder / "locust_stats.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(head)
        for typ, name, n in (("MQTT", "publish:1:sensors/+/coordinates", delivered),
                             ("MQTT", "command:orin/+/command", 3600),
                             ("HTTP", "POST /api/commands/{id}", 3600),
                             ("E2E", "mqtt→stomp", delivered), ("E2E", "mqtt→ws", delivered),
                             ("", "Aggregated", 3 * delivered + 7200)):  # fmt: skip
            w.writerow([typ, name, n, 0, 4, 4.2, 0.3, 900, 120, n / SECONDS, 0,
                        4, 5, 5, 6, 7, 9, 12, 14, 40, 200, 900])  # fmt: skip
    with open(folder / "locust_stats_history.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            ["Timestamp", "User Count", "Type", "Name", "Requests/s", "Failures/s", *pct_cols]
        )
        for sec in range(SECONDS):
            w.writerow([start + sec, 1010, "", "Aggregated", 3000, 0, *([4] * len(pct_cols))])
    for name, cols in (("failures", ["Method", "Name", "Error", "Occurrences"]),
                       ("exceptions", ["Count", "Message", "Traceback", "Nodes"])):  # fmt: skip
        (folder / f"locust_{name}.csv").write_text(",".join(cols) + "\n")
    return recorded


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.analyze_speed", description=__doc__.split("\n")[0]
    )
    p.add_argument("--keep", type=Path, help="build the run here and keep it")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp) / "run"
        t = time.perf_counter()
        recorded = build(folder)
        built_s = time.perf_counter() - t
        rows = sum(1 for _ in open(folder / "timeseries.csv")) - 1
        print(f"synthetic one-hour run: {SECONDS:,} s, {rows:,} timeseries rows, "
              f"{recorded:,} recorded values in the HDR histograms (built in {built_s:.1f} s)")  # fmt: skip
        timings = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            done = subprocess.run(
                [sys.executable, str(ROOT / "analyze.py"), str(folder), "-q"],
                cwd=ROOT, capture_output=True, text=True, check=False,
            )  # fmt: skip
            timings.append(time.perf_counter() - t)
            if done.returncode != 0:
                print(
                    f"analyze.py failed ({done.returncode}): {done.stderr.strip()}", file=sys.stderr
                )
                return 1
        best, median = min(timings), statistics.median(timings)
        verdict = "OK" if median < 10 else "TOO SLOW"
        print(f"analyze.py, one-hour run: median {median:.2f} s, best {best:.2f} s "
              f"of {args.repeat} (target < 10 s: {verdict})")  # fmt: skip
    return 0 if median < 10 else 1


if __name__ == "__main__":
    raise SystemExit(main())
