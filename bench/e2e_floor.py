"""The end-to-end floor: our StompSubscriber through the whole stack vs a bare paho pair.

Starts the embedded stack on free ports, then, at the same light rate:

1. a bare paho publisher and paho subscriber (OS threads, TCP_NODELAY) on one
   topic of the same Mosquitto: publish -> receive, the broker alone;
2. ``locustfiles/pipeline.py`` (MqttDevice -> bridge -> Kafka -> consumer ->
   Redis -> gateway -> StompSubscriber), whose ``e2e.json`` gives the exact
   ``mqtt→stomp`` service time (tp -> receive) and each hop.

    .venv/bin/python -m bench e2e-floor [--devices 20] [--seconds 15]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def bare_pair(
    port: int, rate: int, seconds: float, login: tuple[str, str] | None = None
) -> list[float]:
    """Latencies (ms) of QoS1 messages from one paho client to another via Mosquitto."""
    import paho.mqtt.client as mqtt

    def nodelay(client, userdata, sock) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    got: list[float] = []
    subscribed = threading.Event()
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="floor-sub")
    sub.on_socket_open = nodelay
    if login:  # the stack's tool account (MQTT auth is on)
        sub.username_pw_set(*login)
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.on_message = lambda c, u, m: got.append((time.time_ns() - int(m.payload)) / 1e6)
    sub.connect("127.0.0.1", port)
    sub.subscribe("floor/bare", qos=1)
    sub.loop_start()
    subscribed.wait(10)
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="floor-pub")
    pub.on_socket_open = nodelay
    if login:
        pub.username_pw_set(*login)
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    total = int(rate * seconds)
    start = time.monotonic()
    for n in range(total):
        delay = start + n / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        pub.publish("floor/bare", str(time.time_ns()), qos=1)
    deadline = time.monotonic() + 10
    while len(got) < total and time.monotonic() < deadline:
        time.sleep(0.05)
    pub.loop_stop()
    sub.loop_stop()
    return got


def _pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


def main(argv: list[str] | None = None) -> int:
    from pipeline import auth
    from pipeline.stack import Stack

    p = argparse.ArgumentParser(
        prog="python -m bench e2e-floor",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--devices", type=int, default=20, help="devices at 10 msg/s each")
    p.add_argument("--seconds", type=float, default=15)
    args = p.parse_args(argv)
    rate = args.devices * 10
    tmp = Path(tempfile.mkdtemp(prefix="e2e-floor-"))
    stack = Stack.with_ports(auto=True, state_dir=tmp / "stack").start()
    try:
        bare = bare_pair(stack.ports["mqtt"], rate, args.seconds, stack.mqtt_login())
        out = tmp / "run"
        urls = stack.urls
        cmd = [
            sys.executable, "-m", "locust", "-f", "locustfiles/pipeline.py", "--headless",
            "--only-summary", "-u", str(args.devices + 5), "-r", "100", "-t", f"{args.seconds}s",
            "--mqtt-url", urls["mqtt"], "--gateway-url", urls["gateway"],
            "--kafka-bootstrap", urls["kafka"], "--redis-url", urls["redis"],
            "--results-dir", str(out), "--prometheus-port", "0",
            "--mqtt-secret-file", str(stack.secret_file),
        ]  # fmt: skip
        env = {**os.environ, "PIPESWARM_STATE_DIR": str(tmp / "none"),
               "PIPESWARM_JWT_SECRET": auth.read_secret(stack.secret_file)}  # fmt: skip
        subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True, timeout=300)
        latency = json.loads((out / "e2e.json").read_text())["paths"]["mqtt→stomp"]["latency"]
    finally:
        stack.stop()
    print(
        f"# e2e-floor  {time.strftime('%Y-%m-%d %H:%M')}  {args.devices} devices x 10 msg/s "
        f"= {rate} msg/s, {args.seconds:.0f} s, QoS1"
    )
    print(f"{'':44} {'p50 ms':>8} {'p99 ms':>8} {'count':>8}")
    print(
        f"{'bare paho pub -> paho sub (same Mosquitto)':44} {_pct(bare, 50):8.3f} "
        f"{_pct(bare, 99):8.3f} {len(bare):8}"
    )
    for hop in ("service", "mqtt", "kafka", "redis", "push"):
        h = latency[hop]
        label = "MqttDevice -> StompSubscriber (tp -> recv)" if hop == "service" else f"  hop {hop}"
        print(f"{label:44} {h['p50_us'] / 1000:8.3f} {h['p99_us'] / 1000:8.3f} {h['count']:8}")
    ratio = latency["service"]["p50_us"] / 1000 / _pct(bare, 50)
    print(f"whole pipeline p50 / bare broker p50: {ratio:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
