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
back, 2 users, 200k messages to Tansu on this 2-core machine (shared with other
runs): 95-117k msg/s, loop lag p95 ~1 ms, max 1-11 ms.
"""

from __future__ import annotations

import collections
import itertools
import logging
import math
import random
import sys
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import gevent
from confluent_kafka import KafkaError, KafkaException, Producer
from gevent.event import AsyncResult, Event
from locust import User, constant, events, task
from locust.exception import StopUser
from locust.runners import WorkerRunner

import telemetry
from telemetry import envelope
from telemetry.options import option
from users._config import ConfigError, settings

if TYPE_CHECKING:
    from locust.argument_parser import LocustArgumentParser
    from locust.env import Environment

__all__ = [
    "REQUEST_TYPE",
    "KafkaProducer",
    "ProducerEngine",
    "KafkaUserError",
    "KafkaDeliveryFailed",
    "KafkaTopicMissing",
    "add_arguments",
]

log = logging.getLogger(__name__)

REQUEST_TYPE = "KAFKA"
ACKS = ("all", "-1", "0", "1")
COMPRESSIONS = ("none", "gzip", "snappy", "lz4", "zstd")
DEFAULT_INTERVAL = 0.1
DEFAULT_LINGER_MS = 5.0
#: Delivery events fired before the poller yields (~2.5 µs each with Locust's stats).
FIRE_BATCH = 200
#: How busy greenlets yield: a timer, not ``sleep(0)``. gevent runs ``sleep(0)``
#: callbacks back to back (it looks at the clock only every 50 callbacks), so
#: greenlets that keep yielding with ``sleep(0)`` starve timers and I/O for tens
#: of ms; a timer goes through the loop's I/O poll every time.
YIELD_S = 1e-5

_numbers = itertools.count(1)


class KafkaUserError(Exception):
    """Base of the Kafka producer's errors (the exception of a failed request event)."""


class KafkaDeliveryFailed(KafkaUserError):
    """The broker did not take a message (the delivery callback's error)."""


class KafkaTopicMissing(KafkaUserError):
    """The topic does not exist; the pipeline's bridge/consumer create it at start."""


