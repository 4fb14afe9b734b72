"""The consumer: Kafka `mqtt-messages` -> Redis (latest state, counters, push channel).

For each record: stamp `trace.hops.consumer`, then in one Redis pipeline
write the device's latest coordinates (with TTL), bump the per-device and
total counters, and PUBLISH the update for the gateway. Offsets are committed
only after Redis took the batch: at-least-once.

When Redis fails the batch is kept, retried with exponential backoff behind a
circuit breaker (closed -> open -> half-open -> closed), and the partitions
are paused meanwhile while `poll()` keeps the group membership alive (Tansu
evicts a member that does not poll within ~10 s). Nothing is lost: the same
batch is written once Redis is back.

    KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 REDIS_URL=redis://127.0.0.1:6379/0 \
        python -m pipeline.consumer
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import NamedTuple

import redis
from kafka import KafkaConsumer
from kafka.consumer.fetcher import ConsumerRecord
from prometheus_client import Counter, Gauge, Histogram

from pipeline._kafka import ensure_topics
from pipeline._procs import run_threaded_service
from pipeline._trace import stamp
from pipeline.config import (
    COUNTS_KEY,
    DEVICES_KEY,
    LATEST_KEY,
    OFFSETS_KEY,
    TOTAL_KEY,
    UPDATES_CHANNEL,
    Settings,
)

log = logging.getLogger("pipeline.consumer")

CONSUMED = Counter("pipeline_consumer_consumed_messages_total", "Records polled from Kafka")
WRITTEN = Counter("pipeline_consumer_written_messages_total", "Records written to Redis")
BAD = Counter("pipeline_consumer_bad_messages_total", "Records skipped as unusable", ["reason"])
REDIS_ERRORS = Counter("pipeline_consumer_redis_errors_total", "Failed Redis batch writes")
REDIS_LATENCY = Histogram(
    "pipeline_consumer_redis_write_latency_seconds",
    "Time of one Redis pipeline write (one Kafka batch)",
    buckets=(0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1),
)
BATCH_SIZE = Histogram(
    "pipeline_consumer_batch_messages",
    "Records per Redis batch",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500),
)
BREAKER_STATE = Gauge(
    "pipeline_consumer_breaker_state", "Redis circuit breaker: 0 closed, 1 open, 2 half-open"
)
BREAKER_TRANSITIONS = Counter(
    "pipeline_consumer_breaker_transitions_total", "Breaker state changes, by new state", ["state"]
)
LAG = Gauge("pipeline_consumer_lag_messages", "High watermark - position", ["partition"])
COMMITS = Counter("pipeline_consumer_commits_total", "Offset commits after a Redis write")
SKIPPED = Counter(
    "pipeline_consumer_skipped_messages_total",
    "Redelivered records already applied in Redis (not written twice)",
)
READY = Gauge("pipeline_consumer_ready", "1 once the consumer has partitions assigned")

CLOSED, OPEN, HALF_OPEN = 0, 1, 2
_STATE_NAMES = {CLOSED: "closed", OPEN: "open", HALF_OPEN: "half_open"}
for _state in _STATE_NAMES.values():  # every series exists from the first scrape
    BREAKER_TRANSITIONS.labels(_state)
BAD.labels("unparseable")


class Breaker:
    """Trips after `threshold` consecutive failures; retries after an exponential backoff."""

    def __init__(self, threshold: int = 3, base_s: float = 0.1, max_s: float = 5.0) -> None:
        self.threshold, self.base_s, self.max_s = threshold, base_s, max_s
        self.state = CLOSED
        self.failures = 0
        self.retry_at = 0.0
        BREAKER_STATE.set(CLOSED)

    def _move(self, state: int) -> None:
        if state != self.state:
            self.state = state
            BREAKER_STATE.set(state)
            BREAKER_TRANSITIONS.labels(_STATE_NAMES[state]).inc()
            log.info("event=breaker state=%s failures=%d", _STATE_NAMES[state], self.failures)

    def backoff(self) -> float:
        return min(self.base_s * 2 ** max(self.failures - 1, 0), self.max_s)

    def may_try(self, now: float) -> bool:
        if self.state == OPEN and now >= self.retry_at:
            self._move(HALF_OPEN)
        return self.state != OPEN and now >= self.retry_at

    def success(self) -> None:
        self.failures = 0
        self.retry_at = 0.0
        self._move(CLOSED)

    def failure(self, now: float) -> None:
        self.failures += 1
        self.retry_at = now + self.backoff()
        if self.state == HALF_OPEN or self.failures >= self.threshold:
            self._move(OPEN)


class Pending(NamedTuple):
    partition: int
    offset: int
    device_id: str
    value: bytes
    ts_ms: int


class Consumer:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stopping = threading.Event()
        ensure_topics(
            settings.kafka_bootstrap,
            {settings.kafka_topic: settings.kafka_partitions, settings.kafka_dlq_topic: 1},
        )
        self.kafka = KafkaConsumer(
            settings.kafka_topic,
            bootstrap_servers=settings.kafka_bootstrap,
            group_id=settings.consumer_group,
            client_id="pipeswarm-consumer",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            # Tansu's rebalance timeout: a group joins only with <= ~10 s (DESIGN.md).
            max_poll_interval_ms=10_000,
            # The first join waits about one session timeout on Tansu: 3 s joins in
            # 2.7 s where 10 s took 10.9 s (measured). Heartbeats run in their own
            # thread, so a busy poll loop does not expire the session.
            session_timeout_ms=3_000,
            heartbeat_interval_ms=1_000,
            # Tansu holds a fetch for its whole max wait even when data is there:
            # 20 ms gave a Kafka hop p50 of 30 ms at 200 msg/s, 5 ms gives 6 ms.
            fetch_max_wait_ms=5,
            max_poll_records=500,
        )
        self.redis = redis.Redis.from_url(
            settings.redis_url, socket_timeout=2, socket_connect_timeout=1
        )
        self.breaker = Breaker()
        self.pending: list[Pending] = []  # polled, not yet in Redis
        # Highest offset per partition already applied in Redis (None: read it from
        # Redis before the next write). Written in the same MULTI/EXEC as the data,
        # so a batch whose EXEC ran but whose reply was lost (Redis going down) is
        # not applied twice on retry, nor after a restart before the commit.
        self.applied: dict[int, int] | None = None
        self._offsets_key = OFFSETS_KEY.format(
            topic=settings.kafka_topic, group=settings.consumer_group
        )
        self._lag_at = 0.0

    def _prepare(self, records: list[ConsumerRecord]) -> None:
        for record in records:
            CONSUMED.inc()
            try:
                message = json.loads(record.value)
                device_id = message["device_id"]
                if not isinstance(device_id, str) or not device_id:
                    raise KeyError("device_id")
            except (ValueError, TypeError, KeyError):
                BAD.labels("unparseable").inc()
                continue
            stamp(message, "consumer")
            value = json.dumps(message, separators=(",", ":")).encode()
            self.pending.append(
                Pending(record.partition, record.offset, device_id, value, record.timestamp)
            )

    def _write(self) -> None:
        s = self.settings
        if self.applied is None:
            stored = self.redis.hgetall(self._offsets_key)
            self.applied = {int(p): int(o) for p, o in stored.items()}
        applied = self.applied
        batch = [p for p in self.pending if p.offset > applied.get(p.partition, -1)]
        if len(batch) < len(self.pending):
            SKIPPED.inc(len(self.pending) - len(batch))
        if not batch:
            return
        newest: dict[int, int] = {}
        # MULTI/EXEC: a batch is applied whole or not at all, with its offsets.
        pipe = self.redis.pipeline(transaction=True)
        for p in batch:
            pipe.set(LATEST_KEY.format(device_id=p.device_id), p.value, ex=s.redis_ttl_s)
            pipe.zadd(DEVICES_KEY, {p.device_id: p.ts_ms})
            pipe.hincrby(COUNTS_KEY, p.device_id, 1)
            pipe.publish(UPDATES_CHANNEL, p.value)
            newest[p.partition] = max(p.offset, newest.get(p.partition, -1))
        pipe.incrby(TOTAL_KEY, len(batch))
        pipe.hset(self._offsets_key, mapping=dict(newest))  # type: ignore[arg-type]
        started = time.perf_counter()
        try:
            pipe.execute()
        except redis.RedisError:
            self.applied = None  # did EXEC run? Ask Redis before the retry.
            raise
        REDIS_LATENCY.observe(time.perf_counter() - started)
        BATCH_SIZE.observe(len(batch))
        WRITTEN.inc(len(batch))
        applied.update(newest)

    def _flush(self) -> bool:
        """Write the pending batch to Redis, then commit; False while Redis is down."""
        if not self.breaker.may_try(time.monotonic()):
            return False
        try:
            if self.pending:
                self._write()
        except redis.RedisError as exc:
            REDIS_ERRORS.inc()
            if self.breaker.failures == 0:
                log.warning("event=redis_write_failed error=%r batch=%d", exc, len(self.pending))
            self.breaker.failure(time.monotonic())
            return False
        self.pending.clear()
        self.breaker.success()
        self.kafka.commit()  # offsets of everything polled so far, all now in Redis
        COMMITS.inc()
        return True

    def _update_lag(self) -> None:
        now = time.monotonic()
        if now - self._lag_at < 1.0:
            return
        self._lag_at = now
        for tp in self.kafka.assignment():
            high = self.kafka.highwater(tp)
            if high is not None:
                LAG.labels(str(tp.partition)).set(max(high - self.kafka.position(tp), 0))

    def run(self) -> None:
        while not self.stopping.is_set():
            if self.pending:
                # Redis is failing: keep the batch, keep the group alive, fetch nothing new.
                if self.kafka.paused() != self.kafka.assignment():
                    self.kafka.pause(*self.kafka.assignment())
                self.kafka.poll(timeout_ms=min(int(self.breaker.backoff() * 1000), 200))
                if self._flush():
                    self.kafka.resume(*self.kafka.paused())
                continue
            batches = self.kafka.poll(timeout_ms=200)
            READY.set(1 if self.kafka.assignment() else 0)
            records = [r for batch in batches.values() for r in batch]
            if records:
                self._prepare(records)
                if not self.pending:  # all unusable: still move the offsets on
                    self.kafka.commit()
                else:
                    self._flush()
            self._update_lag()
        if self.pending:
            log.warning(
                "event=stopping_with_unwritten batch=%d (offsets not committed; "
                "they are redelivered)",
                len(self.pending),
            )
        self.kafka.close(autocommit=False)


def main() -> None:
    run_threaded_service(Consumer, lambda s: s.consumer_metrics_port)


if __name__ == "__main__":
    main()
