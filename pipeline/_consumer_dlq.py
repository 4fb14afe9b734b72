"""The consumer's dead letters: what a rejected record was, and where, to `mqtt-messages-dlq`.

One JSON object per record, the bridge's fields plus where the record sat in
Kafka::

    {"reason": "too_deep", "detail": "...", "topic": "mqtt-messages",
     "partition": 3, "offset": 1234, "size": 1979, "truncated": false,
     "key": "robot-7", "payload": "{\\"device_id\\": ..."}

``payload`` (or ``payload_base64`` when it is not UTF-8; ``key_base64``
likewise) is cut to ``max_payload_bytes``; ``size`` is the original length.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from pipeline._consumer_metrics import DLQ, DLQ_ERRORS

log = logging.getLogger("pipeline.consumer")


class DeadLetters:
    """A producer to the DLQ topic; :meth:`send` never raises, failures are counted."""

    def __init__(self, bootstrap: str, topic: str, client_id: str, max_bytes: int) -> None:
        self.topic, self.max_bytes = topic, max_bytes
        self.producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "client.id": client_id,
                "acks": "all",
                "linger.ms": 5,
                "message.max.bytes": max(1024 * 1024, max_bytes * 2),
                "on_delivery": self._delivered,
            }
        )
        self._logged_at = -1e9

    def send(self, msg: Message, reason: str, detail: str) -> None:
        DLQ.labels(reason).inc()
        raw = msg.value() or b""
        payload = raw[: self.max_bytes]
        record: dict[str, Any] = {
            "reason": reason,
            "detail": detail[:300],
            "topic": msg.topic(),
            "partition": msg.partition(),
            "offset": msg.offset(),
            "size": len(raw),
            "truncated": len(raw) > len(payload),
        }
        key = msg.key()
        try:
            record["key"] = None if key is None else key.decode()
        except UnicodeDecodeError:
            record["key_base64"] = base64.b64encode(key or b"").decode()
        try:
            record["payload"] = payload.decode()
        except UnicodeDecodeError:
            record["payload_base64"] = base64.b64encode(payload).decode()
        value = json.dumps(record, separators=(",", ":")).encode()
        while True:
            try:
                self.producer.produce(self.topic, value, key)
                break
            except BufferError:  # librdkafka's queue is full: let it send, then retry
                self.producer.poll(0.1)
            except KafkaException as exc:
                self._failed(exc)
                break
        self.producer.poll(0)

    def poll(self) -> None:
        """Serve delivery reports."""
        self.producer.poll(0)

    def close(self, timeout: float = 5.0) -> None:
        left = self.producer.flush(timeout)
        if left:
            log.warning("event=dlq_unflushed records=%d", left)

    def _delivered(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            self._failed(err)

    def _failed(self, err: object) -> None:
        DLQ_ERRORS.inc()
        now = time.monotonic()
        if now - self._logged_at >= 10:  # an outage is one line, not thousands
            self._logged_at = now
            log.warning("event=dlq_produce_failed error=%s", err)
