"""Small clients for tests: wait on conditions, collect messages, publish traces, read metrics."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import paho.mqtt.client as mqtt

from pipeline._mqtt_plugin import TOOL_USER
from pipeline.auth import mqtt_password
from pipeline.stack import Stack


def wait_for(check: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll `check` until it returns something truthy; fail with `what` on timeout."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.2)


def stack_token(stack: Any) -> str:
    """A valid gateway token of a running :class:`pipeline.stack.Stack` (its secret)."""
    from pipeline import auth

    return auth.mint_token(auth.read_secret(stack.secret_file), "test")


def stack_secret(stack: Any) -> str:
    """The secret of a running :class:`pipeline.stack.Stack` (for ``--jwt-secret``)."""
    from pipeline import auth

    return auth.read_secret(stack.secret_file)


def mqtt_client(target: int | Stack, client_id: str = "") -> mqtt.Client:
    """A started paho client of Mosquitto on a port (anonymous) or of a stack's Mosquitto
    (its tool account, which may publish and subscribe anything)."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
    port = target
    if isinstance(target, Stack):
        port = target.ports["mqtt"]
        if target.mqtt_auth:
            client.username_pw_set(TOOL_USER, mqtt_password(target.secret, TOOL_USER))
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


def traced(device_id: str, seq: int, run: str = "test-run", **extra: Any) -> bytes:
    """A device message with a trace, as the load side writes it."""
    now = time.time_ns()
    body = {
        "device_id": device_id,
        "x": float(seq),
        "y": 1.0,
        "timestamp": now / 1e9,
        "trace": {"run": run, "seq": seq, "t0": now, "tp": now, "hops": {}},
        **extra,
    }
    return json.dumps(body).encode()


class Collector:
    """Thread-safe list of received JSON messages."""

    def __init__(self) -> None:
        self.items: list[dict] = []
        self.lock = threading.Lock()

    def add(self, raw: str | bytes) -> None:
        with self.lock:
            self.items.append(json.loads(raw))

    def where(self, pred: Callable[[dict], bool]) -> list[dict]:
        with self.lock:
            return [m for m in self.items if pred(m)]


def metric_value(text: str, name: str) -> float:
    """The sum of the samples ``name`` in Prometheus text, 0.0 when there is none.

    ``name`` may carry a label set to read one series:
    ``metric_value(text, 'pipeline_consumer_breaker_transitions_total{state="open"}')``.
    """
    return sum(
        (
            float(line.split()[-1])
            for line in text.splitlines()
            if line.startswith(name + " ") or line.startswith(name + "{")
        ),
        0.0,
    )


def scraped(url: str, name: str) -> float:
    """``metric_value`` of what the metrics endpoint ``url`` serves now."""
    return metric_value(httpx.get(url).text, name)


@contextmanager
def taken_port() -> Iterator[int]:
    """A loopback port that a socket listens on until the block ends."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def closed_port() -> int:
    """A loopback port that nothing listens on: bound, then let go."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
