"""The bridge: MQTT `sensors/+/coordinates` -> Kafka `mqtt-messages`.

The topic is the device's identity: each message is checked at the edge
(`pipeline._schema`: size, nesting, JSON, device id, finite x/y/timestamp),
gets the id from its topic when it carries none (the original IoT server's
devices send none), gets `trace.hops.bridge` stamped when it carries a trace,
and is produced keyed by device id. What the checks reject goes to
`mqtt-messages-dlq` with the reason, counted.

Threads: paho's network thread decodes and hands each record to the
confluent-kafka producer (`produce()` only queues it in librdkafka, it never
waits on the broker); the thread that called `run()` serves the delivery
reports with `producer.poll()`. A QoS1 PUBLISH is acknowledged to Mosquitto
(manual PUBACK) only from its delivery report, i.e. once Kafka has the record
on every in-sync replica (idempotent producer, acks=all): a bridge crash or a
broker outage loses nothing, Mosquitto redelivers what was never acknowledged
on the bridge's persistent session, and back-pressure shows up as Mosquitto's
in-flight window (`max_inflight_messages`) filling instead of as drops.

    MQTT_URL=mqtt://127.0.0.1:1883 KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 \
        python -m pipeline.bridge
"""

from __future__ import annotations

import functools
import heapq
import itertools
import logging
import sys
import threading
import time
from typing import Any, NamedTuple

import paho.mqtt.client as mqtt
from confluent_kafka import KafkaError, KafkaException, Message, Producer
from prometheus_client import Counter, Gauge, Histogram

