"""`python -m pipeline up|down|status`: the embedded stack from the command line."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

from pipeline.exceptions import PipelineError
from pipeline.stack import PORTS, Stack


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    up = sub.add_parser(
        "up", help="start Mosquitto, Redis, Kafka (Tansu), bridge, consumer, gateway"
    )
    up.add_argument("--detach", action="store_true", help="return once healthy; `down` stops it")
    up.add_argument(
        "--ports",
        choices=["default", "auto"],
        default="default",
        help="auto: pick free ports for everything not given explicitly",
    )
    for name, (default, what, option) in PORTS.items():
        up.add_argument(
            option, type=int, dest=name, default=None, help=f"{what} port (default {default})"
        )
    up.add_argument(
        "--kafka-bootstrap",
        default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS"),
        help="use this Kafka instead of the embedded Tansu (env KAFKA_BOOTSTRAP_SERVERS)",
    )
    up.add_argument(
        "--push-mode", choices=["stream", "snapshot"], default=os.environ.get("PUSH_MODE", "stream")
    )
    up.add_argument("--snapshot-interval-ms", type=int, default=1000)
    up.add_argument("--partitions", type=int, default=8, help="partitions of mqtt-messages")
    up.add_argument("--redis-ttl", type=int, default=3600, help="TTL of latest coordinates, s")
    for name in ("down", "status"):
        sub.add_parser(name)
    p.add_argument(
        "--state-dir",
        type=Path,
        default=Path(".pipeswarm"),
        help="where stack.json and logs live (default .pipeswarm)",
    )
    return p


def _print_endpoints(stack: Stack) -> None:
    u = stack.urls
    print("pipeswarm embedded pipeline is up:")
    print(f"  MQTT       {u['mqtt']}   (devices publish sensors/<id>/coordinates)")
    print(f"  Kafka      {u['kafka']}   (topic mqtt-messages, {stack.partitions} partitions)")
    print(f"  Redis      {u['redis']}")
    print(f"  gateway    {u['gateway']}   (REST /api, Swagger UI /docs)")
    print(f"  WebSocket  {u['gateway'].replace('http', 'ws')}/coordinates")
    print(f"  STOMP      {u['gateway'].replace('http', 'ws')}/ws   (/topic/coordinates)")
    print(f"  metrics    {u['bridge_metrics']}  {u['consumer_metrics']}  {u['gateway_metrics']}")
    print(f"  push mode  {stack.push_mode}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "up":
            return _up(args)
        if args.command == "down":
            Stack.load(args.state_dir).stop()
            print("pipeswarm embedded pipeline stopped.")
            return 0
        stack = Stack.load(args.state_dir)
        health = stack.status()
        for name, ok in health.items():
            print(f"  {name:<10} {'healthy' if ok else 'DOWN'}")
        return 0 if all(health.values()) else 1
    except PipelineError as exc:
        print(f"pipeline: {exc}", file=sys.stderr)
        return 2


def _up(args: argparse.Namespace) -> int:
    if (args.state_dir / "stack.json").exists():
        old = Stack.load(args.state_dir)
        if any(p.alive() for p in old.procs.values()):
            print(
                f"pipeline: a stack is already running (see {args.state_dir}/stack.json); "
                "stop it with `python -m pipeline down`.",
                file=sys.stderr,
            )
            return 2
    given = {name: getattr(args, name) for name in PORTS if getattr(args, name)}
    stack = Stack.with_ports(
        auto=args.ports == "auto",
        ports=given,
        state_dir=args.state_dir,
        kafka_bootstrap=args.kafka_bootstrap or None,
        push_mode=args.push_mode,
        snapshot_interval_ms=args.snapshot_interval_ms,
        partitions=args.partitions,
        redis_ttl_s=args.redis_ttl,
    )
    stack.start()
    _print_endpoints(stack)
    if args.detach:
        print(
            f"  state      {args.state_dir / 'stack.json'}  (stop with `python -m pipeline down`)"
        )
        return 0
    print("Ctrl-C to stop.")
    stopped = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopped.set())
    stopped.wait()
    stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
