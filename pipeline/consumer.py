"""The consumer: Kafka `mqtt-messages` -> Redis (latest state, counters, update stream).

Each record gets the same checks as at the bridge (:func:`pipeline._schema.parse`,
the Kafka key as the device's identity), because records can also be produced
straight into Kafka. A record that fails them, or makes anything else here
raise, is dead-lettered to `mqtt-messages-dlq` with its reason and passed: no
record can stop the consumer. Good records get `trace.hops.consumer` and are
applied to Redis a batch at a time in one MULTI/EXEC together with the newest
offset handled per partition (:mod:`pipeline._consumer_redis`); the update feed
is the stream `pipeswarm:stream` (XADD, `MAXLEN ~ STREAM_MAXLEN`).

Where to resume is what Redis says it has applied, not what Kafka has
committed. On assignment each partition starts after the offset recorded in
Redis, and before every write the consumer reads those offsets again: when
Redis has less than this consumer wrote (it was killed and restarted from an
AOF that missed its last second: `appendfsync everysec`), the partition is
rewound to what Redis has and the lost records are written again; records Redis
already has are skipped, so a rebalance or a redelivery never applies twice.
Kafka offsets are committed too, but only once Redis has held them for
`CONSUMER_COMMIT_DELAY_MS` (default 2 s: past the AOF's fsync window), so
Kafka's committed offsets never claim more than Redis can lose.

While Redis fails, the batch is kept, retried behind a circuit breaker with
exponential backoff, and the partitions are paused; the loop keeps calling
``consume()`` (group membership), refreshing the lag gauges and serving
callbacks all the while. Several processes can share the group
(`CONSUMER_INSTANCE` gives each its own client id; each needs its own
`CONSUMER_METRICS_PORT`).

Cost, measured here with ``python -m bench.consumer_cost`` (100,000 records
waiting in Kafka 4.1, 8 partitions, 2 shared cores): 26-39 µs CPU per record,
15,000-26,000 msg/s; the kafka-python consumer this replaced took 136-156 µs
and drained 4,200-6,300 msg/s.

    KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 REDIS_URL=redis://127.0.0.1:6379/0 \
        python -m pipeline.consumer
"""

from __future__ import annotations

import collections
import logging
import sys
import threading
import time
from typing import Any

import redis
from confluent_kafka import Consumer as KafkaConsumer
from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition

from pipeline._consumer_dlq import DeadLetters
from pipeline._consumer_kafka import kafka_config, partition_lag
from pipeline._consumer_metrics import (
    BATCH_SIZE,
    COMMITS,
    CONSUMED,
    LAG,
    LOOP_ERRORS,
    READY,
    REDIS_ERRORS,
    REDIS_LATENCY,
    REWINDS,
    SKIPPED,
    WRITTEN,
    Breaker,
)
from pipeline._consumer_records import to_record
from pipeline._consumer_redis import Record, RedisBatchWriter
from pipeline._kafka import ensure_topics
from pipeline._schema import Rejected
from pipeline._service import run_threaded_service
from pipeline.config import Settings

log = logging.getLogger("pipeline.consumer")


#: Most records taken from Kafka, and written to Redis, at a time.
BATCH = 500
#: Longest wait in ``consume()``: the loop's turn when nothing arrives.
POLL_S = 0.2
#: At most one offset commit per this many seconds, and one at a time (unless its
#: answer is this late): committing every turn queued commits on the coordinator
#: connection ahead of the heartbeats, and the group dropped the consumer every
#: ~30 s at 1,000 msg/s on a busy machine (session timed out, 10-15 s stalls).
COMMIT_EVERY_S = 1.0
COMMIT_ANSWER_S = 10.0
#: Loop turns older than this make ``pipeline_consumer_ready`` 0 (a wedged loop).
WEDGED_S = 5.0
#: WATCH conflicts with another instance tolerated per batch before backing off.
WATCH_RETRIES = 5


