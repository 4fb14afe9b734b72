"""Small clients for tests: wait on conditions, collect messages, publish traces."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt


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


def mqtt_client(url_port: int, client_id: str = "") -> mqtt.Client:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
    client.connect("127.0.0.1", url_port)
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
