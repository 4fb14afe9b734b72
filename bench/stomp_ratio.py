"""StompSubscriber's engine vs plain stomp.py, same gateway, same run; and the gateway's fan-out.

Starts Mosquitto, Redis and the real gateway (``python -m pipeline.gateway``)
on free ports, and two subscriber processes (``bench._stomp_engines``): one
with ``--subscribers`` connections on our engine, one with as many on stomp.py
9 over websocket-client (its receiver greenlet, UTF-8 check off, TCP_NODELAY),
all subscribed to ``/topic/coordinates`` with a ledger each. This process
plays the consumer: it XADDs traced updates (10 devices) to the update stream
at each ``--rates`` step. Every step measures the same window in every
process: frames received and CPU seconds of each subscriber process, and of
the gateway (psutil on its PID), whose frames out = updates x subscribers.

    PATH=$PATH:/usr/sbin .venv/bin/python -m bench stomp-ratio
    .venv/bin/python -m bench stomp-ratio --subscribers 50 --rates 100,200,400 --seconds 10
    .venv/bin/python -m bench stomp-ratio --engines ours --no-ledger --subscribers 200 \
        --rates 100,200,400,800                                # the gateway's ceiling

Per core = frames / CPU seconds. The gateway's ceiling is its frames out per
core (what one fully used core would push at this fan-out); a step where the
gateway's CPU is near 100 % of a core, or a subscriber received less than was
sent, is the measured limit.
"""

from __future__ import annotations

import argparse
import contextlib
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
from typing import Any

__all__ = ["main"]

RUN = "bench"  # the subscribers' ledger run (bench._stomp_engines)
DEVICES = [f"ratio-{i:02d}" for i in range(10)]


def _feed(redis_url: str, rate: float, seconds: float, stop: threading.Event) -> int:
    """XADD ``rate`` traced updates per second (10 ms batches) for ``seconds``; return the count."""
    import redis

    from pipeline.config import STREAM_FIELD, UPDATES_STREAM, Settings

    client = redis.Redis.from_url(redis_url)
    maxlen = Settings().stream_maxlen
    sent = 0
    seqs = dict.fromkeys(DEVICES, 0)
    start = time.monotonic()
    end = start + seconds
    while not stop.is_set():
        now = time.monotonic()
        if now >= end:
            break
        due = int((now - start) * rate) - sent
        if due > 0:
            pipe = client.pipeline(transaction=False)
            for i in range(due):
                device = DEVICES[(sent + i) % len(DEVICES)]
                seqs[device] += 1
                t0 = time.time_ns()
                # telemetry.envelope's layout, written here: importing telemetry imports
                # Locust, whose gevent patching must not happen in this (threaded) process
                text = (
                    f'{{"device_id":"{device}","x":1.0,"y":2.0,"timestamp":{t0 / 1e9},'
                    f'"trace":{{"run":"{RUN}","seq":{seqs[device]},"t0":{t0},"tp":{t0},'
                    f'"hops":{{"bridge":{t0},"consumer":{t0}}}}}}}'
                )
                pipe.xadd(UPDATES_STREAM, {STREAM_FIELD: text}, maxlen=maxlen, approximate=True)
            pipe.execute()
            sent += due
        time.sleep(0.01)
    client.close()
    return sent


def _gateway_stats(port: int) -> dict[str, Any]:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/stats", timeout=5) as r:
        doc: dict[str, Any] = json.load(r)
    return doc


def _cpu(pid: int) -> float:
    import psutil

    t = psutil.Process(pid).cpu_times()
    return float(t.user + t.system)