class Consumer:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topic = settings.kafka_topic
        self.stopping = threading.Event()
        ensure_topics(
            settings.kafka_bootstrap,
            {settings.kafka_topic: settings.kafka_partitions, settings.kafka_dlq_topic: 1},
        )
        client_id = f"pipeswarm-consumer-{settings.consumer_instance}"
        self.kafka = KafkaConsumer(
            kafka_config(settings, client_id, self._kafka_error, self._committed)
        )
        self.dlq = DeadLetters(
            settings.kafka_bootstrap,
            settings.kafka_dlq_topic,
            client_id + "-dlq",
            settings.max_payload_bytes,
        )
        self.writer = RedisBatchWriter(
            settings.redis_url,
            settings.kafka_topic,
            settings.consumer_group,
            settings.redis_ttl_s,
            settings.stream_maxlen,
        )
        self.breaker = Breaker()
        self.pending: list[Record] = []  # taken from Kafka, checked, not yet in Redis
        self.handled: dict[int, int] = {}  # partition -> newest offset taken (good or not)
        self.first: dict[int, int] = {}  # partition -> oldest offset taken, not yet written
        # partition -> newest offset Redis has applied, as far as this process knows
        # (read from Redis or written by it); absent: not yet checked since assignment.
        self.applied: dict[int, int] = {}
        self.assigned: set[int] = set()
        self.joined = False  # an assignment arrived (empty when instances > partitions)
        self.paused = False
        self._durable: collections.deque[tuple[float, dict[int, int]]] = collections.deque()
        self._commit_delay = settings.consumer_commit_delay_ms / 1000
        self._committed_at: dict[int, int] = {}  # partition -> offset Kafka accepted
        self._to_commit: dict[int, int] = {}  # durable, not yet sent to Kafka
        self._commit_sent = -COMMIT_ANSWER_S  # monotonic time of the last commit request
        self._commit_waiting = False  # its answer has not come back
        self._lag_at = 0.0
        self._turned = 0.0
        self._last_error_log: dict[str, float] = {}
        READY.set_function(self._ready)

    # -- Kafka callbacks (they run inside consume()) ----------------------------
    def _on_assign(self, kafka: KafkaConsumer, partitions: list[TopicPartition]) -> None:
        """Start each partition after the offset Redis has applied (else Kafka's commit)."""
        ids = [tp.partition for tp in partitions]
        try:
            stored = self.writer.offsets(ids)
        except redis.RedisError as exc:
            # Checked again before the first write (see _check).
            log.warning("event=assign_without_redis error=%r partitions=%s", exc, ids)
            stored = {}
        for tp in partitions:
            offset = stored.get(tp.partition)
            if offset is not None:
                tp.offset = offset + 1
                self.applied[tp.partition] = offset
        kafka.assign(partitions)
        self.assigned.update(ids)
        self.joined = True
        if self.paused:
            kafka.pause(partitions)
        log.info("event=assigned partitions=%s redis_offsets=%s", ids, stored)

    def _on_revoke(self, kafka: KafkaConsumer, partitions: list[TopicPartition]) -> None:
        self._commit(final=True)
        self._forget({tp.partition for tp in partitions})
        kafka.unassign()
        log.info("event=revoked partitions=%s", [tp.partition for tp in partitions])

    def _on_lost(self, kafka: KafkaConsumer, partitions: list[TopicPartition]) -> None:
        self._forget({tp.partition for tp in partitions})
        kafka.unassign()
        log.warning("event=partitions_lost partitions=%s", [tp.partition for tp in partitions])

    def _forget(self, parts: set[int]) -> None:
        """Drop everything about partitions another instance now owns: it resumes
        them from the offsets in Redis, so records not yet written are not lost."""
        self.pending = [r for r in self.pending if r.partition not in parts]
        for p in parts:
            self.handled.pop(p, None)
            self.first.pop(p, None)
            self.applied.pop(p, None)
            self._committed_at.pop(p, None)
            self._to_commit.pop(p, None)
            self.assigned.discard(p)
            try:
                LAG.remove(str(p))
            except KeyError:
                pass
        for _, offsets in self._durable:
            for p in parts:
                offsets.pop(p, None)

    def _committed(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        self._commit_waiting = False
        if err is not None:
            self._log_limited("commit", "event=commit_failed error=%s", err)
            return
        COMMITS.inc()
        for tp in partitions:
            if tp.error is None and tp.partition in self.assigned:
                self._committed_at[tp.partition] = tp.offset

    def _kafka_error(self, err: KafkaError) -> None:
        self._log_limited(f"kafka-{err.code()}", "event=kafka_error error=%s", err)

    def _log_limited(self, key: str, fmt: str, *args: Any, exc_info: bool = False) -> None:
        """Log at most once per 10 s per key: an outage is one line, not thousands."""
        now = time.monotonic()
        if now - self._last_error_log.get(key, -1e9) >= 10:
            self._last_error_log[key] = now
            log.warning(fmt, *args, exc_info=exc_info)

    # -- records ---------------------------------------------------------------
    def _take(self, messages: list[Message]) -> None:
        """Check each record: good ones join the batch, anything else is dead-lettered."""
        max_bytes = self.settings.max_payload_bytes
        handled, first = self.handled, self.first
        taken = 0
        for msg in messages:
            err = msg.error()
            if err is not None:
                self._kafka_error(err)
                continue
            partition, offset = msg.partition(), msg.offset()
            if partition is None or offset is None:
                continue  # not a record (librdkafka sets both on every record)
            taken += 1
            if offset > handled.get(partition, -1):
                handled[partition] = offset
            if partition not in first:
                first[partition] = offset
            try:
                self.pending.append(to_record(msg, partition, offset, max_bytes))
            except Rejected as exc:
                self.dlq.send(msg, exc.reason, str(exc))
            except Exception as exc:  # noqa: BLE001 - no record may stop the consumer
                log.exception(
                    "event=record_failed partition=%s offset=%s (dead-lettered)", partition, offset
                )
                self.dlq.send(msg, "internal_error", repr(exc))
        if taken:
            CONSUMED.inc(taken)

    # -- Redis -----------------------------------------------------------------
    def _check(self, stored: dict[int, int | None]) -> None:
        """Compare what Redis has applied with what this process knows; rewind
        partitions whose records Redis lost."""
        first = self.first
        for p, offset in stored.items():
            known = self.applied.get(p)
            if known is not None and (offset is None or offset < known):
                # Redis lost writes of ours (restarted from an AOF that missed them).
                self._rewind(p, offset, f"redis has {offset}, this consumer wrote {known}")
            elif known is None and offset is not None and first.get(p, offset + 1) > offset + 1:
                # Assigned while Redis was down: Kafka's commit is past what Redis has.
                self._rewind(p, offset, f"redis has {offset}, kafka resumed at {first[p]}")
            elif offset is not None:
                self.applied[p] = offset

    def _rewind(self, p: int, stored: int | None, why: str) -> None:
        if stored is None:
            # Redis lost even the record of this group's progress: resume from
            # Kafka's commit, which trails what Redis had by the commit delay.
            target = self._committed_at.get(p)
            if target is None:
                self.applied.pop(p, None)
                return
        else:
            target = stored + 1
        log.warning("event=rewind partition=%d to=%d why=%r", p, target, why)
        try:
            self.kafka.seek(TopicPartition(self.topic, p, target))
        except KafkaException as exc:
            # Nothing is written until the rewind takes: the breaker retries the batch.
            raise redis.RedisError(f"rewinding partition {p} failed: {exc}") from exc
        REWINDS.inc()
        self.pending = [r for r in self.pending if r.partition != p]
        self.handled.pop(p, None)
        self.first.pop(p, None)
        if stored is None:
            self.applied.pop(p, None)
        else:
            self.applied[p] = stored
        for _, offsets in self._durable:
            offsets.pop(p, None)

    def _write(self) -> None:
        """Apply the pending batch in one transaction; raises RedisError."""
        writer = self.writer
        for _ in range(WATCH_RETRIES):
            started = time.perf_counter()
            stored = writer.offsets(sorted(self.handled), watch=True)
            self._check(stored)
            batch = [r for r in self.pending if r.offset > self.applied.get(r.partition, -1)]
            if len(batch) < len(self.pending):
                SKIPPED.inc(len(self.pending) - len(batch))
            handled = {p: o for p, o in self.handled.items() if o > self.applied.get(p, -1)}
            if not handled:
                writer.unwatch()
                break
            tx = writer.encode(batch, handled)
            if writer.execute(tx):
                REDIS_LATENCY.observe(time.perf_counter() - started)
                if batch:
                    BATCH_SIZE.observe(len(batch))
                    WRITTEN.inc(len(batch))
                self.applied.update(handled)
                self._durable.append((time.monotonic(), {p: o + 1 for p, o in handled.items()}))
                break
            # Another instance wrote offsets in between: read them again.
        else:
            raise redis.WatchError(f"offsets changed under {WATCH_RETRIES} tries in a row")
        self.pending.clear()
        self.handled.clear()
        self.first.clear()

    def _flush(self) -> bool:
        """Write what was taken to Redis; False while Redis is failing."""
        if not self.handled:
            return True
        if not self.breaker.may_try(time.monotonic()):
            return False
        try:
            self._write()
        except redis.RedisError as exc:
            REDIS_ERRORS.inc()
            if self.breaker.failures == 0:
                log.warning("event=redis_write_failed error=%r batch=%d", exc, len(self.pending))
            self.breaker.failure(time.monotonic())
            return False
        self.breaker.success()
        return True

    # -- Kafka offsets and lag -------------------------------------------------
    def _commit(self, final: bool = False) -> None:
        """Commit the offsets Redis has held for the commit delay (all of them when
        ``final``: what the next owner resumes from is in Redis anyway).

        Asynchronous: a commit must not hold the loop while Kafka is away (the
        outcome comes back through ``on_commit``; ``close()`` waits for it). At most
        one every :data:`COMMIT_EVERY_S`, one at a time."""
        now = time.monotonic()
        cutoff = now - (0 if final else self._commit_delay)
        while self._durable and self._durable[0][0] <= cutoff:
            self._to_commit.update(self._durable.popleft()[1])
        since = now - self._commit_sent
        if not final and (
            since < COMMIT_EVERY_S or (self._commit_waiting and since < COMMIT_ANSWER_S)
        ):
            return
        offsets = {p: o for p, o in self._to_commit.items() if o > self._committed_at.get(p, -1)}
        self._to_commit.clear()
        if not offsets:
            return
        tps = [TopicPartition(self.topic, p, o) for p, o in offsets.items()]
        try:
            self.kafka.commit(offsets=tps, asynchronous=True)
            self._commit_sent, self._commit_waiting = now, True
        except KafkaException as exc:
            self._log_limited("commit", "event=commit_failed error=%s", exc)

    def _update_lag(self, now: float) -> None:
        """Per partition: high watermark - next offset to apply; at most every second."""
        if now - self._lag_at < 1.0:
            return
        self._lag_at = now
        for p, lag in partition_lag(
            self.kafka, self.topic, sorted(self.assigned), self.applied, self.paused, now + 0.5
        ):
            LAG.labels(str(p)).set(lag)

    def _ready(self) -> float:
        return float(self.joined and time.monotonic() - self._turned < WEDGED_S)

    # -- the loop ----------------------------------------------------------------
    def _consume(self) -> list[Message]:
        """What has arrived (up to BATCH); waits up to POLL_S only when nothing has.

        ``consume(n, timeout)`` returns only once it has n records or the timeout
        passed, so a batch is taken without waiting and the wait is for one record.
        """
        messages = self.kafka.consume(BATCH, 0)
        if not messages:
            messages = self.kafka.consume(1, POLL_S)
            if messages:
                messages += self.kafka.consume(BATCH - 1, 0)
        if messages and all(m.error() is not None for m in messages):
            # Only error events (a deleted topic, say) come back without waiting:
            # wait here instead, or the loop would spin on them.
            self.stopping.wait(POLL_S)
        return messages

    def _pause(self, paused: bool) -> None:
        if paused == self.paused:
            return
        self.paused = paused
        parts = [TopicPartition(self.topic, p) for p in self.assigned]
        if parts:
            (self.kafka.pause if paused else self.kafka.resume)(parts)
        log.info("event=%s partitions=%d", "paused" if paused else "resumed", len(parts))

    def run(self) -> None:
        self.kafka.subscribe(
            [self.topic],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        try:
            while not self.stopping.is_set():
                self._turned = time.monotonic()
                try:
                    self._turn()
                except Exception:  # noqa: BLE001 - a bug must not stop the pipeline
                    LOOP_ERRORS.inc()
                    self._log_limited("loop", "event=loop_error (retrying in 1 s)", exc_info=True)
                    self.stopping.wait(1.0)
        finally:
            self._close()

    def _turn(self) -> None:
        if self.handled:
            # Redis is failing: keep the batch, fetch nothing new, stay in the group.
            self._pause(True)
            self.stopping.wait(min(self.breaker.backoff(), POLL_S))
            self._take(self.kafka.consume(BATCH, 0))
        else:
            self._take(self._consume())
        if self._flush():
            self._pause(False)
        self._commit()
        self._update_lag(time.monotonic())
        self.dlq.poll()

    def _close(self) -> None:
        if self.handled:
            self._flush()
        if self.handled:
            log.warning(
                "event=stopping_with_unwritten batch=%d (redelivered from the offsets in Redis)",
                len(self.pending),
            )
        self._commit(final=True)
        self.dlq.close()
        self.kafka.close()
        self.writer.close()


def main() -> int:
    return run_threaded_service(Consumer, "consumer_metrics_port")


if __name__ == "__main__":
    sys.exit(main())
