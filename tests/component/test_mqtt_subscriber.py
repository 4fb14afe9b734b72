"""MqttSubscriber on the shared Mosquitto: every device message counted, its session gone after."""

from __future__ import annotations

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from tests.harness import LocustRun
from users import MqttDevice, MqttSubscriber
from users._config import parse_mqtt_url

PATH = "mqtt→mqtt"


class Watcher(MqttSubscriber):
    fixed_count = 1
    topic = "subtest/+/coordinates"


class Device(MqttDevice):
    interval = 0.02
    publish_topic = "subtest/{device_id}/coordinates"


def session_present(url: str, client_id: str) -> bool:
    """Does the broker still hold a session for ``client_id``? (MQTT 5 CONNACK flag)."""
    u = parse_mqtt_url(url)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id, protocol=mqtt.MQTTv5)
    found: list[bool] = []
    client.on_connect = lambda c, _u, flags, _rc, _p: found.append(flags.session_present)
    client.connect(u.host, u.port, clean_start=False)
    while not found:
        client.loop(0.1)
    client.disconnect()
    return found[0]


def test_every_message_arrives_and_the_session_ends_with_the_user(mqtt_url, tmp_path):
    with LocustRun([Watcher, Device], "--mqtt-url", mqtt_url, results=tmp_path) as run:
        run.start(3)
        run.wait(lambda: run.delivered(PATH) >= 200, 20, "200 deliveries")
        client_id = f"ps-{run.ledger.run_id[-8:]}-sub-0001"
        assert run.count("subscribe:1:subtest/+/coordinates", "MQTT") == 1
    totals = run.e2e["paths"][PATH]["totals"]
    assert (totals["lost"], totals["duplicated"]) == (0, 0), totals
    # all but what was published before the watcher had subscribed or after it stopped
    # (neither expected of it): up to 1 s of two devices at 50 msg/s on a busy box
    assert 0 <= totals["published"] - totals["delivered"] <= 100, totals
    assert set(run.e2e["paths"]) == {PATH}
    assert not session_present(mqtt_url, client_id)  # not queueing for nobody
