"""The embedded Mosquitto keeps sessions and queued QoS 1 messages across a graceful restart.

Started as root, Mosquitto used to drop to the user ``mosquitto``, which could not
write its persistence file into the state dir: a restart came back without the
bridge's session and ~600 messages queued for it were lost at 200 msg/s.
"""

from __future__ import annotations

import time

import paho.mqtt.client as mqtt
import pytest

from pipeline._mqtt_plugin import TOOL_USER
from pipeline.auth import mqtt_password
from pipeline.stack import Stack

N = 50


def _client(stack: Stack, client_id: str, clean: bool) -> mqtt.Client:
    """A client of the stack's (authenticated) Mosquitto, as its tool account."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean)
    client.username_pw_set(TOOL_USER, mqtt_password(stack.secret, TOOL_USER))
    return client


def _pump(client: mqtt.Client, done, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        client.loop(0.05)
    assert done(), "timed out"


@pytest.fixture
def broker(tmp_path):
    stack = Stack.with_ports(auto=True, state_dir=tmp_path / "stack")
    stack.start_service("mosquitto")
    try:
        yield stack
    finally:
        stack.stop()


def test_a_graceful_restart_keeps_a_persistent_session_and_its_queue(broker):
    port = broker.ports["mqtt"]
    keeper = _client(broker, "keeper", clean=False)
    subscribed: list[int] = []
    keeper.on_subscribe = lambda *a: subscribed.append(1)
    keeper.connect("127.0.0.1", port)
    keeper.subscribe("persist/#", qos=1)
    _pump(keeper, lambda: bool(subscribed))
    keeper.disconnect()
    keeper.loop(0.1)

    sender = _client(broker, "sender", clean=True)
    acked: list[int] = []
    sender.on_publish = lambda *a: acked.append(1)
    sender.connect("127.0.0.1", port)
    for i in range(N):
        sender.publish(f"persist/{i}", b"x", qos=1)
    _pump(sender, lambda: len(acked) == N)
    sender.disconnect()

    broker.restart("mosquitto")
    assert "Permission denied" not in open(broker.procs["mosquitto"].log).read()

    keeper = _client(broker, "keeper", clean=False)
    got: list[str] = []
    present: list[bool] = []
    keeper.on_connect = lambda c, u, flags, rc, p: present.append(flags.session_present)
    keeper.on_message = lambda c, u, m: got.append(m.topic)
    keeper.connect("127.0.0.1", port)
    _pump(keeper, lambda: len(got) >= N)
    keeper.disconnect()
    assert present == [True]
    assert sorted(got) == sorted(f"persist/{i}" for i in range(N))
