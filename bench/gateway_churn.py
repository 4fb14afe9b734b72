"""The gateway's memory under connection churn, never quiet: held subscribers plus short ones.

Starts Mosquitto, Redis and the real gateway on free ports; this process XADDs
``--rate`` traced updates a second to the update stream; a subscriber process
(``bench._churn_child``) holds ``--hold`` STOMP subscriptions for the whole run
(more than the gateway's quiet threshold, so its full garbage collection never
runs: ``pipeline/_gc.py``) and opens ``--churn`` short-lived ones a second, each
subscribed for ``--life`` s and then DISCONNECTed. Printed per minute: the
connections churned so far, the gateway's RSS and CPU, its open connections.

    PATH=$PATH:/usr/sbin .venv/bin/python -m bench gateway-churn --minutes 10

The verdict: the gateway's RSS after the first minute (warm-up) grows by less
than ``--max-growth-mb`` over the rest of the run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.stomp_ratio import _cpu, _feed, _gateway_stats, _stop

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    import psutil

    from pipeline import auth
    from pipeline.stack import Stack

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    p = argparse.ArgumentParser(
        prog="python -m bench gateway-churn",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--hold", type=int, default=150, help="subscriptions held the whole run")
    p.add_argument("--churn", type=float, default=20.0, help="short connections a second")
    p.add_argument("--life", type=float, default=2.0, help="seconds each short one stays")
    p.add_argument("--rate", type=float, default=20.0, help="updates a second")
    p.add_argument("--max-growth-mb", type=float, default=20.0)
    args = p.parse_args(argv)
    if args.minutes > 120 or args.hold > 5000 or args.churn > 200 or args.rate > 2000:
        p.error(
            "keep runs bounded: --minutes <= 120, --hold <= 5000, --churn <= 200, --rate <= 2000"
        )
    print(
        f"# gateway-churn  {time.strftime('%Y-%m-%d %H:%M')}  {platform.node()}  "
        f"{os.cpu_count()} cores  hold {args.hold}, churn {args.churn:g}/s x {args.life:g} s, "
        f"{args.rate:g} updates/s, {args.minutes:g} min"
    )
    stack = Stack.with_ports(auto=True, state_dir=Path(tempfile.mkdtemp(prefix="bench-churn-")))
    token = auth.mint_token(auth.read_secret(auth.create_secret(stack.state_dir)), "bench")
    child: subprocess.Popen[str] | None = None
    stop = threading.Event()
    feeder: threading.Thread | None = None
    try:
        for name in ("mosquitto", "redis", "gateway"):
            stack.start_service(name)
        port = stack.ports["gateway"]
        gateway = psutil.Process(stack.procs["gateway"].pid)
        seconds = args.minutes * 60
        feeder = threading.Thread(
            target=_feed, args=(stack.urls["redis"], args.rate, seconds + 30, stop), daemon=True
        )
        feeder.start()
        child = subprocess.Popen(
            [sys.executable, "-m", "bench._churn_child", "--port", str(port),
             "--hold", str(args.hold), "--churn", str(args.churn), "--life", str(args.life),
             "--seconds", str(seconds)],
            stdout=subprocess.PIPE, text=True, env={**os.environ, "PIPESWARM_TOKEN": token},
        )  # fmt: skip
        last: dict[str, int] = {}

        def read_child() -> None:
            assert child is not None and child.stdout is not None
            for line in child.stdout:
                if line.startswith("{"):
                    last.update(json.loads(line))

        threading.Thread(target=read_child, daemon=True).start()
        print(
            "| minute | churned (failed) | held up | gateway connections | gateway RSS MB | gateway CPU |"
        )
        print("|---|---|---|---|---|---|")
        rss: list[float] = []
        start = time.monotonic()
        cpu0 = _cpu(gateway.pid)
        for minute in range(1, int(args.minutes) + 1):
            time.sleep(max(0.0, start + 60 * minute - time.monotonic()))
            cpu1 = _cpu(gateway.pid)
            rss.append(gateway.memory_info().rss / 2**20)
            open_now = sum(_gateway_stats(port)["connections"].values())
            print(
                f"| {minute} | {last.get('made', 0):,} ({last.get('failed', 0)}) | "
                f"{last.get('held_up', 0)} | {open_now} | {rss[-1]:.1f} | "
                f"{(cpu1 - cpu0) / 60 * 100:.0f} % |",
                flush=True,
            )
            cpu0 = cpu1
        growth = rss[-1] - rss[0] if len(rss) > 1 else 0.0
        churned = max(1, last.get("made", 0))
        ok = growth < args.max_growth_mb
        print(
            f"# RSS after minute 1: {rss[0]:.1f} MB -> {rss[-1]:.1f} MB ({growth:+.1f} MB, "
            f"{growth * 1024 / churned:.2f} KB per connection churned): "
            f"{'PASS' if ok else 'FAIL'} (< {args.max_growth_mb:g} MB)"
        )
        return 0 if ok else 1
    finally:
        stop.set()
        if child is not None:
            _stop(child)
        if feeder is not None:
            feeder.join(5)
        stack.stop(remove_data=True)


if __name__ == "__main__":
    raise SystemExit(main())
