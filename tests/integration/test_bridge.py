"""The bridge in the real stack: identity from the topic, the checks at the edge, the DLQ."""

from __future__ import annotations

import json
import time
import uuid

import httpx
import pytest
import redis
from kafka import KafkaConsumer, TopicPartition

from pipeline import _schema
from pipeline.config import COUNTS_KEY, LATEST_KEY
from tests.helpers import metric_value, mqtt_client, traced, wait_for

pytestmark = pytest.mark.integration


def dead_letters(stack, topic: str, want: int, timeout: float = 20.0) -> list[dict]:
    """The DLQ records of MQTT topic ``topic``, read back from Kafka until ``want`` are in."""
    consumer = KafkaConsumer(bootstrap_servers=stack.urls["kafka"])
    tp = TopicPartition("mqtt-messages-dlq", 0)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    found: list[dict] = []
    deadline = time.monotonic() + timeout
    try:
        while len(found) < want and time.monotonic() < deadline:
            for rec in consumer.poll(timeout_ms=500).get(tp, []):
                doc = json.loads(rec.value)
                if doc["topic"] == topic:
                    found.append(doc)
    finally:
        consumer.close()
    return found


def latest(stack, device: str) -> dict | None:
    client = redis.Redis.from_url(stack.urls["redis"])
    try:
        raw = client.get(LATEST_KEY.format(device_id=device))
    finally:
        client.close()
    return json.loads(raw) if raw else None


def test_every_dlq_reason_is_exported_at_zero_or_more(stack):
    text = httpx.get(stack.urls["bridge_metrics"]).text
    for reason in _schema.REASONS:
        assert f'pipeline_bridge_dlq_messages_total{{reason="{reason}"}}' in text


def test_the_original_payload_without_device_id_is_delivered_with_the_id_from_the_topic(stack):
    device = f"robot-orig-{uuid.uuid4().hex[:6]}"
    # What the original server's devices send: mosquitto_pub -t sensors/robot1/coordinates -m ...
    original = b'{"x": 123.45, "y": 67.89, "timestamp": 1691234567}'
    pub = mqtt_client(stack)
    try:
        pub.publish(f"sensors/{device}/coordinates", original, qos=1).wait_for_publish(5)
        got = wait_for(lambda: latest(stack, device), 20, "the original payload in Redis")
    finally:
        pub.loop_stop()
    assert got["device_id"] == device
    assert (got["x"], got["y"], got["timestamp"]) == (123.45, 67.89, 1691234567)


def test_a_device_id_that_contradicts_the_topic_is_dead_lettered_as_device_mismatch(stack):
    device = f"mismatch-{uuid.uuid4().hex[:6]}"
    topic = f"sensors/{device}/coordinates"
    liar = json.dumps({"device_id": "someone-else", "x": 1, "y": 2, "timestamp": 3}).encode()
    before = metric_value(
        httpx.get(stack.urls["bridge_metrics"]).text,
        'pipeline_bridge_dlq_messages_total{reason="device_mismatch"}',
    )
    pub = mqtt_client(stack)
    try:
        pub.publish(topic, liar, qos=1).wait_for_publish(5)
        # A good message after it: once that is in Redis, the bad one has been judged.
        pub.publish(topic, traced(device, 1), qos=1).wait_for_publish(5)
        wait_for(lambda: latest(stack, device), 20, "the good message in Redis")
    finally:
        pub.loop_stop()
    (doc,) = dead_letters(stack, topic, want=1)
    assert doc["reason"] == "device_mismatch"
    assert json.loads(doc["payload"])["device_id"] == "someone-else"
    assert latest(stack, device)["trace"]["seq"] == 1  # the liar never reached Redis
    after = metric_value(
        httpx.get(stack.urls["bridge_metrics"]).text,
        'pipeline_bridge_dlq_messages_total{reason="device_mismatch"}',
    )
    assert after - before >= 1


def test_a_985_deep_message_is_too_deep_and_good_traffic_around_it_is_delivered(stack):
    run = uuid.uuid4().hex[:6]
    bad_topic = f"sensors/deep-{run}/coordinates"
    deep = b'{"x": 1, "y": 2, "timestamp": 3, "extra": ' + b"[" * 985 + b"]" * 985 + b"}"
    assert len(deep) < 2100
    devices = [f"deep-ok-{run}-{i}" for i in range(10)]
    pub = mqtt_client(stack)
    try:
        infos = []
        for seq in range(1, 21):
            if seq == 10:
                infos.append(pub.publish(bad_topic, deep, qos=1))
            for d in devices:
                infos.append(pub.publish(f"sensors/{d}/coordinates", traced(d, seq), qos=1))
        for info in infos:
            info.wait_for_publish(10)

        def all_delivered() -> bool:
            return all((latest(stack, d) or {}).get("trace", {}).get("seq") == 20 for d in devices)

        wait_for(all_delivered, 30, "the last message of every good device in Redis")
    finally:
        pub.loop_stop()
    client = redis.Redis.from_url(stack.urls["redis"])
    try:
        counts = client.hmget(COUNTS_KEY, devices)
    finally:
        client.close()
    assert [int(c) for c in counts] == [20] * len(devices)
    (doc,) = dead_letters(stack, bad_topic, want=1)
    assert doc["reason"] == "too_deep"
    assert doc["size"] == len(deep) and doc["payload"] == deep.decode()
    assert latest(stack, f"deep-{run}") is None
