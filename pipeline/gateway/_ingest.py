"""HTTP → Kafka: ``POST /api/ingest/{device_id}``, the bridge's door without MQTT.

A device message comes in as the body of a POST instead of an MQTT PUBLISH and
is judged exactly as the bridge judges one (``pipeline._schema.decode``: size,
nesting, JSON, device id from the path as from the topic, finite x/y/timestamp).
An accepted message gets ``trace.hops.gateway_ingest`` stamped when it carries a
trace and is produced keyed by its device id into the bridge's topic; the answer
(202) waits for Kafka's acknowledgement (idempotent producer, ``acks=all``), so a
202 means what the bridge's PUBACK to Mosquitto means: Kafka has it. A rejected
message goes to the dead-letter topic with the bridge's record shape and reason,
and the client gets 400 (not JSON, too deep) / 413 (too large) / 422 (device id
mismatch, schema) with that reason.

Threads: ``produce()`` only queues in librdkafka; one thread serves the delivery
reports with ``poll()`` and resolves each request's future on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import TYPE_CHECKING, Any, NamedTuple

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from pipeline import _schema
from pipeline._kafka import ensure_topics
from pipeline._trace import stamp
from pipeline.exceptions import IngestNotConfirmed, IngestUnavailable, Rejected

if TYPE_CHECKING:
    from pipeline.config import Settings
    from pipeline.gateway._metrics import GatewayStats

log = logging.getLogger("pipeline.gateway")

#: The hop stamp of this door (``telemetry.stages.ENTRY_LEGS["http"]``).
HOP = "gateway_ingest"
#: How long a request waits for Kafka before it is answered 504 (librdkafka keeps
#: retrying until then, and may still deliver it: the client decides whether to resend).
DELIVERY_TIMEOUT_MS = 10_000
#: HTTP status by rejection reason (``_schema.REASONS``).
STATUS = {
    "oversize": 413,
    "too_deep": 400,
    "malformed_json": 400,
    "missing_device_id": 422,
    "device_mismatch": 422,
    "schema": 422,
    "internal_error": 500,
}


class Produced(NamedTuple):
    partition: int
    offset: int


class Ingest:
    """The gateway's Kafka producer for ``POST /api/ingest/{device_id}``."""

    def __init__(self, settings: Settings, stats: GatewayStats) -> None:
        self.settings = settings
        self.stats = stats
        self.producer: Producer | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        s = self.settings
        self.producer = Producer(
            {
                "bootstrap.servers": s.kafka_bootstrap,
                "client.id": "pipeswarm-gateway-ingest",
                # the bridge's guarantees: per-device order, no duplicates from
                # retries, written once every in-sync replica has it
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": s.ingest_linger_ms,
                "message.timeout.ms": DELIVERY_TIMEOUT_MS,
                "message.max.bytes": max(1_000_000, 2 * s.max_payload_bytes + 4096),
                "partitioner": "murmur2_random",  # the Java client's key -> partition
                "error_cb": _kafka_error,
            }
        )
        self._stopping.clear()
        self._thread = threading.Thread(target=self._serve, name="ingest-delivery", daemon=True)
        self._thread.start()
        # The bridge and consumer create the topics too; a gateway started first (or
        # alone) must not produce into nothing. Off the event loop, never fatal.
        threading.Thread(target=self._ensure_topics, name="ingest-topics", daemon=True).start()

    def stop(self, timeout_s: float = 1.0) -> None:
        """Wait up to ``timeout_s`` for what is in flight, then stop the delivery thread.

        By now uvicorn has finished the requests in flight (each waited for its own
        acknowledgement): what is left are dead letters, produced without waiting."""
        if self.producer is None:
            return
        self.producer.flush(timeout_s)
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _ensure_topics(self) -> None:
        s = self.settings
        try:
            ensure_topics(
                s.kafka_bootstrap,
                {s.kafka_topic: s.kafka_partitions, s.kafka_dlq_topic: 1},
                timeout=10.0,
            )
        except Exception as exc:  # noqa: BLE001 - a missing Kafka shows as 503/504 per request
            log.warning("event=ingest_topics_unchecked error=%s", exc)

    def _serve(self) -> None:
        producer = self.producer
        assert producer is not None
        while not self._stopping.is_set():
            producer.poll(0.1)

    @property
    def inflight(self) -> int:
        return len(self.producer) if self.producer is not None else 0

    # -- the request path (event loop) -------------------------------------------------
    async def submit(self, device_id: str, body: bytes, size: int) -> Produced:
        """Check ``body`` (``size`` bytes were sent) and produce it; return once Kafka has it.

        Raises :class:`Rejected` (dead-lettered, counted), :class:`IngestUnavailable`
        or :class:`IngestNotConfirmed`.
        """
        received_ns = time.time_ns()
        try:
            if size > self.settings.max_payload_bytes:
                raise Rejected("oversize", f"{size} bytes > {self.settings.max_payload_bytes}")
            message, filled = _schema.decode(body, device_id, self.settings.max_payload_bytes)
        except Rejected as exc:
            self._dead_letter(device_id, body, size, exc, received_ns)
            raise
        if stamp(message, HOP, received_ns) or filled:
            value = _schema.dumps(message)
        else:
            value = body  # unchanged: pass through byte for byte
        produced = await self._produce(self.settings.kafka_topic, device_id.encode(), value)
        self.stats.ingest_latency.observe((time.time_ns() - received_ns) / 1e9)
        return produced

    async def _produce(self, topic: str, key: bytes, value: bytes) -> Produced:
        if self.producer is None:
            raise IngestUnavailable("the ingest producer is not running")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Produced | KafkaError] = loop.create_future()

        def delivered(err: KafkaError | None, msg: Message) -> None:  # delivery thread
            result = err if err is not None else Produced(msg.partition() or 0, msg.offset() or 0)
            loop.call_soon_threadsafe(_resolve, future, result)

        try:
            self.producer.produce(topic, value, key, on_delivery=delivered)
        except BufferError:
            raise IngestUnavailable("the producer queue is full: Kafka is not keeping up") from None
        except KafkaException as exc:
            raise IngestUnavailable(f"Kafka refused the record: {exc}") from None
        result = await future
        if isinstance(result, KafkaError):
            raise IngestNotConfirmed(f"Kafka did not acknowledge it: {result.str()}")
        return result

    def _dead_letter(
        self, device_id: str, body: bytes, size: int, exc: Rejected, received_ns: int
    ) -> None:
        """The bridge's dead-letter record, ``topic`` being the request path."""
        reason = getattr(exc, "reason", "internal_error")
        self.stats.ingest_rejected[reason] += 1
        value = _schema.dead_letter(
            body, self.settings.max_payload_bytes,
            reason=reason, detail=str(exc), topic=f"/api/ingest/{device_id}",
            received_ns=received_ns, size=size, src="http",
        )  # fmt: skip
        if self.producer is None:
            return
        try:
            # Not awaited: the client's answer is the rejection, whatever the DLQ does.
            self.producer.produce(self.settings.kafka_dlq_topic, value, device_id.encode())
        except (BufferError, KafkaException) as err:
            log.warning("event=ingest_dead_letter_failed reason=%s error=%s", reason, err)


def _resolve(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _kafka_error(err: KafkaError) -> None:
    if err.fatal():
        log.critical("event=ingest_kafka_fatal error=%s", err)
    elif err.code() != KafkaError._TRANSPORT:  # librdkafka logs each failed connect itself
        log.warning("event=ingest_kafka_error error=%s (librdkafka retries)", err)
