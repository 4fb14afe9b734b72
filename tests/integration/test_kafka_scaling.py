"""Partitions on a real Apache Kafka: the stack's topic has the count it was given, and
``bench kafka-scaling --kafka-only``'s group owns a topic of its own and counts a step exactly."""

from __future__ import annotations

import time

import psutil
from kafka import KafkaConsumer

from bench._kafka_alone import KafkaAlone
from pipeline._kafka import ensure_topics
from pipeline.config import DEFAULTS
from tests.helpers import wait_for


def _partitions(bootstrap: str, topic: str) -> set[int]:
    probe = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        return probe.partitions_for_topic(topic) or set()
    finally:
        probe.close()


def _gone(pid: int) -> bool:
    # psutil, not Process.is_alive(): under the tests' gevent patching that kept saying True
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_the_stack_creates_its_topic_with_its_partitions(stack):
    # the broker's own default is num.partitions=1: 8 can only come from the stack
    assert stack.partitions == DEFAULTS.kafka_partitions == 8
    assert _partitions(stack.urls["kafka"], DEFAULTS.kafka_topic) == set(range(8))


def test_a_topic_that_exists_keeps_its_count_and_says_so(stack, caplog):
    topic = f"kafka-scaling-{time.time_ns()}"
    ensure_topics(stack.urls["kafka"], {topic: 2})
    with caplog.at_level("WARNING", logger="pipeline._kafka"):
        ensure_topics(stack.urls["kafka"], {topic: 5, DEFAULTS.kafka_topic: 8})
    assert _partitions(stack.urls["kafka"], topic) == {0, 1}
    warned = [r.getMessage() for r in caplog.records if r.name == "pipeline._kafka"]
    assert warned == [f"topic {topic} already exists with 2 partitions, not 5; it keeps 2 "
                      "(delete the topic, or the stack's data with `python -m pipeline down`, "
                      "to change it)"]  # fmt: skip


def test_kafka_alone_group_owns_every_partition_and_a_small_step_arrives_whole(stack):
    topic = f"kafka-scaling-{time.time_ns()}"
    with KafkaAlone(3, 2, devices=20, bootstrap=stack.urls["kafka"], topic=topic) as kafka:
        assert _partitions(kafka.bootstrap, topic) == {0, 1, 2}
        assert sorted(kafka.assigned) == [1, 2]  # 3 partitions between 2 members
        step = kafka.step(rate=400, seconds=1.0)
        members = [p.pid for p in kafka.procs]
    assert (step["published"], step["lost"], step["duplicated"]) == (400, 0, 0)
    assert 0 < step["p50"] <= step["p99"] < 5_000
    assert set(step["cpu"]) == {"consumer-1", "consumer-2", "producer"}
    wait_for(lambda: all(map(_gone, members)), 10, "the consumer processes to exit")
