"""What one message costs the bridge: CPU µs per message, and how fast it drains.

Starts Mosquitto, the Kafka-protocol broker and the bridge of its own on free
ports (no consumer, no gateway), publishes ``--messages`` traced QoS1 messages
from 50 devices as fast as one paho client can (or at ``--rate``; or all of
them first while the bridge is paused, ``--backlog``), and waits
until the bridge's ``pipeline_bridge_produced_messages_total`` says Kafka
acknowledged all of them. The bridge's CPU (user + system, every thread, read
from the process before and after) divided by the messages is the cost; the
messages divided by the time from first publish to last acknowledgement is
the rate it drained at.

    .venv/bin/python -m bench bridge-cost --messages 50000
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import urllib.request
from pathlib import Path

import paho.mqtt.client as mqtt
import psutil

DEVICES = 50
PRODUCED = 'pipeline_bridge_produced_messages_total{topic="mqtt-messages"}'


def _produced(url: str) -> float:
    with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - loopback only
        for line in resp.read().decode().splitlines():
            if line.startswith(PRODUCED):
                return float(line.split()[-1])
    return 0.0


def _cpu(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def _threads(proc: psutil.Process) -> dict[str, float]:
    """CPU seconds per thread name (librdkafka names its threads ``rdk:...``)."""
    out: dict[str, float] = {}
    for t in proc.threads():
        try:
            name = Path(f"/proc/{proc.pid}/task/{t.id}/comm").read_text().strip()
        except OSError:
            continue
        name = name.split("/")[0] if name.startswith("rdk:") else name
        out[name] = out.get(name, 0.0) + t.user_time + t.system_time
    return out


def _listener(port: int) -> psutil.Process | None:
    """The local process listening on ``port`` (the broker), if this user may see it."""
    for conn in psutil.net_connections("tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port and conn.pid:
            return psutil.Process(conn.pid)
    return None


def _publish(port: int, total: int, rate: float, login: tuple[str, str] | None = None) -> None:
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=f"bridge-cost-{time.time_ns()}"
    )
    if login:  # the stack's tool account (MQTT auth is on)
        client.username_pw_set(*login)
    client.max_inflight_messages_set(1000)
    client.connect("127.0.0.1", port)
    client.loop_start()
    start = time.monotonic()
    seq = [0] * DEVICES
    info = None
    for n in range(total):
        if rate:
            ahead = start + n / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
        d = n % DEVICES
        seq[d] += 1
        now = time.time_ns()
        body = {
            "device_id": f"cost-{d}",
            "x": 1.0 + n,
            "y": 2.0,
            "timestamp": now / 1e9,
            "trace": {"run": "bridge-cost", "seq": seq[d], "t0": now, "tp": now, "hops": {}},
        }
        info = client.publish(f"sensors/cost-{d}/coordinates", json.dumps(body), qos=1)
    if info is not None:
        info.wait_for_publish(60)
    client.loop_stop()
    client.disconnect()


def main(argv: list[str] | None = None) -> int:
    from pipeline.stack import Stack

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--messages", type=int, default=50_000)
    p.add_argument("--rate", type=float, default=0, help="msg/s offered (0 = as fast as possible)")
    p.add_argument("--timeout", type=float, default=60, help="give up after this many seconds")
    p.add_argument(
        "--backlog",
        action="store_true",
        help="publish everything while the bridge is paused (SIGSTOP), then time its drain:\n"
        "the bridge's own ceiling, whatever the publisher's speed",
    )
    p.add_argument(
        "--kafka-bootstrap", help="use this Kafka instead of starting the embedded broker"
    )
    args = p.parse_args(argv)
    if args.messages <= 0 or args.rate < 0:
        p.error("--messages must be positive and --rate not negative")

    stack = Stack.with_ports(
        auto=True,
        state_dir=Path(tempfile.mkdtemp(prefix="bench-bridge-")),
        kafka_bootstrap=args.kafka_bootstrap,
    )
    try:
        for name in ("mosquitto", "kafka", "bridge"):
            stack.start_service(name)
        bridge = psutil.Process(stack.procs["bridge"].pid)
        broker = _listener(int(stack.urls["kafka"].split(",")[0].rsplit(":", 1)[1]))
        metrics = stack.urls["bridge_metrics"]
        base = _produced(metrics)
        if args.backlog:
            stack.pause("bridge")
            t = time.monotonic()
            _publish(stack.ports["mqtt"], args.messages, args.rate, stack.mqtt_login())
            published_s = time.monotonic() - t
        threads0 = _threads(bridge)
        cpu0, broker0, t0 = _cpu(bridge), _cpu(broker) if broker else 0.0, time.monotonic()
        if args.backlog:
            stack.resume("bridge")
        else:
            _publish(stack.ports["mqtt"], args.messages, args.rate, stack.mqtt_login())
            published_s = time.monotonic() - t0
        deadline = t0 + args.timeout
        done = 0.0
        while time.monotonic() < deadline:
            done = _produced(metrics) - base
            if done >= args.messages:
                break
            time.sleep(0.1)
        elapsed = time.monotonic() - t0
        cpu = _cpu(bridge) - cpu0
        broker_cpu = _cpu(broker) - broker0 if broker else float("nan")
        threads = {n: c - threads0.get(n, 0.0) for n, c in _threads(bridge).items()}
    finally:
        stack.stop()
    print(
        f"messages {args.messages}, acknowledged by Kafka {int(done)}"
        f"{'' if done >= args.messages else '  (INCOMPLETE: timed out)'}\n"
        f"published in {published_s:.2f} s{' (bridge paused)' if args.backlog else ''};"
        f" all acknowledged after {elapsed:.2f} s{' from resume' if args.backlog else ''}"
        f" -> {done / elapsed:,.0f} msg/s through the bridge\n"
        f"bridge CPU {cpu:.2f} s = {cpu / max(done, 1) * 1e6:.1f} µs/msg"
        f" ({cpu / elapsed * 100:.0f} % of a core); broker CPU {broker_cpu:.2f} s"
        f" = {broker_cpu / max(done, 1) * 1e6:.1f} µs/msg\n"
        "bridge threads, µs/msg: "
        + ", ".join(
            f"{name} {c / max(done, 1) * 1e6:.1f}"
            for name, c in sorted(threads.items(), key=lambda kv: -kv[1])
            if c > 0.005
        )
    )
    return 0 if done >= args.messages else 1


if __name__ == "__main__":
    raise SystemExit(main())
