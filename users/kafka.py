"""KafkaProducer: device messages produced straight into ``mqtt-messages``, bypassing MQTT.

Like the Stock-Kafka3 stress test, but each message is a device message with
the trace envelope (``src="kafka"``), keyed by its device id, so it travels
consumer -> Redis -> gateway like any other and arrives at the subscribers on
the paths ``kafka→stomp`` / ``kafka→ws``. One Locust user = one device key
(``kafka-0001``; ``kafka-w2-0001`` on worker 2) on an **open-model schedule**:
the k-th message is due at ``start + k * interval`` (its envelope ``t0``),
whatever happened before; lag behind it goes to the ledger's schedule lag.
``--kafka-interval 0`` produces back to back (closed loop, ``t0 = tp``).

Locust entries (``request_type="KAFKA"``):

===========================  ===============================================  =====================
name                         response_time                                    exception
===========================  ===============================================  =====================
``produce:mqtt-messages``    ``produce()`` -> delivery callback, ms           delivery error
``metadata:mqtt-messages``   the first metadata request (once per process)    unreachable, no topic
===========================  ===============================================  =====================

Engine: confluent-kafka (librdkafka), one producer per process, settings and
topic, shared by its users. Measured here, kafka-python inside gevent freezes
every greenlet (p99 ~300 ms, max ~0.8 s: it would corrupt every latency the
worker measures); confluent-kafka with ``produce()`` + ``poll(0)`` runs ~1M
msg/s with loop lag p99 8 ms. So nothing on the task path blocks: ``produce()``
only enqueues, one poller greenlet per producer calls ``poll(0)`` every
``poll_interval`` while messages are in flight (the delivery time is read in
the callback, so its resolution is that interval), and the blocking calls (the
metadata check, ``flush()`` when the last user stops) run in gevent's thread
pool. Two more things keep the loop free (``ProducerEngine``): no object per
message waits for its delivery (they set off 50-80 ms full garbage
collections), and busy greenlets yield with a timer, not ``sleep(0)``. Back to
back, 2 users, 200k messages to a Kafka-protocol broker (then the embedded Tansu) on this 2-core machine (shared with other
runs): 95-117k msg/s, loop lag p95 ~1 ms, max 1-11 ms.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gevent
from locust import User, constant, task
from locust.exception import StopUser

import telemetry
from telemetry import envelope
from telemetry.options import Option, OptionGroup, at_least
from users._config import settings
from users._devices import DeviceIds
from users._kafka_engine import REQUEST_TYPE, YIELD_S, ProducerEngine
from users.exceptions import (
    ConfigError,
    KafkaDeliveryFailed,
    KafkaTopicMissing,
    KafkaUserError,
)

if TYPE_CHECKING:
    from locust.env import Environment

__all__ = [
    "REQUEST_TYPE",
    "OPTIONS",
    "KafkaProducer",
    "KafkaSettings",
    "ProducerEngine",
    "KafkaUserError",
    "KafkaDeliveryFailed",
    "KafkaTopicMissing",
    "kafka_settings",
]

log = logging.getLogger(__name__)

ACKS = ("all", "1", "0")
COMPRESSIONS = ("none", "gzip", "snappy", "lz4", "zstd")

INTERVAL = Option(
    "--kafka-interval",
    float,
    0.1,
    "PIPESWARM_KAFKA_INTERVAL",
    "Seconds between a KafkaProducer's messages, on an open-model schedule (0 = back to back)",
    check=at_least(0, "must be 0 (back to back) or positive"),
    error=ConfigError,
)
ACKS_OPTION = Option(
    "--kafka-acks",
    str,
    "all",
    "PIPESWARM_KAFKA_ACKS",
    "KafkaProducer acks",
    choices=ACKS,
    error=ConfigError,
)
LINGER_MS = Option(
    "--kafka-linger-ms",
    float,
    5.0,
    "PIPESWARM_KAFKA_LINGER_MS",
    "KafkaProducer linger.ms (batching delay)",
    check=at_least(0, "must be 0 or positive"),
    error=ConfigError,
)
COMPRESSION = Option(
    "--kafka-compression",
    str,
    "none",
    "PIPESWARM_KAFKA_COMPRESSION",
    "KafkaProducer compression.type",
    choices=COMPRESSIONS,
    error=ConfigError,
)
MAX_MESSAGES = Option(
    "--kafka-max-messages",
    int,
    0,
    "PIPESWARM_KAFKA_MAX_MESSAGES",
    "Messages per KafkaProducer user, then it idles (0 = no limit)",
    check=at_least(0, "must be 0 (no limit) or positive"),
    error=ConfigError,
)
OPTIONS = OptionGroup(
    "pipeswarm Kafka producer", INTERVAL, ACKS_OPTION, LINGER_MS, COMPRESSION, MAX_MESSAGES
)


@dataclass(frozen=True, slots=True)
class KafkaSettings:
    """The ``--kafka-*`` options, read and checked."""

    interval: float
    acks: str
    linger_ms: float
    compression: str
    max_messages: int


def kafka_settings(environment: Environment) -> KafkaSettings:
    """The ``--kafka-*`` options of ``environment`` (their defaults without options)."""
    return KafkaSettings(
        interval=INTERVAL.get(environment),
        acks=ACKS_OPTION.get(environment),
        linger_ms=LINGER_MS.get(environment),
        compression=COMPRESSION.get(environment),
        max_messages=MAX_MESSAGES.get(environment),
    )


class KafkaProducer(DeviceIds, User):
    """One device key producing envelopes straight into Kafka on an open-model schedule.

    Every ``None`` attribute takes its value from the matching option
    (``--kafka-bootstrap``, ``--kafka-interval``, ``--kafka-acks``,
    ``--kafka-linger-ms``, ``--kafka-compression``, ``--kafka-max-messages``)::

        class Burst(KafkaProducer):
            interval = 0.0          # back to back
            max_messages = 10_000   # then idle (the Stock-Kafka3 threads x messages test)
    """

    abstract = True

    #: ``host:port[,host:port]``. None = ``--kafka-bootstrap``.
    bootstrap: str | None = None
    topic: str = "mqtt-messages"
    #: Seconds between messages; 0 = back to back. None = ``--kafka-interval``.
    interval: float | None = None
    #: ``"all"``, ``"1"`` or ``"0"``. None = ``--kafka-acks``.
    acks: str | None = None
    #: librdkafka ``linger.ms``. None = ``--kafka-linger-ms``.
    linger_ms: float | None = None
    #: ``none``, ``gzip``, ``snappy``, ``lz4``, ``zstd``. None = ``--kafka-compression``.
    compression: str | None = None
    #: Messages per user, then it idles; 0 = no limit. None = ``--kafka-max-messages``.
    max_messages: int | None = None
    #: More librdkafka settings; they win over the ones above and over the defaults
    #: ``allow.auto.create.topics=false``, ``message.timeout.ms=30000``.
    producer_config: Mapping[str, Any] = {}
    device_id_prefix: str = "kafka-"
    numbering = "kafka"
    #: Most messages one user produces in one go when catching up.
    max_batch: int = 64
    #: Seconds between ``poll(0)`` calls while messages are in flight (delivery time resolution).
    poll_interval: float = 0.001
    metadata_timeout: float = 10.0
    #: Seconds the last user's ``on_stop`` waits in ``flush()`` for outstanding deliveries.
    flush_timeout: float = 10.0

    wait_time = constant(0)

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self.device_id: str = self.make_device_id(self.next_device_number())
        self.key = self.device_id.encode()
        cfg = kafka_settings(environment)
        cls = type(self)
        interval = cfg.interval if self.interval is None else float(self.interval)
        self.interval_ns = int(interval * 1e9)
        limit = cfg.max_messages if self.max_messages is None else int(self.max_messages)
        self.limit: int = limit
        self.conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap or settings(environment).kafka_bootstrap,
            "acks": cfg.acks
            if self.acks is None
            else _check_attribute(cls, "acks", str(self.acks), ("all", "-1", "0", "1")),
            "linger.ms": cfg.linger_ms if self.linger_ms is None else float(self.linger_ms),
            "compression.type": cfg.compression
            if self.compression is None
            else _check_attribute(cls, "compression", str(self.compression), COMPRESSIONS),
            # the topic must exist: never create it with the broker's defaults by accident
            "allow.auto.create.topics": False,
            # a message the broker cannot take fails within the run, not 5 min later
            "message.timeout.ms": 30_000,
            **dict(self.producer_config),
        }
        self.produce_name = f"produce:{self.topic}"
        self.seq = 0
        self.engine: ProducerEngine | None = None
        self._ledger: telemetry.Ledger | None = None
        self._due = 0
        self._unusable = False

    def payload(self, seq: int, t0: int, tp: int) -> bytes:
        """Message ``seq``: the original coordinates on a slow circle, plus the envelope."""
        angle = t0 / 1e9 / 10.0
        x = round(100.0 + 50.0 * math.cos(angle), 3)
        y = round(100.0 + 50.0 * math.sin(angle), 3)
        run = self._ledger.run_id if self._ledger is not None else ""
        return envelope.build(self.device_id, x, y, run=run, seq=seq, t0=t0, tp=tp, src="kafka")

    # --- Locust lifecycle ---------------------------------------------------------
    def on_start(self) -> None:
        self._ledger = telemetry.get_ledger(self.environment)
        self.engine = ProducerEngine.acquire(
            self.environment, self.conf, self.topic, self.poll_interval
        )
        try:
            self.engine.check_topic(self.metadata_timeout)
        except KafkaTopicMissing as exc:
            # reported as the failed metadata request; the task stops the user quietly
            log.error("%s", exc)
            self._unusable = True
            return
        self._due = time.time_ns()
        if self.interval_ns:
            # a random phase spreads the producers over the interval
            self._due += int(self.interval_ns * random.random())

    def on_stop(self) -> None:
        engine, self.engine = self.engine, None
        if engine is not None:
            engine.release(self.flush_timeout)

    @task
    def produce_due(self) -> None:
        """Produce what is due now (up to ``max_batch``), then sleep until the next one."""
        ledger = self._ledger
        engine = self.engine
        if ledger is None or engine is None or self._unusable:
            raise StopUser()
        if ledger.draining or (self.limit and self.seq >= self.limit):
            gevent.sleep(max(self.interval_ns / 1e9, 0.1))  # publishers stay quiet
            return
        interval = self.interval_ns
        now = time.time_ns()
        if self._due > now:
            gevent.sleep((self._due - now) / 1e9)
            if ledger.draining:
                return
            now = time.time_ns()
        device_id = self.device_id
        for _ in range(self.max_batch):
            seq = self.seq + 1
            tp = time.time_ns()
            t0 = self._due if interval else tp
            if not engine.produce(self.key, self.payload(seq, t0, tp)):
                gevent.sleep(self.poll_interval)  # queue full: the timetable waits (shows as lag)
                return
            self.seq = seq
            ledger.published(device_id, seq, t0, tp, src="kafka")
            if self.limit and seq >= self.limit:
                return
            if interval:
                self._due += interval
                if self._due > now:
                    return
        gevent.sleep(YIELD_S)  # a full batch (back to back, or catching up)


def _check_attribute(cls: type, name: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ConfigError(f"{cls.__name__}.{name} {value!r}: must be one of {', '.join(allowed)}.")
    return value


OPTIONS.register()
