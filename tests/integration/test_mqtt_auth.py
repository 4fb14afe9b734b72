"""The embedded stack's MQTT is secured: every attack of issue 11 is refused while good
traffic still flows (Mosquitto -> bridge -> Kafka -> consumer -> Redis)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid

import paho.mqtt.client as mqtt
import pytest
import redis

from pipeline._mqtt_plugin import GATEWAY_USER, TOOL_USER
from pipeline.auth import mqtt_password, verify_token
from pipeline.config import COUNTS_KEY, DEFAULTS
from tests.harness import LocustRun
from tests.helpers import mqtt_client, traced, wait_for
from users.mqtt import MqttDevice

pytestmark = pytest.mark.integration


def ids(*names: str) -> list[str]:
    tag = uuid.uuid4().hex[:6]
    return [f"auth-{tag}-{n}" for n in names]


def connect(stack, username: str | None, password: str | None = None, client_id: str = ""):
    """(client, CONNACK reason) of a paho client; a refused one is already stopped."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
    if username is not None:
        client.username_pw_set(username, password)
    acks: list = []
    client.on_connect = lambda c, u, flags, reason, props: acks.append(reason)
    client.connect("127.0.0.1", stack.ports["mqtt"])
    # the caller's own loop until CONNACK: a refused client has no thread to stop
    wait_for(lambda: client.loop(0.02) is not None and acks, 5, "CONNACK")
    if acks[0].is_failure:
        client.disconnect()
    else:
        client.loop_start()
    return client, acks[0]


def device(stack, device_id: str):
    client, reason = connect(stack, device_id, mqtt_password(stack.secret, device_id), device_id)
    assert not reason.is_failure, reason
    return client


def count(stack, device_id: str) -> int:
    rds = redis.Redis.from_url(stack.urls["redis"])
    try:
        return int(rds.hget(COUNTS_KEY, device_id) or 0)
    finally:
        rds.close()


def test_anonymous_and_wrong_passwords_are_refused(stack):
    (dev,) = ids("dev")
    assert str(connect(stack, None)[1]) == "Not authorized"
    assert str(connect(stack, dev, "wrong", dev)[1]) == "Not authorized"
    other = mqtt_password(stack.secret, "someone-else")  # another account's password
    assert str(connect(stack, dev, other, dev)[1]) == "Not authorized"
    device(stack, dev).disconnect()


def test_a_device_publishes_and_reads_only_as_itself(stack):
    a, b = ids("a", "b")
    seen_by_tool: list[str] = []
    tool = mqtt_client(stack)
    tool.on_message = lambda c, u, m: seen_by_tool.append(m.topic)
    tool.subscribe("sensors/+/coordinates", qos=1)
    got_a: list[str] = []
    got_b: list[str] = []
    dev_a, dev_b = device(stack, a), device(stack, b)
    dev_a.on_message = lambda c, u, m: got_a.append(m.topic)
    dev_b.on_message = lambda c, u, m: got_b.append(m.topic)
    dev_a.subscribe([("#", 1), (f"orin/{b}/command", 1), (f"orin/{a}/command", 1)])
    dev_b.subscribe(f"orin/{b}/command", qos=1)
    try:
        wait_for(lambda: dev_a.is_connected() and dev_b.is_connected(), 5, "devices")
        # a forges b's coordinates and b's command, then sends its own coordinates
        dev_a.publish(f"sensors/{b}/coordinates", traced(b, 1), qos=1).wait_for_publish(5)
        dev_a.publish(f"orin/{b}/command", b'{"command": "forged"}', qos=1).wait_for_publish(5)
        dev_a.publish(f"sensors/{a}/coordinates", traced(a, 1), qos=1).wait_for_publish(5)
        # the gateway's account, and b itself, reach b: good traffic still flows
        gateway, reason = connect(stack, GATEWAY_USER, mqtt_password(stack.secret, GATEWAY_USER))
        assert not reason.is_failure, reason
        gateway.publish(f"orin/{b}/command", b'{"command": "slam"}', qos=1).wait_for_publish(5)
        gateway.publish(f"orin/{a}/command", b'{"command": "none"}', qos=1).wait_for_publish(5)
        dev_b.publish(f"sensors/{b}/coordinates", traced(b, 2), qos=1).wait_for_publish(5)
        wait_for(
            lambda: count(stack, a) == 1 and count(stack, b) == 1, 20, "good messages in Redis"
        )
        wait_for(lambda: len(got_a) == 1 and len(got_b) == 1, 5, "commands")
        gateway.disconnect()
    finally:
        for c in (dev_a, dev_b, tool):
            c.disconnect()
            c.loop_stop()
    # what the bridge subscribes to: a's own message and b's, never a's forgery of b
    assert sorted(seen_by_tool) == sorted([f"sensors/{a}/coordinates", f"sensors/{b}/coordinates"])
    assert count(stack, b) == 1  # only b's own message reached Kafka and Redis
    # `#` and b's command topic gave a nothing but its own command; b got only the gateway's
    assert got_a == [f"orin/{a}/command"]
    assert got_b == [f"orin/{b}/command"]


