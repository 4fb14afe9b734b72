"""The consumer's side of Kafka: its client settings, and reading each partition's lag."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from confluent_kafka import Consumer as KafkaConsumer
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from pipeline.config import Settings


def kafka_config(
    settings: Settings,
    client_id: str,
    error_cb: Callable[[KafkaError], None],
    on_commit: Callable[[KafkaError | None, list[TopicPartition]], None],
) -> dict[str, Any]:
    """The librdkafka settings of the consumer's group member."""
    return {
        "bootstrap.servers": settings.kafka_bootstrap,
        "group.id": settings.consumer_group,
        "client.id": client_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        # Kafka's default group.min.session.timeout.ms: the shortest a stock
        # broker accepts, so a killed instance's partitions move within 6 s.
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 2000,
        # The loop calls consume() every POLL_S in every state (Redis down
        # included), so 10 s without one means this process is wedged or
        # stopped: leave the group and let a live instance take over.
        "max.poll.interval.ms": 10_000,
        # A fetch returns as soon as a record is there; this long only when
        # none is (idle partitions: fewer empty fetches). Asking the broker
        # to wait for 16 KB instead cut CPU per record by a quarter at 2,000
        # msg/s, but added ~10 ms to p50 and more to p99 (measured against
        # Kafka 4.1 here): this hop's latency matters more at that rate.
        "fetch.wait.max.ms": 100,
        # Prefetch per process; a paused partition's prefetch is dropped.
        "queued.max.messages.kbytes": 16 * 1024,
        "error_cb": error_cb,
        "on_commit": on_commit,
    }


def partition_lag(
    kafka: KafkaConsumer,
    topic: str,
    partitions: list[int],
    applied: dict[int, int],
    paused: bool,
    budget: float,
) -> Iterator[tuple[int, int]]:
    """(partition, high watermark - next offset to apply) for each partition known.

    ``applied``: newest offset Redis has applied per partition (else the consumer's
    position is the next one); ``budget``: monotonic time after which a paused
    partition's watermark is no longer asked of the broker.
    """
    for p in partitions:
        tp = TopicPartition(topic, p)
        try:
            # Paused partitions are not fetched, so their cached watermark is
            # stale: ask the broker (within a budget: the loop must keep turning).
            if paused and time.monotonic() < budget:
                _, high = kafka.get_watermark_offsets(tp, timeout=0.1, cached=False)
            else:
                _, high = kafka.get_watermark_offsets(tp, cached=True)
        except (KafkaException, TypeError):  # TypeError: None while nothing is known yet
            continue
        if high < 0:
            continue
        done = applied.get(p)
        if done is None:
            position = kafka.position([tp])[0].offset
            if position < 0:
                continue
            next_offset = position
        else:
            next_offset = done + 1
        yield p, max(high - next_offset, 0)
