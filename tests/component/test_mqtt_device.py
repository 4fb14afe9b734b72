"""MqttDevice against a real Mosquitto: what a separate subscriber really receives.

A few devices run for a couple of seconds under Locust's own ``LocalRunner``;
a paho subscriber (its own connection) counts every message, and the Locust
entries are checked against it.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from typing import Any

import gevent
import paho.mqtt.client as mqtt
import pytest
from locust.env import Environment

import telemetry
from telemetry import envelope
from tests.helpers import wait_for
from users import MqttDevice
from users._config import parse_mqtt_url
from users._mqtt_client import CLOSED


class Subscriber:
    """A paho client on its own connection, collecting device messages by device id."""

    def __init__(self, url: str, topic: str = "sensors/+/coordinates", qos: int = 2) -> None:
        u = parse_mqtt_url(url)
        self.by_device: dict[str, list[envelope.Trace]] = defaultdict(list)
        self.raw: list[tuple[str, bytes]] = []
        self._subscribed = False
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: setattr(self, "_subscribed", True)
        self.client.connect(u.host, u.port)
        self.client.subscribe(topic, qos)
        self.client.loop_start()
        wait_for(lambda: self._subscribed, 10, "the counting subscriber's SUBACK")

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self.raw.append((msg.topic, msg.payload))
        trace = envelope.parse(msg.payload)
        if trace is not None:
            self.by_device[trace.device_id].append(trace)

    @property
    def count(self) -> int:
        return sum(len(v) for v in self.by_device.values())

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def options(tmp_path) -> argparse.Namespace:
    """Telemetry options for a quick run; results go to ``tmp_path``."""
    return argparse.Namespace(
        results_dir=str(tmp_path / "{run_id}"),
        run_id="",
        e2e_grace=1.0,
        e2e_drain=0.2,
        locustfile="tests",
    )


class Swarm:
    """Devices of ``cls`` under a LocalRunner with telemetry installed."""

    def __init__(self, cls: type[MqttDevice], tmp_path) -> None:
        self.env = Environment(user_classes=[cls], parsed_options=options(tmp_path))
        self.runner = self.env.create_local_runner()
        self.plugin = telemetry.install(self.env)
        self.devices: list[MqttDevice] = []

    def start(self, n: int) -> list[MqttDevice]:
        self.runner.start(n, spawn_rate=1000)
        wait_for(lambda: self.runner.user_count == n, 10, f"{n} users")
        self.devices = [g.args[0] for g in self.runner.user_greenlets]
        wait_for(lambda: self.ok("connect") >= n, 10, f"{n} CONNACKs")
        return self.devices

    def stop(self) -> None:
        self.runner.stop()  # drains (ledger.draining), then on_stop: outstanding acks, DISCONNECT
        self.runner.quit()

    def entry(self, name: str) -> Any:
        return self.env.stats.entries.get((name, "MQTT"))

    def ok(self, name: str) -> int:
        e = self.entry(name)
        return 0 if e is None else e.num_requests - e.num_failures

    @property
    def published(self) -> int:
        return sum(d.seq for d in self.devices)


def device_class(url: str, **attrs: Any) -> type[MqttDevice]:
    return type("Device", (MqttDevice,), {"url": url, "interval": 0.02, "qos": 1, **attrs})


def assert_complete(
    sub: Subscriber, devices: list[MqttDevice], run_id: str, *, exact: bool = True
) -> None:
    """Every device's sequence 1..n arrived (exactly once if ``exact``), envelopes valid."""
    for d in devices:
        traces = sub.by_device[d.device_id]
        seqs = [t.seq for t in traces]
        if exact:
            assert sorted(seqs) == list(range(1, d.seq + 1)), (
                f"{d.device_id}: {len(seqs)} of {d.seq}"
            )
        else:
            assert set(seqs) == set(range(1, d.seq + 1)), (
                f"{d.device_id}: missing {set(range(1, d.seq + 1)) - set(seqs)}"
            )
        first = min(traces, key=lambda t: t.seq)
        for t in traces:
            assert t.run == run_id and t.hops == {}
            assert t.tp >= t.t0  # sent at or after its intended time
            # the open-model timetable: t0 is start + (seq - 1) x interval, exactly
            assert t.t0 - first.t0 == (t.seq - first.seq) * d.interval_ns
            assert {"x", "y", "timestamp"} <= set(t.fields)


