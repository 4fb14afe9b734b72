"""The bridge across crashes: a Kafka broker's and its own. Nothing lost, order kept."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Callable

import pytest
from kafka import KafkaConsumer, TopicPartition

from tests.helpers import mqtt_client, scraped, traced, wait_for

pytestmark = pytest.mark.integration

DEVICES = 20
RATE = 400  # msg/s offered, bounded: the box is shared
SECONDS = 14
OUTAGE_AT_S, OUTAGE_S = 3.0, 5.0
PRODUCED = 'pipeline_bridge_produced_messages_total{topic="mqtt-messages"}'


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


def traffic_with_outage(stack, run: str, crash: Callable[[], None], recover: Callable[[], None]):
    """Publish RATE msg/s QoS1 for SECONDS; crash at OUTAGE_AT_S, recover OUTAGE_S later."""
    devices = [f"{run[:8]}-{i:02d}" for i in range(DEVICES)]
    pub = mqtt_client(stack)
    total = RATE * SECONDS
    crashed_at = None
    recovered = False
    start = time.monotonic()
    infos = []
    try:
        for n in range(total):
            ahead = start + n / RATE - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
            if crashed_at is None and time.monotonic() - start >= OUTAGE_AT_S:
                crash()
                crashed_at = time.monotonic()
            if crashed_at and not recovered and time.monotonic() - crashed_at >= OUTAGE_S:
                recover()
                recovered = True
            d = devices[n % DEVICES]
            infos.append(
                pub.publish(f"sensors/{d}/coordinates", traced(d, n // DEVICES + 1, run), qos=1)
            )
        for info in infos:
            info.wait_for_publish(30)
    finally:
        pub.loop_stop()
    assert crashed_at is not None and recovered
    return devices, total


def sequences(stack, run: str, total: int) -> dict[str, list[int]]:
    """seq numbers of this run's records per device, in Kafka's log order; keys checked."""
    seqs: dict[str, list[int]] = defaultdict(list)
    for key, msg in read_topic(stack.urls["kafka"], "mqtt-messages", total, timeout=60):
        if msg.get("trace", {}).get("run") == run:
            assert key.decode() == msg["device_id"]
            seqs[msg["device_id"]].append(msg["trace"]["seq"])
    return seqs


def test_kafka_sigkilled_for_five_seconds_loses_nothing_and_keeps_per_device_order(own_stack):
    s = own_stack
    run = f"kkill-{time.time_ns()}"
    waiting: list[float] = []

    def recover() -> None:
        # The outage bit: records wait on Kafka, unacknowledged, none given up.
        waiting.append(scraped(s.urls["bridge_metrics"], "pipeline_bridge_inflight_messages"))
        s.start_service("kafka")  # returns once the broker answers again

    devices, total = traffic_with_outage(s, run, lambda: s.kill("kafka"), recover)
    assert waiting[0] > RATE  # about RATE * OUTAGE_S, capped by Mosquitto's in-flight window

    # Every message acknowledged by Kafka (the bridge PUBACKs only then) ...
    wait_for(lambda: scraped(s.urls["bridge_metrics"], PRODUCED) >= total, 60, "Kafka acks")
    assert scraped(s.urls["bridge_metrics"], "pipeline_bridge_produce_errors_total") == 0
    # ... and really in the log: once each, in order per device (the idempotent
    # producer's retries neither duplicate nor reorder).
    seqs = sequences(s, run, total)
    per_device = total // DEVICES
    assert sorted(seqs) == devices
    assert dict(seqs) == {d: list(range(1, per_device + 1)) for d in devices}


def test_the_bridge_sigkilled_and_restarted_loses_nothing(own_stack):
    s = own_stack
    run = f"bkill-{time.time_ns()}"
    devices, total = traffic_with_outage(
        s, run, lambda: s.kill("bridge"), lambda: s.start_service("bridge")
    )
    per_device = total // DEVICES
    # What the dead bridge had produced but not yet PUBACKed, Mosquitto resends to
    # the restarted one (same client id, persistent session): at least once.

    def complete() -> dict[str, list[int]] | None:
        got = sequences(s, run, total)
        return got if all(len(set(got.get(d, ()))) == per_device for d in devices) else None

    seqs = wait_for(complete, 90, "every message of the run in Kafka")
    assert sorted(seqs) == devices
    for v in seqs.values():
        assert set(v) == set(range(1, per_device + 1))
        first_seen = list(dict.fromkeys(v))
        assert first_seen == sorted(first_seen)  # per-device order of first arrival
    duplicates = sum(len(v) for v in seqs.values()) - total
    assert duplicates <= 1000  # at most Mosquitto's in-flight window to the bridge