def test_nobody_else_can_take_the_bridges_client_id(stack):
    """Before: a client with the bridge's id kicked it off and wiped its session (98 of 300
    messages lost). Now the connection is refused and the bridge loses nothing."""
    (dev,) = ids("dev")
    log = stack.state_dir / "logs" / "bridge.log"
    bridge_connects = log.read_text().count("event=mqtt_connected")
    pub = device(stack, dev)
    tool_password = mqtt_password(stack.secret, TOOL_USER)
    try:
        for seq in range(1, 301):
            pub.publish(f"sensors/{dev}/coordinates", traced(dev, seq), qos=1)
            if seq % 60 == 0:  # the attacks, while the device keeps publishing
                for user, password in (
                    (dev, mqtt_password(stack.secret, dev)),
                    (TOOL_USER, tool_password),
                ):
                    _, reason = connect(stack, user, password, DEFAULTS.bridge_client_id)
                    assert str(reason) == "Not authorized", user
                _, reason = connect(stack, dev, mqtt_password(stack.secret, dev), f"{dev}-x")
                assert str(reason) == "Not authorized"  # nor any id but its own
        wait_for(lambda: count(stack, dev) == 300, 30, "all 300 messages in Redis")
    finally:
        pub.disconnect()
        pub.loop_stop()
    assert log.read_text().count("event=mqtt_connected") == bridge_connects


def test_creds_gives_working_credentials_for_mosquitto_pub(stack):
    (dev,) = ids("dev")
    out = subprocess.run(
        [sys.executable, "-m", "pipeline", "--state-dir", str(stack.state_dir), "creds", dev, "--json"],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    creds = json.loads(out.stdout)
    assert creds["mqtt_username"] == dev
    assert verify_token(stack.secret, creds["token"])["sub"] == dev
    pub = shutil.which("mosquitto_pub") or "mosquitto_pub"
    argv = [pub, "-h", "127.0.0.1", "-p", str(stack.ports["mqtt"]), "-q", "1",
            "-i", creds["mqtt_client_id"], "-u", creds["mqtt_username"],
            "-t", f"sensors/{dev}/coordinates", "-m", traced(dev, 1).decode()]  # fmt: skip
    refused = subprocess.run(argv + ["-P", "not-it"], capture_output=True, text=True, timeout=10)
    assert refused.returncode != 0 and "not authorised" in refused.stderr
    done = subprocess.run(
        argv + ["-P", creds["mqtt_password"]], capture_output=True, text=True, timeout=10
    )
    assert done.returncode == 0, done.stderr
    wait_for(lambda: count(stack, dev) == 1, 20, "the message in Redis")


def test_mqtt_device_publishes_over_tls_with_derived_passwords(stack, tmp_path):
    """MqttDevice's TLS path against the stack's TLS listener (its own CA), each device
    logging in as itself; the messages reach Redis through Kafka."""

    class Device(MqttDevice):
        fixed_count = 2
        interval = 0.05
        qos = 1
        device_id_prefix = f"{ids('tls')[0]}-"

    args = ("--mqtt-url", stack.urls["mqtt_tls"], "--mqtt-secret-file", str(stack.secret_file))
    with LocustRun([Device], *args, results=tmp_path) as run:
        run.start(2)
        names = [f"{Device.device_id_prefix}{n:04d}" for n in (1, 2)]
        wait_for(lambda: all(count(stack, d) >= 10 for d in names), 20, "TLS messages in Redis")
        assert run.count("connect", "MQTT") == 2
        assert run.env.stats.total.num_failures == 0, run.errors()
