"""Sustained messages/s through the whole embedded stack: MQTT QoS 1 in, WebSocket out.

Starts its own stack on free ports (or uses a running one with --state-dir),
then offers QoS 1 traffic at rising rates, each step for --seconds (60 by
default: a 10 s window hides a backlog that is still growing), to --subscribers
raw WebSocket subscribers (``bench.soak``'s publisher and subscriber, each in
its own process). A step is *sustained* when every published message arrived
at every subscriber and p99 (t0 -> received) stayed under --p99-limit-ms.

    .venv/bin/python -m bench pipeline-throughput --rates 2000,4000,6000,8000
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from bench.soak import bench_stack, soak


def _step(stack: Any, rate: int, seconds: float, subscribers: int) -> dict[str, Any]:
    r = soak(stack, rate, seconds / 60, subscribers=subscribers, devices=50, quiet=True)
    counted = [m for m in r["minutes"] if m["count"]]
    worst = {f"{h}_p99": max(m[f"{h}_p99"] for m in counted) for h in ("kafka", "e2e")}
    cpu = {n: np.mean([row[n][1] for row in r["procs"]]) for n in r["procs"][0]}
    return {
        "rate": rate,
        "published": r["published"],
        "lost": r["lost"],
        "duplicated": r["duplicated"],
        "e2e_p50": float(np.median([m["e2e_p50"] for m in counted])),
        **worst,
        "lag_max_ms": r["publisher_lag_max_ms"],
        "cpu": cpu,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rates", default="1000,2000,4000,6000,8000")
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--subscribers", type=int, default=1)
    p.add_argument("--p99-limit-ms", type=float, default=250)
    p.add_argument(
        "--warmup",
        type=float,
        default=20,
        help="seconds at the first rate before the first step, not counted (a fresh "
        "stack's first seconds include the consumer group's first join)",
    )
    p.add_argument("--consumers", type=int, default=1, help="consumer processes (own stack)")
    p.add_argument("--state-dir", type=Path, help="use the stack recorded there instead")
    args = p.parse_args(argv)
    with bench_stack(args.state_dir, args.consumers) as stack:
        print(
            f"{'offered/s':>10} {'published':>10} {'lost':>6} {'dup':>5} {'e2e p50':>8} "
            f"{'e2e p99':>8} {'kafka p99':>9} {'pub lag':>8}  verdict   CPU % of a core"
        )
        rates = [int(r) for r in args.rates.split(",")]
        if args.warmup > 0:
            soak(stack, rates[0], args.warmup / 60, args.subscribers, devices=50, quiet=True)
        best = 0
        for rate in rates:
            r = _step(stack, rate, args.seconds, args.subscribers)
            ok = r["lost"] == 0 and r["e2e_p99"] < args.p99_limit_ms
            best = rate if ok else best
            cpu = " ".join(f"{n} {c:.0f}" for n, c in r["cpu"].items())
            print(
                f"{rate:>10} {r['published']:>10} {r['lost']:>6} {r['duplicated']:>5} "
                f"{r['e2e_p50']:>8.1f} {r['e2e_p99']:>8.1f} {r['kafka_p99']:>9.1f} "
                f"{r['lag_max_ms']:>8.1f}  {'sustained' if ok else 'NOT     '}  {cpu}",
                flush=True,
            )
        print(
            f"sustained through the whole stack (QoS 1, {args.subscribers} WebSocket "
            f"subscriber(s), {args.seconds:g} s steps, p99 < {args.p99_limit_ms:g} ms): {best} msg/s"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
