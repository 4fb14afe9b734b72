"""The bridge across a Kafka crash: nothing lost, per-device order kept."""

from __future__ import annotations

import json
import time
from collections import defaultdict

import pytest
from kafka import KafkaConsumer, TopicPartition

from tests.helpers import mqtt_client, scraped, traced, wait_for

pytestmark = pytest.mark.integration

DEVICES = 20
RATE = 400  # msg/s offered, bounded: the box is shared
SECONDS = 14
OUTAGE_AT_S, OUTAGE_S = 3.0, 5.0


def read_topic(bootstrap: str, topic: str, want: int, timeout: float) -> list[tuple[bytes, dict]]:
    """Every record of ``topic`` (key, decoded value), partition by partition, in log order."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    out: list[tuple[bytes, dict]] = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < want and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                out.extend((r.key, json.loads(r.value)) for r in records)
    finally:
        consumer.close()
    return out


def test_kafka_sigkilled_for_five_seconds_loses_nothing_and_keeps_per_device_order(own_stack):
    s = own_stack
    run = f"kafka-kill-{time.time_ns()}"
    devices = [f"kk-{i:02d}" for i in range(DEVICES)]
    pub = mqtt_client(s.ports["mqtt"])
    total = RATE * SECONDS
    killed = restarted = False
    start = time.monotonic()
    infos = []
    try:
        for n in range(total):
            due = start + n / RATE
            ahead = due - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
            elapsed = time.monotonic() - start
            if not killed and elapsed >= OUTAGE_AT_S:
                s.kill("kafka")  # SIGKILL: a crash, no clean shutdown
                killed, killed_at = True, time.monotonic()
            if killed and not restarted and time.monotonic() - killed_at >= OUTAGE_S:
                # The outage bit: records wait on Kafka, unacknowledged, none given up.
                waiting = scraped(s.urls["bridge_metrics"], "pipeline_bridge_inflight_messages")
                s.start_service("kafka")  # returns once the broker answers again
                restarted = True
            d = devices[n % DEVICES]
            infos.append(
                pub.publish(f"sensors/{d}/coordinates", traced(d, n // DEVICES + 1, run), qos=1)
            )
        for info in infos:
            info.wait_for_publish(30)
    finally:
        pub.loop_stop()
    assert killed and restarted
    assert waiting > RATE  # about RATE * OUTAGE_S, capped by Mosquitto's in-flight window

    # Every message acknowledged by Kafka (the bridge PUBACKs only then) ...
    produced = 'pipeline_bridge_produced_messages_total{topic="mqtt-messages"}'
    wait_for(lambda: scraped(s.urls["bridge_metrics"], produced) >= total, 60, "Kafka acks")
    assert scraped(s.urls["bridge_metrics"], "pipeline_bridge_produce_errors_total") == 0

    # ... and really in the log: read it back, once each, in order per device.
    records = read_topic(s.urls["kafka"], "mqtt-messages", total, timeout=60)
    seqs: dict[str, list[int]] = defaultdict(list)
    for key, msg in records:
        if msg.get("trace", {}).get("run") == run:
            assert key.decode() == msg["device_id"]
            seqs[msg["device_id"]].append(msg["trace"]["seq"])
    per_device = total // DEVICES
    assert sorted(seqs) == devices
    assert {d: len(v) for d, v in seqs.items()} == {d: per_device for d in devices}
    assert all(v == list(range(1, per_device + 1)) for v in seqs.values())