def main(argv: list[str] | None = None) -> int:
    from pipeline import auth
    from pipeline._mqtt_plugin import GATEWAY_USER
    from pipeline.stack import Stack

    # SIGTERM (a timeout) ends through the finally below: the stack is stopped by its PIDs
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    p = argparse.ArgumentParser(
        prog="python -m bench stomp-ratio",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--subscribers", type=int, default=20, help="connections per engine")
    p.add_argument("--rates", default="100,200,400", help="updates/s, one step each")
    p.add_argument("--seconds", type=float, default=10.0, help="measured window per step")
    p.add_argument("--engines", default="ours,stomppy", help="subscriber processes, one per engine")
    p.add_argument(
        "--no-ledger",
        action="store_true",
        help="subscribers drop the bodies: cheap clients, so the gateway is the limit (its ceiling)",
    )
    p.add_argument(
        "--e2e-hop-events",
        choices=("true", "false"),
        default="true",
        help="false: one E2E request event per message, not one per hop (as the Locust option)",
    )
    p.add_argument(
        "--gateway-from",
        type=Path,
        help="run the gateway of another checkout (e.g. the main branch, for a before/after)",
    )
    args = p.parse_args(argv)
    rates = [float(r) for r in args.rates.split(",") if r]
    if args.seconds > 60 or args.subscribers > 2000 or len(rates) > 8 or max(rates) > 20000:
        p.error("keep runs bounded: --seconds <= 60, --subscribers <= 2000, <= 8 rates <= 20000")
    print(
        f"# stomp-ratio  {time.strftime('%Y-%m-%d %H:%M')}  {platform.node()}  "
        f"{os.cpu_count()} cores  {args.subscribers} subscribers per engine on /topic/coordinates"
        f"{'  (bodies dropped: no ledger)' if args.no_ledger else ''}"
    )
    stack = Stack.with_ports(auto=True, state_dir=Path(tempfile.mkdtemp(prefix="bench-ratio-")))
    args.token = auth.mint_token(auth.read_secret(auth.create_secret(stack.state_dir)), "bench")
    other: subprocess.Popen[bytes] | None = None
    try:
        for name in ("mosquitto", "redis"):
            stack.start_service(name)
        port = stack.ports["gateway"]
        if args.gateway_from:
            print(f"# gateway from {args.gateway_from}")
        print("| updates/s | engine | frames/s | CPU | **frames/s per core** | received / sent |")
        print("|---|---|---|---|---|---|")
        for rate in rates:
            # a fresh gateway per step: nothing of the last step's connections left in it
            if args.gateway_from:
                env = {**stack.service_env(), "MQTT_URL": stack.mqtt_url_for(GATEWAY_USER)}
                other = _other_gateway(args.gateway_from, env, port)
                gw_pid = other.pid
            else:
                stack.start_service("gateway")
                gw_pid = stack.procs["gateway"].pid
            try:
                if not _step(stack.urls["redis"], gw_pid, port, rate, args) and not other:
                    log = stack._logs / "gateway.log"  # a step that delivered nothing: say why
                    tail = log.read_text(errors="replace").splitlines()[-15:]
                    print("# the gateway's log:\n#   " + "\n#   ".join(tail), flush=True)
            finally:
                if other is not None:
                    _stop(other)
                    other = None
                stack.stop_service("gateway")
    finally:
        if other is not None:
            _stop(other)
        stack.stop(remove_data=True)
    return 0


def _stop(proc: subprocess.Popen[Any]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _other_gateway(repo: Path, env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    """``python -m pipeline.gateway`` of another checkout, healthy, on ``port``."""
    import urllib.request

    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.gateway"],
        cwd=repo,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=open(Path(tempfile.gettempdir()) / f"bench-gateway-{port}.log", "wb"),  # noqa: SIM115
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=1) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    proc.wait()
    raise SystemExit(f"bench: the gateway from {repo} did not become healthy")


def _step(redis_url: str, gw_pid: int, port: int, rate: float, args: argparse.Namespace) -> bool:
    """One measured window at ``rate``; False when a subscriber process received nothing.

    Updates flow only once every subscriber of every process is subscribed: fed from
    the start, an overloaded process was still connecting its last clients (each
    CONNECTED queued behind the flood on the others) when a fixed head start ran out,
    and measured a window after the feed had ended: the "stall under overload" of
    earlier runs (0 frames, every connection up, nothing pending on any socket).
    """
    children = {}
    for engine in args.engines.split(","):
        cmd = [sys.executable, "-m", "bench._stomp_engines", "--engine", engine]
        cmd += ["--mode", "throughput", "--port", str(port), "--clients", str(args.subscribers)]
        cmd += ["--destination", "/topic/coordinates", "--seconds", str(args.seconds)]
        cmd += ["--wait-start", "--hop-events", args.e2e_hop_events]
        cmd += ["--no-ledger"] if args.no_ledger else []
        env = {**os.environ, "PIPESWARM_TOKEN": args.token}
        children[engine] = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )
    for engine, proc in children.items():
        assert proc.stdout is not None and proc.stdin is not None
        line = proc.stdout.readline()  # {"ready": n}; EOF when the process failed to connect
        if not line.startswith("{"):
            raise SystemExit(f"bench: the {engine} subscriber process did not get ready")
        ready = json.loads(line)["ready"]
        if ready < args.subscribers:
            print(f"# {engine}: only {ready} of {args.subscribers} subscribed", flush=True)
    start_at = time.time() + 2.0  # the same window in every process, after 2 s of warm-up
    for proc in children.values():
        assert proc.stdin is not None
        proc.stdin.write(f"{start_at}\n")
        proc.stdin.flush()
    stop = threading.Event()
    fed: list[int] = []
    feeder = threading.Thread(
        target=lambda: fed.append(
            _feed(redis_url, rate, start_at - time.time() + args.seconds + 1.0, stop)
        )
    )
    feeder.start()
    time.sleep(max(0.0, start_at - time.time()))
    gw0, st0 = _cpu(gw_pid), _gateway_stats(port)
    time.sleep(args.seconds)
    gw_cpu, st1 = _cpu(gw_pid) - gw0, _gateway_stats(port)
    updates = st1["updates_received"] - st0["updates_received"]
    pushed = st1["pushed"]["stomp"] - st0["pushed"]["stomp"]
    dropped = sum(st1["dropped"].values()) - sum(st0["dropped"].values())
    results: dict[str, dict[str, Any]] = {}
    try:
        for engine, proc in children.items():
            out, _ = proc.communicate(timeout=args.seconds + 120)
            lines = [ln for ln in out.splitlines() if ln.startswith("{")]
            if proc.returncode or not lines:
                raise SystemExit(f"bench: the {engine} subscriber process failed")
            results[engine] = json.loads(lines[-1])
            if results[engine]["up"][1] < args.subscribers:
                print(f"# {engine}: only {results[engine]['up']} connections up", flush=True)
    finally:
        stop.set()
        feeder.join()
        for proc in children.values():
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
    expected = rate * args.seconds * args.subscribers
    per_core = {}
    for engine, r in results.items():
        per_core[engine] = r["frames"] / r["cpu_s"] if r["cpu_s"] else 0.0
        print(
            f"| {rate:,.0f} | {engine} | {r['frames'] / r['wall_s']:,.0f} | "
            f"{r['cpu_s'] / r['wall_s'] * 100:.0f} % | **{per_core[engine]:,.0f}** | "
            f"{r['frames'] / expected:.2f} |",
            flush=True,
        )
    ratio = ""
    if per_core.get("ours") and per_core.get("stomppy"):
        ratio = f"ratio ours/stomp.py per core **{per_core['ours'] / per_core['stomppy']:.1f}×**"
    print(
        f"| {rate:,.0f} | gateway: {updates / args.seconds:,.0f} updates/s read, "
        f"{dropped} frames dropped | {pushed / args.seconds:,.0f} | "
        f"{gw_cpu / args.seconds * 100:.0f} % | **{pushed / gw_cpu if gw_cpu else 0:,.0f}** | {ratio} |",
        flush=True,
    )
    return all(r["frames"] for r in results.values())


if __name__ == "__main__":
    raise SystemExit(main())
