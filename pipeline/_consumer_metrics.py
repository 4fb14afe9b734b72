"""The consumer's metrics (names are a contract: docs/metrics.md) and its Redis breaker."""

from __future__ import annotations

import logging

from prometheus_client import Counter, Gauge, Histogram

from pipeline import _backoff
from pipeline._schema import REASONS

log = logging.getLogger("pipeline.consumer")

CONSUMED = Counter("pipeline_consumer_consumed_messages_total", "Records polled from Kafka")
WRITTEN = Counter("pipeline_consumer_written_messages_total", "Records written to Redis")
DLQ = Counter(
    "pipeline_consumer_dlq_messages_total", "Records dead-lettered instead of written", ["reason"]
)
DLQ_ERRORS = Counter(
    "pipeline_consumer_dlq_errors_total", "Dead-letter records Kafka did not take (logged)"
)
REDIS_ERRORS = Counter("pipeline_consumer_redis_errors_total", "Failed Redis batch writes")
REDIS_LATENCY = Histogram(
    "pipeline_consumer_redis_write_latency_seconds",
    "Time of one Redis transaction (one Kafka batch), offsets read included",
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
LAG = Gauge(
    "pipeline_consumer_lag_messages",
    "Records in Kafka not yet applied in Redis (high watermark - next offset to apply)",
    ["partition"],
)
COMMITS = Counter("pipeline_consumer_commits_total", "Offset commits Kafka accepted")
SKIPPED = Counter(
    "pipeline_consumer_skipped_messages_total",
    "Redelivered records already applied in Redis (not written twice)",
)
REWINDS = Counter(
    "pipeline_consumer_rewinds_total",
    "Partitions rewound because Redis had lost records this consumer had written",
)
LOOP_ERRORS = Counter(
    "pipeline_consumer_loop_errors_total",
    "Unexpected errors in the consumer's loop (logged; the loop goes on after 1 s)",
)
READY = Gauge(
    "pipeline_consumer_ready",
    "1 while the consumer is in its group and its loop turned within the last 5 s",
)

CLOSED, OPEN, HALF_OPEN = 0, 1, 2
_STATE_NAMES = {CLOSED: "closed", OPEN: "open", HALF_OPEN: "half_open"}
for _state in _STATE_NAMES.values():  # every series exists from the first scrape
    BREAKER_TRANSITIONS.labels(_state)
for _reason in REASONS:
    DLQ.labels(_reason)


class Breaker:
    """Trips after `threshold` consecutive failures; retries after an exponential backoff."""

    def __init__(self, threshold: int = 3, base_s: float = 0.1, max_s: float = 2.0) -> None:
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
        return _backoff.delay(self.failures - 1, self.base_s, self.max_s)

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
