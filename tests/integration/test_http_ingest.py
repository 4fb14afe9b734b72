"""HTTP ingest in the real stack: POST /api/ingest lands in Kafka and Redis; HttpDevice
and MQTT fleets taking turns reach the same subscribers with nothing lost, and the
comparison writes its figures into the results and the report."""

from __future__ import annotations

import json
import time
import uuid

import httpx
import pytest
from kafka import KafkaConsumer, TopicPartition

from pipeline.config import DEFAULTS
from report.cli import main as analyze
from telemetry.ingest_compare import COMPARISON_FORMAT
from tests.helpers import stack_token, traced, wait_for
from tests.integration.test_bridge import dead_letters, latest
from tests.swarm import run_locust

pytestmark = pytest.mark.integration


def record_at(stack, partition: int, offset: int) -> tuple[bytes, dict]:
    """(key, value) of the record at ``partition``/``offset`` of the device topic."""
    consumer = KafkaConsumer(bootstrap_servers=stack.urls["kafka"])
    tp = TopicPartition(DEFAULTS.kafka_topic, partition)
    try:
        consumer.assign([tp])
        consumer.seek(tp, offset)
        for _ in range(40):
            for rec in consumer.poll(timeout_ms=500).get(tp, []):
                if rec.offset == offset:
                    return rec.key, json.loads(rec.value)
        raise AssertionError(f"no record at {partition}/{offset}")
    finally:
        consumer.close()


def test_a_posted_message_is_in_kafka_when_answered_then_in_redis(stack):
    device = f"it-http-{uuid.uuid4().hex[:6]}"
    body = json.loads(traced(device, 1))
    del body["device_id"]  # the original devices' format: the path names the device
    sent_ns = time.time_ns()
    r = httpx.post(
        f"{stack.urls['gateway']}/api/ingest/{device}",
        content=json.dumps(body),
        headers={"Authorization": f"Bearer {stack_token(stack)}"},
    )
    assert r.status_code == 202, r.text
    where = r.json()
    key, value = record_at(stack, where["partition"], where["offset"])
    assert key == device.encode()
    assert value["device_id"] == device  # filled in from the path, as the bridge does
    assert sent_ns <= value["trace"]["hops"]["gateway_ingest"] <= time.time_ns()
    assert "bridge" not in value["trace"]["hops"]
    stored = wait_for(lambda: latest(stack, device), 20, "the message in Redis")
    assert stored["trace"]["hops"]["gateway_ingest"] == value["trace"]["hops"]["gateway_ingest"]
    assert stored["trace"]["hops"]["consumer"] >= stored["trace"]["hops"]["gateway_ingest"]


def test_a_rejected_post_is_dead_lettered_with_its_reason(stack):
    device = f"it-http-{uuid.uuid4().hex[:6]}"
    r = httpx.post(
        f"{stack.urls['gateway']}/api/ingest/{device}",
        content=traced("someone-else", 1),
        headers={"Authorization": f"Bearer {stack_token(stack)}"},
    )
    assert (r.status_code, r.json()["reason"]) == (422, "device_mismatch")
    (letter,) = dead_letters(stack, f"/api/ingest/{device}", 1)
    assert (letter["reason"], letter["src"]) == ("device_mismatch", "http")
    assert json.loads(letter["payload"])["device_id"] == "someone-else"
    assert latest(stack, device) is None


def test_the_comparison_runs_headless_and_lands_in_the_results_and_the_report(stack, tmp_path):
    out = tmp_path / "run"
    run_locust(
        stack, out, "locustfiles/http_vs_mqtt.py",
        "--compare-devices", "3", "--compare-seconds", "2", "--compare-warmup", "0.5",
        "--device-interval", "0.05", "--e2e-drain", "1", "--e2e-grace", "1",
    )  # fmt: skip
    doc = json.loads((out / "comparison.json").read_text())
    assert doc["format"] == COMPARISON_FORMAT and doc["mode"] == "fixed"
    assert [(p["step"], p["src"], p["devices"]) for p in doc["phases"]] == [
        (1, "mqtt", 3),
        (1, "http", 3),
    ]
    for p in doc["phases"]:
        assert p["offered_per_s"] == 60.0
        # a phase acks what its devices send in its window, and a device that was late before
        # the window catches up in it (CI: MQTT 70.9/s against 60 offered, a 2.1-s window):
        # never more than was scheduled since the fleet was up, warm-up and one shape tick
        # (1 s) included. Counting an ack twice (2x offered) fails. HTTP may fall behind on a
        # busy machine (one request in flight per device), MQTT keeps up
        scheduled = p["offered_per_s"] * (p["window_s"] + 0.5 + 1.0)
        assert 0 < p["acked"] <= scheduled, (p, scheduled)
        assert p["failed"] == 0 and p["connections"] == 3, p
        assert p["ack_ms"]["count"] == p["acked"] and p["e2e_ms"]["count"] >= p["acked"], p
        assert p["per_core_per_s"] > 0 and p["bytes_sent_per_msg"] > 100, p
    mqtt, http = doc["phases"]
    assert mqtt["acked_per_s"] >= 30, mqtt
    assert mqtt["bytes_received_per_msg"] < 10 < http["bytes_received_per_msg"]  # PUBACK vs 202
    # both doors deliver everything, through the same pipeline, to the same subscribers
    e2e = json.loads((out / "e2e.json").read_text())
    assert set(e2e["published"]["by_src"]) == {"mqtt", "http"}
    for path in ("mqtt→stomp", "http→stomp"):
        totals = e2e["paths"][path]["totals"]
        assert totals["lost"] == totals["duplicated"] == 0, (path, totals)
        assert totals["delivered"] == totals["expected"] > 0, (path, totals)
    assert "http" in e2e["paths"]["http→stomp"]["latency"]  # its own first leg
    assert "mqtt" not in e2e["paths"]["http→stomp"]["latency"]
    assert "ratios" in doc["summary"]
    assert (out / "comparison.csv").read_text().count("\n") == 3
    assert analyze([str(out), "--no-charts", "--quiet"]) == 0
    html = (out / "report.html").read_text()
    assert 'id="ingest-comparison"' in html and "MQTT 3–5× the throughput" in html
    assert "## HTTP vs MQTT ingest" in (out / "summary.md").read_text()
