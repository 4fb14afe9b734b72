"""The consumer's pure parts: its breaker, its RESP encoding, its settings."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from pipeline._consumer_metrics import CLOSED, HALF_OPEN, OPEN, Breaker
from pipeline._consumer_redis import command
from pipeline.config import Settings
from pipeline.exceptions import ConfigError


def test_the_breaker_opens_after_three_failures_backs_off_and_closes_on_success():
    b = Breaker(threshold=3, base_s=0.1, max_s=2.0)
    assert b.may_try(0.0)
    b.failure(0.0)
    b.failure(0.1)
    assert b.state == CLOSED and not b.may_try(0.15)  # backing off 0.2 s after the 2nd
    b.failure(0.3)
    assert b.state == OPEN
    assert REGISTRY.get_sample_value("pipeline_consumer_breaker_state") == OPEN
    assert not b.may_try(0.5)  # 0.4 s after the 3rd
    assert b.may_try(0.71) and b.state == HALF_OPEN
    b.failure(0.71)  # the half-open try failed: open again, longer
    assert b.state == OPEN and b.backoff() == pytest.approx(0.8)
    for n in range(10):
        b.failure(1.0 + n)
    assert b.backoff() == 2.0  # capped
    b.success()
    assert b.state == CLOSED and b.failures == 0 and b.may_try(0.0)


def test_command_is_resp_with_binary_safe_arguments():
    assert command(b"GET", b"k") == b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"
    assert command(b"SET", b"a\r\nb", b"") == b"*3\r\n$3\r\nSET\r\n$4\r\na\r\nb\r\n$0\r\n\r\n"


def test_consumer_settings_come_from_the_environment(monkeypatch):
    monkeypatch.delenv("CONSUMER_INSTANCE", raising=False)
    assert Settings.from_env().consumer_instance == 0
    monkeypatch.setenv("CONSUMER_INSTANCE", "3")
    monkeypatch.setenv("CONSUMER_COMMIT_DELAY_MS", "500")
    monkeypatch.setenv("STREAM_MAXLEN", "1000")
    s = Settings.from_env()
    assert (s.consumer_instance, s.consumer_commit_delay_ms, s.stream_maxlen) == (3, 500, 1000)
    monkeypatch.setenv("CONSUMER_INSTANCE", "two")
    with pytest.raises(ConfigError, match="CONSUMER_INSTANCE"):
        Settings.from_env()


def test_offsets_are_committed_at_most_once_a_second_and_one_at_a_time(monkeypatch):
    import collections

    from pipeline import consumer as mod

    clock = [100.0]
    monkeypatch.setattr(mod.time, "monotonic", lambda: clock[0])
    sent: list[dict[int, int]] = []

    class Kafka:
        def commit(self, offsets, asynchronous):
            sent.append({tp.partition: tp.offset for tp in offsets})

    c = mod.Consumer.__new__(mod.Consumer)
    c.topic, c.kafka, c.assigned = "t", Kafka(), {0, 1}
    c._durable, c._commit_delay = collections.deque(), 2.0
    c._to_commit, c._committed_at, c._last_error_log = {}, {}, {}
    c._commit_sent, c._commit_waiting = -mod.COMMIT_ANSWER_S, False

    def turn(dt: float, offsets: dict[int, int]) -> None:  # a batch made durable, then _commit
        clock[0] += dt
        c._durable.append((clock[0], offsets))
        c._commit()

    turn(0.0, {0: 10})
    turn(2.1, {1: 5})  # the first batch is past the 2 s delay: committed
    assert sent == [{0: 10}]
    for n in range(20):  # 20 turns in 0.2 s while the answer is awaited: nothing sent
        turn(0.01, {0: 11 + n})
    assert sent == [{0: 10}]
    c._committed(None, [mod.TopicPartition("t", 0, 10)])  # the answer
    turn(3.0, {0: 40})  # past the delay for the batches above
    assert sent == [{0: 10}, {0: 30, 1: 5}]  # one request with the newest of each
    turn(0.5, {1: 6})
    assert len(sent) == 2  # answer still awaited and under a second
    turn(mod.COMMIT_ANSWER_S, {1: 7})  # no answer for that long: send again anyway
    assert sent[-1] == {0: 40, 1: 6}  # {1: 7} is not 2 s old yet
