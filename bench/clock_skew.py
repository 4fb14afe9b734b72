"""Clock-skew correction, proved: one worker's clock shifted by libfaketime, latency unchanged.

Starts the embedded stack on free ports, then runs ``bench/split_hosts_locustfile.py``
as a real distributed Locust run — a master and three worker processes, each
its own clock — three times:

1. ``unshifted``: every worker on the machine's clock;
2. ``shifted``: the publishing worker and the ``near`` subscribing worker under
   libfaketime (``FAKETIME=+0.05``: their ``time.time()`` runs 50 ms ahead),
   offsets corrected (the default);
3. ``uncorrected``: the same shift with ``--clock-sync false`` (offsets still
   measured, not applied).

Devices publish on one worker; ``near`` watchers subscribe on a second worker
on the publishers' (shifted) clock, ``far`` watchers on a third on the real
clock. The two subscribing processes carry the same load, so ``mqtt→near`` and
``mqtt→far`` are the same messages measured alike, on one clock and across two:
their difference is the correction's error. Printed per run: each worker's
measured offset and uncertainty (``run.json``), and the p50/p99 of both paths.

    PATH=$PATH:/usr/sbin .venv/bin/python -m bench clock-skew [--seconds 10] [--shift 0.05]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
LOCUSTFILE = "bench/split_hosts_locustfile.py"
#: the Debian ``libfaketime`` package's preload library
LIBFAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"


def faketime_env(shift_s: float) -> dict[str, str]:
    """Environment that runs a process ``shift_s`` seconds ahead (libfaketime).

    ``FAKETIME="+0.05"`` is libfaketime's relative offset in seconds (fractions
    allowed). Monotonic clocks stay real (``FAKETIME_DONT_FAKE_MONOTONIC``), so
    gevent's timers and Locust's heartbeats are unaffected: only wall-clock time
    (``time.time()``, ``time.time_ns()``) moves, as on a host whose clock is off.
    """
    return {
        "LD_PRELOAD": LIBFAKETIME,
        "FAKETIME": f"{shift_s:+.6f}",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        "FAKETIME_NO_CACHE": "1",
    }


def _url_options(urls: dict[str, str], secret_file: Path | None) -> list[str]:
    login = []
    if secret_file is not None:  # the stack's MQTT logins and gateway tokens
        login = ["--mqtt-secret-file", str(secret_file),
                 "--jwt-secret=" + secret_file.read_text().strip()]  # fmt: skip
    return [
        "--mqtt-url", urls["mqtt"], "--gateway-url", urls["gateway"],
        "--kafka-bootstrap", urls["kafka"], "--redis-url", urls["redis"], *login,
    ]  # fmt: skip


def split_run(
    urls: dict[str, str],
    out: Path,
    *,
    master_port: int,
    seconds: float = 8.0,
    shift_s: float = 0.0,
    clock_sync: bool = True,
    secret_file: Path | None = None,
    timeout: float = 120.0,
) -> dict[str, Any]:
    """A master and three workers (publish, near, far) on this machine; ``run.json`` and
    ``e2e.json`` of the run. The publish and near workers run ``shift_s`` seconds ahead."""
    env = {
        **os.environ,
        "PIPESWARM_STATE_DIR": str(out.parent / "no-stack-file"),
        "PIPESWARM_CLOCK_SYNC": "true" if clock_sync else "false",
    }
    port = str(master_port)
    common = [sys.executable, "-m", "locust", "-f", LOCUSTFILE, *_url_options(urls, secret_file)]
    master = [
        *common, "--master", "--headless", "--only-summary", "--expect-workers", "3",
        "--master-bind-host", "127.0.0.1", "--master-bind-port", port,
        "-u", "36", "-r", "36", "-t", f"{round(seconds)}s", "--e2e-drain", "2",
        "--results-dir", str(out), "--prometheus-port", "0",
    ]  # fmt: skip
    worker = [*common, "--worker", "--master-host", "127.0.0.1", "--master-port", port]
    shifted = faketime_env(shift_s) if shift_s else {}
    procs: list[subprocess.Popen[Any]] = [subprocess.Popen(
        master, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )]  # fmt: skip
    try:
        for role, extra in (("publish", shifted), ("near", shifted), ("far", {})):
            procs.append(subprocess.Popen(
                worker, cwd=ROOT, env={**env, **extra, "PIPESWARM_TEST_ROLE": role},
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))  # fmt: skip
        output, _ = procs[0].communicate(timeout=timeout)
        if procs[0].returncode != 0:
            raise RuntimeError(f"locust master exited {procs[0].returncode}:\n{output[-3000:]}")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=10)
    return {
        "run": json.loads((out / "run.json").read_text()),
        "e2e": json.loads((out / "e2e.json").read_text()),
    }


def figures(result: dict[str, Any]) -> dict[str, Any]:
    """Offsets per worker (ms, by worker index) and, per path (near, far), the p50 (ms)
    of ``total`` (t0 -> receive), ``push`` (gateway stamp -> receive) and ``mqtt``
    (publish -> bridge stamp), the count, the loss and the negative samples of any hop."""
    run, e2e = result["run"], result["e2e"]
    out: dict[str, Any] = {"workers": [w.get("clock") for w in run["workers"]]}
    for kind in ("near", "far"):
        entry = e2e["paths"].get(f"mqtt→{kind}", {})
        latency = entry.get("latency", {})
        out[kind] = {
            **{f"{hop}_p50_ms": latency.get(hop, {}).get("p50_us", 0) / 1000
               for hop in ("total", "push", "mqtt")},
            "count": latency.get("total", {}).get("count", 0),
            "lost": entry.get("totals", {}).get("lost"),
            "negative": sum(h.get("negative", 0) for h in latency.values()),
        }  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    from pipeline._procs import free_port
    from pipeline.stack import Stack

    p = argparse.ArgumentParser(
        prog="python -m bench clock-skew",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--seconds", type=float, default=10.0, help="length of each run")
    p.add_argument("--shift", type=float, default=0.05, help="seconds the publisher runs ahead")
    args = p.parse_args(argv)
    if not Path(LIBFAKETIME).exists():
        print(f"bench: {LIBFAKETIME} is missing: install the faketime package (make setup).")
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="clock-skew-"))
    stack = Stack.with_ports(auto=True, state_dir=tmp / "stack").start()
    rows = []
    try:
        # a first run after the stack started is slower (consumer group joins, JIT): not shown
        split_run(
            stack.urls, tmp / "warm-up", master_port=free_port(), seconds=5,
            secret_file=stack.secret_file,
        )  # fmt: skip
        for name, shift, sync in (
            ("unshifted", 0.0, True),
            ("shifted", args.shift, True),
            ("uncorrected", args.shift, False),
        ):
            result = split_run(
                stack.urls, tmp / name, master_port=free_port(), seconds=args.seconds,
                shift_s=shift, clock_sync=sync, secret_file=stack.secret_file,
            )  # fmt: skip
            rows.append((name, shift, sync, figures(result)))
    finally:
        stack.stop()
    print(
        f"# clock-skew  {time.strftime('%Y-%m-%d %H:%M')}  master + 3 worker processes, "
        f"10 devices x 10 msg/s (the publish worker's), {args.seconds:.0f} s per run; ms"
    )
    print(
        f"{'run':12} {'shift':>6} {'sync':>5}  {'offsets (± uncertainty) of w0 w1 w2':40} "
        f"{'total p50 near/far':>19} {'push p50 near/far':>18} {'mqtt p50':>8} {'neg':>5} "
        f"{'lost':>5}"
    )
    for name, shift, sync, f in rows:
        offsets = " ".join(
            f"{c['offset_ms']:+.2f}±{c['uncertainty_ms']:.2f}" if c else "-" for c in f["workers"]
        )
        near, far = f["near"], f["far"]
        print(
            f"{name:12} {shift * 1000:+4.0f}ms {str(sync).lower():>5}  {offsets:40} "
            f"{near['total_p50_ms']:9.2f}/{far['total_p50_ms']:<9.2f} "
            f"{near['push_p50_ms']:8.3f}/{far['push_p50_ms']:<8.3f} {far['mqtt_p50_ms']:8.3f} "
            f"{near['negative'] + far['negative']:5} {(near['lost'] or 0) + (far['lost'] or 0):5}"
        )
    print(
        "near: a subscriber on the publishers' clock; far: on the real clock. push = gateway "
        "stamp -> receive, on the pipeline's (real) clock vs the subscriber's; mqtt = publish -> "
        "bridge stamp; neg = latency samples below 0 (recorded as 0), any hop, both paths."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
