"""The bridge: MQTT `sensors/+/coordinates` -> Kafka `mqtt-messages`.

Reception never waits on Kafka. The MQTT network thread only appends to a
bounded buffer; a producer thread validates, stamps `trace.hops.bridge` and
produces keyed by device id. The bridge holds a persistent QoS1 session and
acknowledges each PUBLISH (manual PUBACK) only once Kafka has the record, so
what Mosquitto counts as delivered to the bridge is in Kafka: a bridge crash
loses nothing, and back-pressure shows up as Mosquitto's in-flight window
(`max_inflight_messages`) filling instead of as silent drops.

Bad input is data: malformed JSON, oversize payloads and payloads without a
device id go to `mqtt-messages-dlq` with the reason, counted.

    MQTT_URL=mqtt://127.0.0.1:1883 KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 \
        python -m pipeline.bridge
"""

from __future__ import annotations

import base64
import json
import logging
import os
import queue
import threading
import time
from typing import Any, NamedTuple

import paho.mqtt.client as mqtt
from kafka import KafkaProducer
from prometheus_client import Counter, Gauge, Histogram

from pipeline._kafka import ensure_topics
from pipeline._mqtt import make_client
from pipeline._procs import run_threaded_service
from pipeline._trace import stamp
from pipeline.config import SENSOR_FILTER, Settings

log = logging.getLogger("pipeline.bridge")