class ProducerEngine:
    """One confluent-kafka ``Producer`` per process, settings and topic; its poller and users.

    Get it with :meth:`acquire`, hand it back with :meth:`release` (the last
    release flushes, in gevent's thread pool).

    Timing without per-message objects: a message's ``produce()`` time waits in
    a FIFO of floats per key, and the one delivery callback (set in the config)
    pops it. Deliveries of one key come back in order (one partition; librdkafka
    reports per partition in produce order). A closure per message, held by
    librdkafka until its delivery, kept ~10^4 live objects at a time back to
    back and set off full garbage collections of 50-80 ms (measured here).
    """

    _engines: dict[tuple[Any, ...], ProducerEngine] = {}

    def __init__(
        self, environment: Environment, conf: dict[str, Any], topic: str, poll_interval: float
    ) -> None:
        self.environment = environment
        self.conf = conf
        self.topic = topic
        self.name = f"produce:{topic}"
        self.poll_interval = poll_interval
        self.producer = Producer({**conf, "on_delivery": self._delivered})
        self.users = 0
        # written by the delivery callback: in the poller greenlet, or in the thread
        # pool during the final flush (the poller is gone by then: one writer at a time)
        self.ok_ms: collections.deque[float] = collections.deque()
        self.ok_len: collections.deque[int] = collections.deque()
        self.failed: collections.deque[tuple[float, str]] = collections.deque()
        self._starts: dict[bytes, collections.deque[float]] = {}
        self._work = Event()
        self._poller: gevent.Greenlet | None = gevent.spawn(self._poll_loop)
        self._checked: AsyncResult | None = None
        self._key: tuple[Any, ...] = ()

    @classmethod
    def acquire(
        cls,
        environment: Environment,
        conf: dict[str, Any],
        topic: str,
        poll_interval: float = 0.001,
    ) -> ProducerEngine:
        key = (id(environment), tuple(sorted(conf.items())), topic, poll_interval)
        engine = cls._engines.get(key)
        if engine is None:
            engine = cls._engines[key] = cls(environment, conf, topic, poll_interval)
            engine._key = key
        engine.users += 1
        return engine

    def release(self, flush_timeout: float = 10.0) -> int:
        """One user less; the last one flushes and closes. Returns what was left unsent."""
        self.users -= 1
        if self.users > 0:
            return 0
        self._engines.pop(self._key, None)
        if self._poller is not None:
            self._poller.kill()
            self._poller = None
        left: int = gevent.get_hub().threadpool.spawn(self._shutdown, flush_timeout).get()
        self._fire_done()
        if left:
            log.warning("%d Kafka messages still undelivered after %.0f s", left, flush_timeout)
        return left

    def _shutdown(self, flush_timeout: float) -> int:
        """Flush, drop what is still unsent, close (in the thread pool: it blocks).

        Closing stops librdkafka's threads, which would otherwise go on
        reconnecting to a broker that is gone after the run.
        """
        left: int = self.producer.flush(flush_timeout)
        if left:
            self.producer.purge()
        self.producer.close()
        return left

    # --- topic check ----------------------------------------------------------
    def check_topic(self, timeout: float) -> None:
        """Raise :class:`KafkaTopicMissing` unless the topic exists (asked once per engine).

        The first caller asks the broker (in the thread pool) and reports the
        ``metadata:{topic}`` request; the others wait for its answer.
        """
        if self._checked is None:
            self._checked = result = AsyncResult()
            topic = self.topic
            start = time.perf_counter()
            exc: KafkaUserError | None = None
            try:
                md = (
                    gevent.get_hub()
                    .threadpool.spawn(self.producer.list_topics, topic, timeout)
                    .get()
                )
                meta = md.topics.get(topic)
                if meta is None or meta.error is not None:
                    why = meta.error.str() if meta is not None and meta.error else "unknown topic"
                    exc = KafkaTopicMissing(
                        f"topic {topic!r} is not available on {self.conf['bootstrap.servers']} "
                        f"({why}): start the pipeline (it creates the topic) or create it"
                    )
            except KafkaException as err:
                exc = KafkaTopicMissing(
                    f"no metadata for {topic!r} from {self.conf['bootstrap.servers']}: {err}"
                )
            self.environment.events.request.fire(
                request_type=REQUEST_TYPE,
                name=f"metadata:{topic}",
                response_time=(time.perf_counter() - start) * 1e3,
                response_length=0,
                exception=exc,
                context={},
            )
            if exc is not None:
                result.set_exception(exc)
            else:
                result.set(True)
        self._checked.get()

    # --- produce ----------------------------------------------------------------
    def produce(self, key: bytes, value: bytes) -> bool:
        """Enqueue one message; False when librdkafka's queue is full (try again later)."""
        start = time.perf_counter()
        try:
            self.producer.produce(self.topic, value, key)
        except BufferError:
            return False
        starts = self._starts.get(key)
        if starts is None:
            starts = self._starts[key] = collections.deque()
        starts.append(start)
        self._work.set()
        return True

    def _delivered(self, err: Any, msg: Any) -> None:
        """librdkafka's delivery report (the one callback, from ``poll``/``flush``)."""
        now = time.perf_counter()
        starts = self._starts.get(msg.key())
        ms = (now - starts.popleft()) * 1e3 if starts else 0.0
        if err is None:
            self.ok_ms.append(ms)
            self.ok_len.append(len(msg))
        else:
            self.failed.append((ms, _kafka_error(err)))

    def _poll_loop(self) -> None:
        producer = self.producer
        work = self._work
        interval = self.poll_interval
        while True:
            producer.poll(0)
            self._fire_done()
            if len(producer):
                gevent.sleep(interval)
            else:
                work.clear()
                work.wait()

    def _fire_done(self) -> None:
        """Fire the Locust events of the deliveries so far, yielding every ``FIRE_BATCH``.

        One ``poll(0)`` can hand over thousands of deliveries at once; firing them
        all in one go would stall every other greenlet for tens of ms.
        """
        fire = self.environment.events.request.fire
        name = self.name
        ok_ms, ok_len, failed = self.ok_ms, self.ok_len, self.failed
        while failed:
            ms, why = failed.popleft()
            fire(
                request_type=REQUEST_TYPE,
                name=name,
                response_time=ms,
                response_length=0,
                exception=KafkaDeliveryFailed(why),
                context={},
            )
        while ok_ms:
            for _ in range(min(len(ok_ms), FIRE_BATCH)):
                fire(
                    request_type=REQUEST_TYPE,
                    name=name,
                    response_time=ok_ms.popleft(),
                    response_length=ok_len.popleft(),
                    exception=None,
                    context={},
                )
            if ok_ms:
                gevent.sleep(YIELD_S)


def _kafka_error(err: Any) -> str:
    if isinstance(err, KafkaError):
        return f"{err.name()}: {err.str()}"
    return str(err)


