"""The AMQP users' codec path (against pika's own encoder), URL parsing, the MQTT vs AMQP rows."""

from __future__ import annotations

import socket
import time
from types import SimpleNamespace

import pytest
from pika import frame as pframe
from pika import spec

from report._protocols import protocol_rows
from telemetry import envelope
from telemetry.collector import Collector
from telemetry.ledger import Ledger
from users._amqp_client import AmqpConnection
from users.amqp import parse_amqp_url
from users.broker_compare import mqtt_wire_bytes
from users.exceptions import ConfigError


def test_amqp_urls_default_to_guest_and_the_root_vhost():
    u = parse_amqp_url("amqp://127.0.0.1")
    assert (u.host, u.port, u.username, u.password, u.vhost) == (
        "127.0.0.1", 5672, "guest", "guest", "/",
    )  # fmt: skip
    u = parse_amqp_url("amqp://a%40b:p%2Fw@h:5673/prod")
    assert (u.username, u.password, u.port, u.vhost) == ("a@b", "p/w", 5673, "prod")
    assert "p/w" not in str(u)
    with pytest.raises(ConfigError, match="amqp://"):
        parse_amqp_url("mqtt://127.0.0.1:1883")


def _connected_pair(**kwargs):
    ours, theirs = socket.socketpair()
    conn = AmqpConnection("127.0.0.1", 1, "u", "p", **kwargs)
    conn._sock = ours
    conn.open = True
    return conn, theirs


def test_a_publish_is_exactly_the_three_frames_pika_encodes():
    conn, peer = _connected_pair()
    props = spec.BasicProperties(delivery_mode=2)
    body = b'{"x":1}' * 30
    tags = [conn.publish("sensors", "sensors.r-1.coordinates", body, props) for _ in range(2)]
    want = b"".join(
        (
            pframe.Method(
                1, spec.Basic.Publish(exchange="sensors", routing_key="sensors.r-1.coordinates")
            ).marshal(),
            pframe.Header(1, len(body), props).marshal(),
            pframe.Body(1, body).marshal(),
        )
    )
    assert peer.recv(65536) == want * 2
    assert tags == [1, 2]  # what the broker's confirms will name
    assert conn.bytes_out == conn.meter[0] == 2 * len(want)


def test_deliveries_and_confirms_are_decoded_across_split_reads():
    delivered, acks = [], []
    conn, peer = _connected_pair(
        on_deliver=lambda *a: delivered.append(a),
        on_ack=lambda *a: acks.append(a),
        ack_deliveries=True,
    )
    body = b"x" * 300
    deliver = spec.Basic.Deliver("c1", 7, True, "sensors", "sensors.r-2.coordinates")
    data = b"".join(
        (
            pframe.Method(1, spec.Basic.Ack(5, True)).marshal(),
            pframe.Method(1, deliver).marshal(),
            pframe.Header(1, len(body), spec.BasicProperties()).marshal(),
            pframe.Body(1, body[:100]).marshal(),
            pframe.Body(1, body[100:]).marshal(),
        )
    )
    for cut in (3, 40, 70, len(data)):  # any split of the stream into reads
        conn._buf += data[:cut]
        data = data[cut:]
        conn._frames(123)
    assert acks == [(5, True, False)]
    assert delivered == [("sensors.r-2.coordinates", body, 7, True, 123)]
    # one Basic.Ack (multiple) for what that read delivered
    assert peer.recv(100) == pframe.Method(1, spec.Basic.Ack(7, True)).marshal()


def test_mqtt_wire_bytes_are_the_publish_packet_and_its_puback():
    # fixed header 1 + remaining length 2 (134 > 127) + topic 2+30 + packet id 2 + payload 100
    assert mqtt_wire_bytes("sensors/robot-0001/coordinates", 100, 1) == (3 + 32 + 2 + 100, 4)
    assert mqtt_wire_bytes("sensors/robot-0001/coordinates", 100, 0) == (3 + 32 + 100, 0)
    assert mqtt_wire_bytes("sensors/robot-0001/coordinates", 16, 1) == (2 + 32 + 2 + 16, 4)


def test_a_broker_subscriber_is_not_charged_the_other_protocols_messages():
    ledger = Ledger("r")
    sub = ledger.subscriber("mqtt", srcs=("mqtt",))
    t = time.time_ns() + 1_000_000
    ledger.published("amqp-1", 1, t, t, src="amqp")
    ledger.published("robot-1", 1, t, t)
    sub.received(envelope.build("robot-1", 1, 2, run="r", seq=1, t0=t, tp=t))
    collector = Collector("r", grace_s=1, drain_s=1)
    collector.merge("local", ledger.final())
    e2e = collector.e2e()
    assert set(e2e["paths"]) == {"mqtt→mqtt"}
    assert e2e["paths"]["mqtt→mqtt"]["totals"]["lost"] == 0
    assert e2e["subscribers"][0]["srcs"] == ["mqtt"]


def test_the_comparison_rows_divide_delivered_by_broker_cpu_and_end_with_the_ratio():
    def path(delivered, p50_us):
        return {"totals": {"published": delivered, "delivered": delivered, "lost": 0,
                           "duplicated": 0},
                "latency": {"total": {"p50_us": p50_us, "p99_us": 2 * p50_us, "max_us": 3 * p50_us}}}  # fmt: skip

    run = SimpleNamespace(
        protocols={
            "protocols": {
                "mqtt": {"broker": "mosquitto", "broker_cpu_s": 1.0, "wire": {"per_message": 400}},
                "amqp": {"broker": "rabbitmq", "broker_cpu_s": 4.0, "wire": {"per_message": 600}},
            }
        },  # fmt: skip
        e2e={"paths": {"mqtt→mqtt": path(10_000, 1000), "amqp→amqp": path(10_000, 3000)}},
    )
    mqtt, amqp, ratio = protocol_rows(run)
    assert (mqtt["per_core"], amqp["per_core"]) == (10_000, 2_500)
    assert (mqtt["p50_ms"], amqp["p99_ms"]) == (1.0, 6.0)
    assert ratio["per_core"] == 0.25 and ratio["bytes"] == 1.5 and ratio["p50_ms"] == 3.0
    assert protocol_rows(SimpleNamespace(protocols=None, e2e={})) == []
