"""The STOMP, WS, Kafka and REST users in short Locust runs against the real embedded stack.

MqttDevice publishes (QoS 1) through Mosquitto -> bridge -> Kafka -> consumer ->
Redis -> gateway; the subscribers' ledger must account for every message.
"""

from __future__ import annotations

import pytest
from locust import constant

from tests.harness import LocustRun
from tests.helpers import stack_secret
from users.kafka import KafkaProducer
from users.mqtt import MqttDevice
from users.rest import RestCommander
from users.stomp import StompSubscriber
from users.ws import WsSubscriber

pytestmark = pytest.mark.integration

HOPS = ("mqtt", "kafka", "redis", "push")


def stack_args(stack) -> tuple[str, ...]:
    u = stack.urls
    return (
        "--mqtt-url", u["mqtt"],
        "--gateway-url", u["gateway"],
        "--kafka-bootstrap", u["kafka"],
        "--redis-url", u["redis"],
        "--mqtt-secret-file", str(stack.secret_file),  # each device logs in as itself
        f"--jwt-secret={stack_secret(stack)}",
    )  # fmt: skip


def fleet(prefix: str, count: int) -> type[MqttDevice]:
    """MqttDevice with ids ``{prefix}-0001``… (numbered per run: other tests' never collide)."""

    class Device(MqttDevice):
        fixed_count = count
        interval = 0.05
        qos = 1
        device_id_prefix = f"{prefix}-"

    Device.__name__ = f"Device_{prefix.replace('-', '_')}"
    return Device


def complete(totals: dict, devices: int) -> None:
    """No loss, no duplicate, every (subscription, device) pair complete."""
    assert totals["lost"] == 0, totals
    assert totals["duplicated"] == 0, totals
    assert totals["delivered"] == totals["expected"] > 0, totals
    assert totals["devices_complete"] == totals["devices_expected"] == devices, totals


def test_stomp_and_ws_subscribers_account_for_every_device_message(stack, tmp_path):
    devices = fleet("it-sub", 5)

    class All(StompSubscriber):
        fixed_count = 1

    class One(StompSubscriber):
        fixed_count = 1
        destination = "/topic/devices/{device_id}"
        device_ids = ("it-sub-0001",)

    class Raw(WsSubscriber):
        fixed_count = 1

    with LocustRun([devices, All, One, Raw], *stack_args(stack), results=tmp_path) as run:
        run.start(8)
        run.wait(
            lambda: run.delivered("mqtt→stomp") >= 300 and run.delivered("mqtt→ws") >= 250,
            30,
            "messages on both subscriber kinds",
        )
        assert run.count("connect", "STOMP") == 2
        assert run.count("subscribe:/topic/coordinates", "STOMP") == 1
        assert run.count("subscribe:/topic/devices/{id}", "STOMP") == 1
        assert run.count("connect:/coordinates", "WS") == 1
    paths = run.e2e["paths"]
    complete(paths["mqtt→stomp"]["totals"], 5 + 1)  # all devices + the one device
    complete(paths["mqtt→ws"]["totals"], 5)
    assert run.env.stats.total.num_failures == 0, run.errors()
    # every delivery is in the ledger's histograms, with each hop of the path
    for path in ("mqtt→stomp", "mqtt→ws"):
        delivered = paths[path]["totals"]["delivered"]
        assert paths[path]["latency"]["total"]["count"] == delivered
        for hop in HOPS:
            assert paths[path]["latency"][hop]["count"] == delivered, hop
        assert run.count(path, "E2E") == 0  # and not in Locust's request statistics


def test_kafka_producer_messages_reach_the_subscribers_through_the_consumer(stack, tmp_path):
    class Producer(KafkaProducer):
        fixed_count = 2
        interval = 0.05

    class Watch(StompSubscriber):
        fixed_count = 1

    class Raw(WsSubscriber):
        fixed_count = 1

    with LocustRun([Producer, Watch, Raw], *stack_args(stack), results=tmp_path) as run:
        run.start(4)
        run.wait(
            lambda: run.delivered("kafka→stomp") >= 60 and run.delivered("kafka→ws") >= 60,
            30,
            "Kafka messages on the subscribers",
        )
    e2e = run.e2e
    produced = run.entry("produce:mqtt-messages", "KAFKA")
    assert produced.num_requests == e2e["published"]["by_src"]["kafka"] > 0
    assert run.env.stats.total.num_failures == 0, run.errors()
    for path in ("kafka→stomp", "kafka→ws"):
        totals = e2e["paths"][path]["totals"]
        complete(totals, 2)
        assert totals["published"] == produced.num_requests
        latency = e2e["paths"][path]["latency"]
        assert latency["total"]["count"] == totals["delivered"]
        # the path starts at Kafka: no MQTT leg, the first leg is publish -> consumer
        assert latency["kafka"]["count"] == totals["delivered"]
        assert "mqtt" not in latency
    assert not any(p.startswith("mqtt→") for p in e2e["paths"])


def test_rest_commands_reach_the_mqtt_devices(stack, tmp_path):
    devices = fleet("it-cmd", 3)
    accepted: list[str] = []

    class Operator(RestCommander):
        fixed_count = 1
        wait_time = constant(0.05)
        refresh_interval = 0.5

        def on_command_accepted(self, device_id, body):
            accepted.append(device_id)

    received = "command:orin/+/command"
    with LocustRun([devices, Operator], *stack_args(stack), results=tmp_path) as run:
        run.start(4)
        # the shared stack holds other tests' devices too: the commander discovers
        # them all from GET /api/coordinates; only this fleet listens for commands
        ours = lambda: [d for d in accepted if d.startswith("it-cmd-")]  # noqa: E731
        run.wait(lambda: len(ours()) >= 10, 30, "10 accepted commands to this fleet")
        sent = len(ours())
        # the devices report the REST -> MQTT round trip from the command's issued_at
        run.wait(lambda: run.count(received, "MQTT") >= sent, 10, "the commands on the devices")
        round_trip = run.entry(received, "MQTT")
        assert round_trip.num_failures == 0 and round_trip.avg_response_time > 0
        endpoints = (
            ("/api/health", "GET"),
            ("/api/stats", "GET"),
            ("/api/coordinates", "GET"),
            ("/api/coordinates/{id}", "GET"),
            ("/api/commands/{id}", "POST"),
        )
        # weight-1 tasks are random picks: wait until each has run, not for a lucky draw
        run.wait(lambda: all(run.count(n, m) for n, m in endpoints), 30, "every endpoint used")
        for name, method in endpoints:
            entry = run.entry(name, method)
            assert entry.num_requests > 0 and entry.num_failures == 0, (name, run.errors())
    assert set(ours()) <= {"it-cmd-0001", "it-cmd-0002", "it-cmd-0003"}