class KafkaProducer(User):
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
        n = next(_numbers)
        self.device_id: str = self.make_device_id(n)
        self.key = self.device_id.encode()
        cfg = kafka_options(environment)
        interval = cfg["interval"] if self.interval is None else float(self.interval)
        self.interval_ns = int(interval * 1e9)
        limit = cfg["messages"] if self.max_messages is None else int(self.max_messages)
        self.limit: int = limit
        self.conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap or settings(environment).kafka_bootstrap,
            "acks": _check_acks(cfg["acks"] if self.acks is None else str(self.acks)),
            "linger.ms": float(cfg["linger_ms"] if self.linger_ms is None else self.linger_ms),
            "compression.type": _check_compression(
                cfg["compression"] if self.compression is None else str(self.compression)
            ),
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

    def make_device_id(self, n: int) -> str:
        """``kafka-0007``; on a distributed worker ``kafka-w2-0007`` (unique across workers)."""
        runner = self.environment.runner
        if isinstance(runner, WorkerRunner):
            return f"{self.device_id_prefix}w{runner.worker_index}-{n:04d}"
        return f"{self.device_id_prefix}{n:04d}"

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


def _check_acks(value: str) -> str:
    if value not in ACKS:
        raise ConfigError(f"--kafka-acks {value!r}: must be all, 1 or 0.")
    return value


def _check_compression(value: str) -> str:
    if value not in COMPRESSIONS:
        raise ConfigError(
            f"--kafka-compression {value!r}: must be one of {', '.join(COMPRESSIONS)}."
        )
    return value


def kafka_options(environment: Environment) -> dict[str, Any]:
    """The ``--kafka-*`` options of ``environment``, parsed and checked (defaults without options)."""
    try:
        interval = float(option(environment, "kafka_interval", DEFAULT_INTERVAL))
        linger = float(option(environment, "kafka_linger_ms", DEFAULT_LINGER_MS))
        messages = int(option(environment, "kafka_max_messages", 0))
    except (TypeError, ValueError) as err:
        raise ConfigError(f"a --kafka-* option is not a number ({err}).") from None
    if interval < 0:
        raise ConfigError(f"--kafka-interval {interval!r}: must be 0 (back to back) or positive.")
    if linger < 0:
        raise ConfigError(f"--kafka-linger-ms {linger!r}: must be 0 or positive.")
    if messages < 0:
        raise ConfigError(f"--kafka-max-messages {messages!r}: must be 0 (no limit) or positive.")
    return {
        "interval": interval,
        "linger_ms": linger,
        "messages": messages,
        "acks": _check_acks(str(option(environment, "kafka_acks", "all"))),
        "compression": _check_compression(str(option(environment, "kafka_compression", "none"))),
    }


def add_arguments(parser: LocustArgumentParser) -> None:
    """The ``--kafka-*`` producer options (an ``init_command_line_parser`` listener)."""
    parser.add_argument(
        "--kafka-interval",
        type=float,
        default=DEFAULT_INTERVAL,
        env_var="PIPESWARM_KAFKA_INTERVAL",
        help="Seconds between a KafkaProducer's messages, on an open-model schedule "
        "(0 = back to back). Default 0.1",
    )
    parser.add_argument(
        "--kafka-acks",
        choices=("all", "1", "0"),
        default="all",
        env_var="PIPESWARM_KAFKA_ACKS",
        help="KafkaProducer acks. Default all",
    )
    parser.add_argument(
        "--kafka-linger-ms",
        type=float,
        default=DEFAULT_LINGER_MS,
        env_var="PIPESWARM_KAFKA_LINGER_MS",
        help="KafkaProducer linger.ms (batching delay). Default 5",
    )
    parser.add_argument(
        "--kafka-compression",
        choices=COMPRESSIONS,
        default="none",
        env_var="PIPESWARM_KAFKA_COMPRESSION",
        help="KafkaProducer compression.type. Default none",
    )
    parser.add_argument(
        "--kafka-max-messages",
        type=int,
        default=0,
        env_var="PIPESWARM_KAFKA_MAX_MESSAGES",
        help="Messages per KafkaProducer user, then it idles (0 = no limit). Default 0",
    )


def _validate_at_init(environment: Environment, **_kw: Any) -> None:
    """A bad ``--kafka-*`` value is one sentence and exit code 2, before any user starts."""
    if environment.parsed_options is None:
        return
    try:
        kafka_options(environment)
    except ConfigError as err:
        sys.stderr.write(f"pipeswarm: {err}\n")
        raise SystemExit(2) from None


events.init_command_line_parser.add_listener(add_arguments)
events.init.add_listener(_validate_at_init)