from pipeline import _backoff, _schema
from pipeline._kafka import ensure_topics
from pipeline._mqtt import make_client
from pipeline._service import run_threaded_service
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
    "Times the producer queue was full and reception had to wait for Kafka",
)
BUFFERED = Gauge(
    "pipeline_bridge_buffer_messages", "Records held by the bridge, waiting to be produced again"
)
INFLIGHT = Gauge("pipeline_bridge_inflight_messages", "Produced, not yet acknowledged by Kafka")
PRODUCE_LATENCY = Histogram(
    "pipeline_bridge_produce_latency_seconds",
    "MQTT receive -> Kafka acknowledgement",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
MQTT_CONNECTED = Gauge("pipeline_bridge_mqtt_connected", "1 while connected to MQTT")
READY = Gauge("pipeline_bridge_ready", "1 once subscribed to MQTT and connected to Kafka")

for _reason in _schema.REASONS:  # every series exists from the first scrape
    DLQ.labels(_reason)

#: Wait before a failed record is produced again: doubling from the first, up to the
#: longest.
RETRY_FIRST_DELAY_S = 0.1
MAX_RETRY_DELAY_S = 5.0
#: After SIGTERM: how long to wait for Kafka to acknowledge what is in flight
#: (under the 8 s the stack gives a service before SIGKILL).
DRAIN_S = 5.0


class Received(NamedTuple):
    topic: str
    payload: bytes
    mid: int
    qos: int
    recv_ns: int
    connection: int  # which MQTT connection it came in on (its mid means nothing on another)


class Bridge:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stopping = threading.Event()
        self.fatal: KafkaError | None = None
        self._connection = 0  # +1 per MQTT (re)connect
        # Set after each poll() that served delivery reports: room in the producer queue.
        self._room = threading.Event()
        self._retries: list[tuple[float, int, str, bytes, bytes, Received, int]] = []
        self._order = itertools.count()
        ensure_topics(
            settings.kafka_bootstrap,
            {settings.kafka_topic: settings.kafka_partitions, settings.kafka_dlq_topic: 1},
        )
        self.producer = Producer(
            {
                "bootstrap.servers": settings.kafka_bootstrap,
                "client.id": settings.bridge_client_id,
                # Per-device order through retries, no duplicates from retries,
                # and a record counts as written once every in-sync replica has it.
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": settings.bridge_linger_ms,
                # librdkafka retries a record until this expires (a broker restart is
                # seconds); only then does the delivery report carry the error.
                "message.timeout.ms": settings.bridge_delivery_timeout_ms,
                "queue.buffering.max.messages": settings.bridge_buffer,
                "message.max.bytes": max(1_000_000, 2 * settings.max_payload_bytes + 4096),
                # The partition of a key as the Java client (and kafka-python, and a
                # Spring Boot producer on the same topic) computes it.
                "partitioner": "murmur2_random",
                "error_cb": self._kafka_error,
            }
        )
        self.mqtt = make_client(
            settings.mqtt,
            client_id=settings.bridge_client_id,
            clean_session=False,  # persistent session: Mosquitto queues while we are away
            manual_ack=True,
        )
        self.mqtt.max_inflight_messages_set(1000)
        self._produced = {
            topic: PRODUCED.labels(topic)
            for topic in (settings.kafka_topic, settings.kafka_dlq_topic)
        }
        INFLIGHT.set_function(lambda: len(self.producer))
        BUFFERED.set_function(lambda: len(self._retries))
        self.mqtt.on_connect = self._on_connect
        self.mqtt.on_disconnect = self._on_disconnect
        self.mqtt.on_message = self._on_message

    # -- MQTT network thread: decode, check, queue for Kafka; never waits on it --
    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if reason.is_failure:
            log.warning("event=mqtt_connect_failed reason=%s", reason)
            return
        self._connection += 1
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
        if self.stopping.is_set():
            return  # not acknowledged: Mosquitto redelivers it to the next session
        item = Received(
            msg.topic, bytes(msg.payload), msg.mid, msg.qos, time.time_ns(), self._connection
        )
        try:
            self._handle(item)
        except Exception:  # noqa: BLE001 - paho's thread must survive any one message
            log.exception("event=bridge_handle_failed topic=%s", item.topic)
            try:
                self._dead_letter(item, "internal_error", "see the bridge log")
            except Exception:  # noqa: BLE001
                # Left unacknowledged: Mosquitto redelivers it to the next session.
                log.exception("event=bridge_dead_letter_failed topic=%s", item.topic)

    def _handle(self, item: Received) -> None:
        device_id = _schema.device_from_topic(item.topic)
        if device_id is None:  # sensors//coordinates: the topic names no device
            return self._dead_letter(item, "missing_device_id", "empty device in topic")
        try:
            message, filled = _schema.decode(
                item.payload, device_id, self.settings.max_payload_bytes
            )
        except _schema.Rejected as exc:
            return self._dead_letter(item, exc.reason, str(exc))
        if stamp(message, "bridge") or filled:
            value = _schema.dumps(message)
        else:
            value = item.payload  # unchanged: pass through byte for byte
        self._produce(self.settings.kafka_topic, device_id.encode(), value, item)

    def _dead_letter(self, item: Received, reason: str, detail: str) -> None:
        value = _schema.dead_letter(
            item.payload, self.settings.max_payload_bytes,
            reason=reason, detail=detail, topic=item.topic, received_ns=item.recv_ns,
        )  # fmt: skip
        DLQ.labels(reason).inc()
        self._produce(self.settings.kafka_dlq_topic, item.topic.encode(), value, item)

    def _produce(
        self, topic: str, key: bytes, value: bytes, item: Received, attempt: int = 0
    ) -> None:
        report = functools.partial(self._delivered, item, attempt)
        try:
            self.producer.produce(topic, value, key, on_delivery=report)
            return
        except BufferError:
            # Only QoS0 traffic can fill the queue: QoS1 is bounded by Mosquitto's
            # in-flight window (1000), far below queue.buffering.max.messages.
            BACKPRESSURE.inc()
        while not self.stopping.is_set():  # if stopping: unacknowledged, redelivered later
            self._room.clear()
            try:
                self.producer.produce(topic, value, key, on_delivery=report)
                return
            except BufferError:
                self._room.wait(0.1)

    # -- the producer thread: delivery reports, retries ---------------------------
    def _delivered(
        self, item: Received, attempt: int, err: KafkaError | None, msg: Message
    ) -> None:
        topic = msg.topic() or ""
        if err is not None:
            self._failed(topic, msg, item, attempt, err)
            return
        self._produced[topic].inc()
        PRODUCE_LATENCY.observe((time.time_ns() - item.recv_ns) / 1e9)
        if item.qos and item.connection == self._connection:
            # PUBACK only once Kafka has it. paho queues the packet (a deque append)
            # and wakes its network thread through a socket pair: safe from here.
            # A message from an earlier connection is not acknowledged: Mosquitto
            # resends it on the resumed session (MQTT 3.1.1 section 4.4) and that copy
            # is acknowledged; acking the old one too could hit a packet id Mosquitto
            # has since given to a message Kafka does not have yet.
            self.mqtt.ack(item.mid, item.qos)

    def _failed(
        self, topic: str, msg: Message, item: Received, attempt: int, err: KafkaError
    ) -> None:
        """A record Kafka did not take within ``bridge_delivery_timeout_ms``: produce it
        again later, still unacknowledged to MQTT. Nothing is dropped; per-device order
        holds for outages shorter than that timeout (librdkafka's own retries keep it),
        a record retried here may land behind later records of its device."""
        PRODUCE_ERRORS.inc()
        delay = _backoff.delay(attempt, RETRY_FIRST_DELAY_S, MAX_RETRY_DELAY_S)
        if attempt == 0:
            log.warning(
                "event=kafka_produce_failed topic=%s error=%s retry_in=%.1fs", topic, err, delay
            )
        entry = (
            time.monotonic() + delay,
            next(self._order),
            topic,
            msg.key() or b"",
            msg.value() or b"",
            item,
            attempt + 1,
        )
        heapq.heappush(self._retries, entry)

    def _retry_due(self) -> float:
        """Produce the records whose retry time has come; return seconds to the next one."""
        now = time.monotonic()
        while self._retries and self._retries[0][0] <= now:
            _, _, topic, key, value, item, attempt = heapq.heappop(self._retries)
            try:
                self.producer.produce(
                    topic, value, key, on_delivery=functools.partial(self._delivered, item, attempt)
                )
            except (BufferError, KafkaException) as exc:
                heapq.heappush(
                    self._retries,
                    (now + MAX_RETRY_DELAY_S, next(self._order), topic, key, value, item, attempt),
                )
                log.warning("event=kafka_retry_deferred topic=%s error=%s", topic, exc)
                break
        return self._retries[0][0] - now if self._retries else 1.0

    def _kafka_error(self, err: KafkaError) -> None:
        if err.fatal():
            log.critical("event=kafka_fatal error=%s (the producer cannot continue)", err)
            self.fatal = err
            self.stopping.set()
        elif err.code() != KafkaError._TRANSPORT:  # librdkafka logs each failed connect itself
            log.warning("event=kafka_error error=%s (librdkafka retries)", err)

    # -- lifecycle ------------------------------------------------------------------
    def run(self) -> None:
        """Receive until ``stopping`` is set, serving delivery reports on this thread."""
        target = self.settings.mqtt
        self.mqtt.connect_async(target.host, target.port, keepalive=30)
        self.mqtt.loop_start()
        drain_until = None
        while True:
            wait = min(0.1, max(0.0, self._retry_due()))
            if self.producer.poll(wait):
                self._room.set()
            if self.stopping.is_set():
                # Reception stopped (on_message no longer produces); what Kafka
                # acknowledges now is still PUBACKed, the rest is redelivered later.
                drain_until = drain_until or time.monotonic() + DRAIN_S
                if self.fatal or not len(self.producer) or time.monotonic() > drain_until:
                    break
        self.mqtt.disconnect()
        self.mqtt.loop_stop()
        left = len(self.producer) + len(self._retries)
        if left:
            log.warning("event=bridge_stopped unacknowledged=%d (Mosquitto redelivers them)", left)
        if self.fatal is not None:
            raise SystemExit(f"bridge: Kafka producer failed: {self.fatal}")


def main() -> int:
    return run_threaded_service(Bridge, "bridge_metrics_port")


if __name__ == "__main__":
    sys.exit(main())
