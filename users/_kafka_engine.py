"""The Kafka producer's engine: one confluent-kafka ``Producer`` per process, settings and topic.

``users.kafka.KafkaProducer`` is the Locust user; this is what it drives. Why
confluent-kafka and how nothing on the task path blocks: ``users/kafka.py``'s
module docstring.
"""

from __future__ import annotations

import collections
import logging
import time
from typing import TYPE_CHECKING, Any

import gevent
from confluent_kafka import KafkaError, KafkaException, Producer
from gevent.event import AsyncResult, Event

from users._mqtt_loop import YIELD_S
from users._per_env import PerEnvironment
from users.exceptions import KafkaDeliveryFailed, KafkaTopicMissing, KafkaUserError

if TYPE_CHECKING:
    from locust.env import Environment

__all__ = ["FIRE_BATCH", "REQUEST_TYPE", "YIELD_S", "ProducerEngine"]

log = logging.getLogger(__name__)

REQUEST_TYPE = "KAFKA"
#: Delivery events fired before the poller yields (~2.5 µs each with Locust's stats).
FIRE_BATCH = 200

#: The engines of each Environment, by (settings, topic, poll interval).
_engines: PerEnvironment[dict[tuple[Any, ...], ProducerEngine]] = PerEnvironment(dict)


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
        engines = _engines(environment)
        key = (tuple(sorted(conf.items())), topic, poll_interval)
        engine = engines.get(key)
        if engine is None:
            engine = engines[key] = cls(environment, conf, topic, poll_interval)
            engine._key = key
        engine.users += 1
        return engine

    def release(self, flush_timeout: float = 10.0) -> int:
        """One user less; the last one flushes and closes. Returns what was left unsent."""
        self.users -= 1
        if self.users > 0:
            return 0
        _engines(self.environment).pop(self._key, None)
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