RECEIVED = Counter("pipeline_bridge_received_messages_total", "MQTT messages received")
PRODUCED = Counter(
    "pipeline_bridge_produced_messages_total", "Records Kafka acknowledged", ["topic"]
)
DLQ = Counter("pipeline_bridge_dlq_messages_total", "Messages sent to the DLQ", ["reason"])
PRODUCE_ERRORS = Counter("pipeline_bridge_produce_errors_total", "Kafka produce failures (retried)")
BACKPRESSURE = Counter(
    "pipeline_bridge_backpressure_total",
    "Times the buffer was full and reception had to wait for Kafka",
)
BUFFERED = Gauge("pipeline_bridge_buffer_messages", "Messages waiting for the producer thread")
INFLIGHT = Gauge("pipeline_bridge_inflight_messages", "Produced, not yet acknowledged by Kafka")
PRODUCE_LATENCY = Histogram(
    "pipeline_bridge_produce_latency_seconds",
    "MQTT receive -> Kafka acknowledgement",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
MQTT_CONNECTED = Gauge("pipeline_bridge_mqtt_connected", "1 while connected to MQTT")
READY = Gauge("pipeline_bridge_ready", "1 once subscribed to MQTT and connected to Kafka")

DLQ_REASONS = ("oversize", "malformed_json", "missing_device_id", "internal_error")
for _reason in DLQ_REASONS:  # every series exists from the first scrape
    DLQ.labels(_reason)


class Received(NamedTuple):
    topic: str
    payload: bytes
    mid: int
    qos: int
    recv_ns: int


class Bridge:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.buffer: queue.Queue[Received | None] = queue.Queue(settings.bridge_buffer)
        self.stopping = threading.Event()
        ensure_topics(
            settings.kafka_bootstrap,
            {settings.kafka_topic: settings.kafka_partitions, settings.kafka_dlq_topic: 1},
        )
        self.producer = KafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap,
            client_id="pipeswarm-bridge",
            acks=1,
            linger_ms=2,
            batch_size=256 * 1024,
            retries=5,
            max_request_size=max(1024 * 1024, settings.max_payload_bytes * 2),
        )
        self.mqtt = make_client(
            settings.mqtt,
            client_id=os.environ.get("BRIDGE_CLIENT_ID", "pipeswarm-bridge"),
            clean_session=False,  # persistent session: Mosquitto queues while we are away
            manual_ack=True,
        )
        self.mqtt.max_inflight_messages_set(1000)
        for topic in (settings.kafka_topic, settings.kafka_dlq_topic):
            PRODUCED.labels(topic)
        self.mqtt.on_connect = self._on_connect
        self.mqtt.on_disconnect = self._on_disconnect
        self.mqtt.on_message = self._on_message
        self._inflight = 0
        self._lock = threading.Lock()

    # -- MQTT thread: never blocks on Kafka ---------------------------------
    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if reason.is_failure:
            log.warning("event=mqtt_connect_failed reason=%s", reason)
            return
        MQTT_CONNECTED.set(1)
        client.subscribe(SENSOR_FILTER, qos=1)
        READY.set(1)
        log.info(
            "event=mqtt_connected filter=%s session_present=%s",
            SENSOR_FILTER,
            flags.session_present,
        )

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        MQTT_CONNECTED.set(0)
        if not self.stopping.is_set():
            log.warning("event=mqtt_disconnected reason=%s (paho reconnects)", reason)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        RECEIVED.inc()
        item = Received(msg.topic, bytes(msg.payload), msg.mid, msg.qos, time.time_ns())
        try:
            self.buffer.put_nowait(item)
        except queue.Full:
            # Only QoS0 traffic can get here: QoS1/2 is bounded by the in-flight window.
            BACKPRESSURE.inc()
            self.buffer.put(item)
        BUFFERED.set(self.buffer.qsize())

    # -- producer thread ------------------------------------------------------
    def _produce_loop(self) -> None:
        while True:
            item = self.buffer.get()
            if item is None:
                return
            try:
                self._handle(item)
            except Exception:  # noqa: BLE001 - one bad record must not stop the bridge
                log.exception("event=bridge_handle_failed topic=%s", item.topic)
                self._dead_letter(item, "internal_error")

    def _handle(self, item: Received) -> None:
        s = self.settings
        if len(item.payload) > s.max_payload_bytes:
            return self._dead_letter(item, "oversize")
        try:
            message = json.loads(item.payload)
        except (UnicodeDecodeError, ValueError):
            return self._dead_letter(item, "malformed_json")
        if not isinstance(message, dict):
            return self._dead_letter(item, "malformed_json")
        device_id = message.get("device_id")
        if not isinstance(device_id, str) or not device_id:
            return self._dead_letter(item, "missing_device_id")
        if stamp(message, "bridge"):
            value = json.dumps(message, separators=(",", ":")).encode()
        else:
            value = item.payload  # no trace: pass through byte for byte
        self._send(s.kafka_topic, device_id.encode(), value, item)

    def _dead_letter(self, item: Received, reason: str) -> None:
        payload = item.payload[: self.settings.max_payload_bytes]
        try:
            text: dict[str, Any] = {"payload": payload.decode("utf-8")}
        except UnicodeDecodeError:
            text = {"payload_base64": base64.b64encode(payload).decode()}
        record = {
            "reason": reason,
            "topic": item.topic,
            "size": len(item.payload),
            "truncated": len(item.payload) > len(payload),
            "received_ns": item.recv_ns,
            **text,
        }
        DLQ.labels(reason).inc()
        value = json.dumps(record, separators=(",", ":")).encode()
        self._send(self.settings.kafka_dlq_topic, item.topic.encode(), value, item)

    def _send(self, topic: str, key: bytes, value: bytes, item: Received, attempt: int = 0) -> None:
        with self._lock:
            self._inflight += 1
            INFLIGHT.set(self._inflight)
        future = self.producer.send(topic, key=key, value=value)
        future.add_callback(self._delivered, topic, item)
        future.add_errback(self._failed, topic, key, value, item, attempt)

    def _delivered(self, topic: str, item: Received, _metadata: Any) -> None:
        with self._lock:
            self._inflight -= 1
            INFLIGHT.set(self._inflight)
        PRODUCED.labels(topic).inc()
        PRODUCE_LATENCY.observe((time.time_ns() - item.recv_ns) / 1e9)
        if item.qos:
            self.mqtt.ack(item.mid, item.qos)  # PUBACK only once Kafka has it

    def _failed(
        self, topic: str, key: bytes, value: bytes, item: Received, attempt: int, exc: BaseException
    ) -> None:
        with self._lock:
            self._inflight -= 1
        PRODUCE_ERRORS.inc()
        delay = min(0.1 * 2**attempt, 5.0)
        if attempt == 0:
            log.warning(
                "event=kafka_produce_failed topic=%s error=%r retry_in=%.1fs", topic, exc, delay
            )
        if not self.stopping.is_set():
            timer = threading.Timer(delay, self._send, (topic, key, value, item, attempt + 1))
            timer.daemon = True
            timer.start()

    # -- lifecycle ------------------------------------------------------------
    def run(self) -> None:
        worker = threading.Thread(target=self._produce_loop, name="producer", daemon=True)
        worker.start()
        target = self.settings.mqtt
        self.mqtt.connect_async(target.host, target.port, keepalive=30)
        self.mqtt.loop_start()
        self.stopping.wait()
        # Stop receiving, drain the buffer into Kafka, then close.
        self.mqtt.disconnect()
        self.mqtt.loop_stop()
        self.buffer.put(None)
        worker.join(10)
        self.producer.flush(10)
        self.producer.close(5)


def main() -> None:
    run_threaded_service(Bridge, lambda s: s.bridge_metrics_port)


if __name__ == "__main__":
    main()
