"""`python -m pipeline up|down|status|creds|kill|stop|start|restart|pause|resume|install-…`.

The embedded stack from the command line: start it, look at it, and act on one
part of it while it runs (what the fault tests and fault scenarios do).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path

from pipeline import _kafka_server, _mqtt_plugin, _toxiproxy, auth
from pipeline.config import DEFAULTS, SETTINGS
from pipeline.exceptions import exit_on_error
from pipeline.stack import AMQP_PORTS, COMPONENTS, PORTS, STALL_WINDOW_S, Stack

#: The settings an `up` option mirrors (``--partitions``, ``--redis-ttl``, ``--push-mode``,
#: ``--snapshot-interval-ms``): the option wins, then the environment variable, then the default.
MIRRORED = tuple(s for s in SETTINGS.values() if s.flag)

#: command -> what it does to one component of the running stack
ACTIONS = {
    "kill": "SIGKILL it (a crash); `start` brings it back",
    "stop": "stop it gracefully (SIGTERM)",
    "start": "start it again (no-op while it runs)",
    "restart": "stop gracefully, then start",
    "pause": "SIGSTOP it: alive, holding its sockets, doing nothing",
    "resume": "SIGCONT a paused component",
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    up = sub.add_parser(
        "up", help="start Mosquitto, Redis, Apache Kafka, bridge, consumer(s), gateway"
    )
    up.add_argument("--detach", action="store_true", help="return once healthy; `down` stops it")
    up.add_argument(
        "--ports",
        choices=["default", "auto"],
        default="default",
        help="auto: pick free ports for everything not given explicitly",
    )
    for name, (default, what, option) in {**PORTS, **AMQP_PORTS}.items():
        up.add_argument(
            option, type=int, dest=name, default=None, help=f"{what} port (default {default})"
        )
    up.add_argument(
        "--kafka-bootstrap",
        default=os.environ.get(SETTINGS["kafka_bootstrap"].env),
        help="use this Kafka instead of the embedded Apache Kafka (env KAFKA_BOOTSTRAP_SERVERS)",
    )
    for setting in MIRRORED:
        setting.add_argument(up, dest=setting.name)
    up.add_argument(
        "--consumers",
        type=_positive,
        default=1,
        help="consumer processes in one group (at most --partitions do work)",
    )
    up.add_argument(
        "--fault-proxies",
        action="store_true",
        help="put Toxiproxy in front of Mosquitto, Kafka and Redis (for network faults: "
        "locust --faults 'partition:kafka@30s+10s'; its API URL goes into stack.json)",
    )
    up.add_argument(
        "--mqtt-tls",
        action="store_true",
        help="also a TLS listener (a CA and server certificate made for the stack; "
        "its mqtts:// URL and CA file go into stack.json)",
    )
    up.add_argument(
        "--mqtt-tls-port", type=int, default=None,
        help="port of the TLS listener (default 8883, a free one with --ports auto)",
    )  # fmt: skip
    up.add_argument(
        "--listen-host",
        choices=["127.0.0.1", "0.0.0.0"],
        default="127.0.0.1",
        help="where Mosquitto and the gateway listen: 0.0.0.0 (every interface) lets load "
        "generators on other hosts in; the rest of the stack stays on loopback",
    )
    up.add_argument(
        "--amqp",
        dest="with_amqp",
        action="store_true",
        help="also start RabbitMQ (its own node, ports and data in the state dir) for "
        "locustfiles/mqtt_vs_amqp.py; its URL goes into stack.json",
    )
    down = sub.add_parser("down", help="stop the stack and remove its data")
    down.add_argument(
        "--keep-data",
        action="store_true",
        help="keep Kafka's log, Mosquitto's persistence and Redis's AOF in the state dir",
    )
    status = sub.add_parser("status", help="healthy / down / paused / stalled per part")
    status.add_argument(
        "--window",
        type=float,
        default=STALL_WINDOW_S,
        help=f"seconds to watch for progress (default {STALL_WINDOW_S}; 0: liveness only)",
    )
    for action, what in ACTIONS.items():
        one = sub.add_parser(action, help=f"{what}")
        one.add_argument(
            "component",
            choices=[*COMPONENTS],
            metavar="COMPONENT",
            help=f"one of {', '.join(COMPONENTS)}",
        )
    creds = sub.add_parser(
        "creds", help="MQTT username/password and a gateway token for a client of one's own"
    )
    creds.add_argument(
        "device_id",
        nargs="?",
        metavar="DEVICE_ID",
        help="the device to act as; none: an account that may publish and subscribe anything",
    )
    creds.add_argument("--json", action="store_true", help="print one JSON object")
    sub.add_parser("install-kafka", help="fetch the pinned Apache Kafka jars with Maven")
    sub.add_parser("install-mqtt-auth", help="build Mosquitto's auth plugin with gcc")
    sub.add_parser("install-toxiproxy", help="build the pinned Toxiproxy with `go install`")
    p.add_argument(
        "--state-dir",
        type=Path,
        default=Path(".pipeswarm"),
        help="where stack.json and logs live (default .pipeswarm)",
    )
    return p


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _print_endpoints(stack: Stack) -> None:
    u = stack.urls
    print("pipeswarm embedded pipeline is up:")
    print(f"  MQTT       {u['mqtt']}   (devices publish sensors/<id>/coordinates)")
    topic, group = DEFAULTS.kafka_topic, DEFAULTS.consumer_group
    print(f"  Kafka      {u['kafka']}   (topic {topic}, {stack.partitions} partitions)")
    if stack.consumers > 1:
        print(f"  consumers  {stack.consumers} processes in group {group}")
    print(f"  Redis      {u['redis']}")
    print(f"  gateway    {u['gateway']}   (REST /api, Swagger UI /docs)")
    print(f"  WebSocket  {u['gateway'].replace('http', 'ws')}/coordinates")
    print(f"  STOMP      {u['gateway'].replace('http', 'ws')}/ws   (/topic/coordinates)")
    print(f"  metrics    {u['bridge_metrics']}  {u['consumer_metrics']}  {u['gateway_metrics']}")
    print(f"  push mode  {stack.push_mode}")
    if stack.mqtt_tls:
        print(f"  MQTT TLS   {u['mqtt_tls']}")
    if stack.amqp:
        print(f"  AMQP       {u['amqp']}   (RabbitMQ, topic exchange sensors)")
    print("  creds      python -m pipeline creds [DEVICE_ID]   (MQTT auth is on)")
    if stack.fault_proxies:
        print(f"  Toxiproxy  {u['toxiproxy']}   (proxies mqtt, kafka, redis on the ports above)")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    with exit_on_error():
        if args.command == "up":
            return _up(args)
        if args.command == "install-kafka":
            print(f"Apache Kafka {_kafka_server.KAFKA_VERSION}: {_kafka_server.install()}")
            return 0
        if args.command == "install-mqtt-auth":
            print(f"MQTT auth plugin: {_mqtt_plugin.install()}")
            return 0
        if args.command == "install-toxiproxy":
            print(f"Toxiproxy {_toxiproxy.VERSION}: {_toxiproxy.install()}")
            return 0
        if args.command == "down":
            Stack.load(args.state_dir).stop(remove_data=not args.keep_data)
            print("pipeswarm embedded pipeline stopped.")
            return 0
        stack = Stack.load(args.state_dir)
        if args.command in ACTIONS:
            return _act(stack, args.command, args.component)
        if args.command == "creds":
            return _creds(stack, args.device_id, args.json)
        health = stack.status(window=args.window)
        for name, state in health.items():
            print(f"  {name:<10} {state}")
        return 0 if all(state == "healthy" for state in health.values()) else 1


def _act(stack: Stack, action: str, component: str) -> int:
    method = {"stop": stack.stop_service, "start": stack.start_service}.get(action)
    (method or getattr(stack, action))(component)
    stack.save()
    print(f"pipeline: {action} {component}: done")
    return 0


def credentials(stack: Stack, device_id: str | None) -> dict[str, str]:
    """What a client of one's own needs for ``stack``: for ``device_id`` (may publish its
    coordinates, read its commands) or, without one, the tool account (anything)."""
    secret = auth.read_secret(stack.secret_file)
    username = device_id or _mqtt_plugin.TOOL_USER
    doc = {
        "mqtt_url": stack.urls["mqtt"],
        "mqtt_username": username,
        "mqtt_password": auth.mqtt_password(secret, username),
        # devices must connect with their id as client id; the tool account with any
        "mqtt_client_id": username if device_id else "",
        "gateway_url": stack.urls["gateway"],
        "token": auth.mint_token(secret, username),
    }
    if stack.mqtt_tls:
        doc["mqtt_tls_url"] = stack.urls["mqtt_tls"]
        doc["mqtt_ca_file"] = str(stack.tls_dir / "ca.pem")
    return doc


def _creds(stack: Stack, device_id: str | None, as_json: bool) -> int:
    doc = credentials(stack, device_id)
    if as_json:
        print(json.dumps(doc, indent=2))
        return 0
    for key, value in doc.items():
        print(f"{key:<15} {value}")
    port = stack.ports["mqtt"]
    client_id = f" -i {doc['mqtt_client_id']}" if doc["mqtt_client_id"] else ""
    topic = f"sensors/{device_id or 'dev-1'}/coordinates"
    print(
        f"\ne.g.  mosquitto_pub -h 127.0.0.1 -p {port}{client_id} -u {doc['mqtt_username']} "
        f"-P '{doc['mqtt_password']}' -t {topic} -m '{{\"x\": 1, \"y\": 2}}'"
    )
    if not stack.mqtt_auth:
        print("(this stack runs without MQTT auth: any client may connect)")
    return 0


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
    given = {name: getattr(args, name) for name in {**PORTS, **AMQP_PORTS} if getattr(args, name)}
    if args.mqtt_tls_port:
        given["mqtt_tls"] = args.mqtt_tls_port
    mirrored = {
        s.name: s.read(os.environ) if getattr(args, s.name) is None else getattr(args, s.name)
        for s in MIRRORED
    }
    stack = Stack.with_ports(
        auto=args.ports == "auto",
        ports=given,
        state_dir=args.state_dir,
        kafka_bootstrap=args.kafka_bootstrap or None,
        push_mode=mirrored["push_mode"],
        snapshot_interval_ms=mirrored["snapshot_interval_ms"],
        partitions=mirrored["kafka_partitions"],
        redis_ttl_s=mirrored["redis_ttl_s"],
        consumers=args.consumers,
        fault_proxies=args.fault_proxies,
        mqtt_tls=args.mqtt_tls or bool(args.mqtt_tls_port),
        listen_host=args.listen_host,
        amqp=args.with_amqp or args.amqp is not None,  # --amqp-port implies it
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