@pytest.mark.parametrize(
    ("qos", "version"),
    [(1, "3.1.1"), (0, "3.1.1"), (2, "3.1.1"), (1, "5"), (2, "5")],
)
def test_devices_publish_exactly_what_arrives(mqtt_url, tmp_path, qos, version):
    sub = Subscriber(mqtt_url)
    swarm = Swarm(device_class(mqtt_url, qos=qos, mqtt_version=version), tmp_path)
    try:
        devices = swarm.start(5)
        gevent.sleep(2.0)
        swarm.stop()
        published = swarm.published
        assert published >= 5 * 2.0 / 0.02 * 0.8  # the timetable kept its pace
        wait_for(lambda: sub.count >= published, 10, f"{published} messages at the subscriber")
        gevent.sleep(0.3)  # nothing more may come
        assert sub.count == published
        assert_complete(sub, devices, swarm.plugin.run_id)
        assert swarm.plugin.ledger.published_total == published
        e = swarm.entry(f"publish:{qos}:sensors/+/coordinates")
        assert e.num_requests == published and e.num_failures == 0
        if qos == 0:
            assert e.num_none_requests == published  # counted, no made-up latency
        else:
            # every publish timed from PUBLISH to its acknowledgement (a real round trip)
            assert e.num_none_requests == 0 and e.total_response_time > 0
        assert swarm.ok("connect") == 5 and swarm.ok("subscribe:1:orin/+/command") == 5
        assert sum(x.num_failures for x in swarm.env.stats.entries.values()) == 0
        # after DISCONNECT the broker closes first (well before CLOSE_WAIT_S): no TIME_WAIT here
        wait_for(lambda: all(d.client.state == CLOSED for d in devices), 1.5, "the broker to close")
    finally:
        sub.close()
        swarm.runner.quit()


def test_command_receipt_is_reported(mqtt_url, tmp_path):
    swarm = Swarm(device_class(mqtt_url, interval=0), tmp_path)
    try:
        devices = swarm.start(2)
        wait_for(lambda: swarm.ok("subscribe:1:orin/+/command") == 2, 10, "SUBACKs")
        pub = Subscriber(mqtt_url, topic="nothing/here")
        for i, d in enumerate(devices):
            command = {
                "device_id": d.device_id,
                "command": "slam",
                "command_id": f"c{i}",
                "issued_at": time.time_ns(),
            }
            pub.client.publish(d.command_topic_name, json.dumps(command), qos=1)
        wait_for(lambda: swarm.ok("command:orin/+/command") == 2, 10, "2 command entries")
        e = swarm.entry("command:orin/+/command")
        assert e.num_none_requests == 0 and 0 <= e.max_response_time < 1000
        assert [d.commands for d in devices] == [1, 1]
        pub.close()
    finally:
        swarm.stop()


def test_takeover_reconnects_and_loses_nothing(mqtt_url, tmp_path):
    """A second client with the device's client id kicks it; it comes back and catches up."""
    sub = Subscriber(mqtt_url)
    swarm = Swarm(device_class(mqtt_url, reconnect_min=0.1, reconnect_max=0.5), tmp_path)
    try:
        devices = swarm.start(2)
        gevent.sleep(0.5)
        victim = devices[0]
        u = parse_mqtt_url(mqtt_url)
        kicker = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=victim.device_id)
        kicker.connect(u.host, u.port)
        kicker.loop_start()
        wait_for(lambda: victim.client.losses >= 1, 10, "the device to be kicked")
        kicker.loop_stop()
        kicker.disconnect()
        wait_for(lambda: swarm.ok("reconnect") >= 1, 10, "the reconnect entry")
        gevent.sleep(0.5)
        swarm.stop()
        published = swarm.published
        wait_for(
            lambda: (
                len({(t.device_id, t.seq) for v in sub.by_device.values() for t in v}) >= published
            ),
            10,
            "every seq",
        )
        assert_complete(
            sub, devices, swarm.plugin.run_id, exact=False
        )  # at-least-once: a resend may duplicate
        assert victim.client.reconnects >= 1
        lost = swarm.entry("connection lost")
        assert lost.num_failures >= 1 and lost.num_none_requests == lost.num_requests
        e = swarm.entry("publish:1:sensors/+/coordinates")
        assert e.num_requests == published  # every publish acknowledged exactly once
    finally:
        sub.close()
        swarm.runner.quit()
