"""The gateway's counters, kept as plain numbers and read at scrape time.

The hot path (thousands of updates/s, each fanned out to every client) only does
``+= 1`` on attributes and one bisect per frame; a `Collector` turns the current
values into metric families when Prometheus scrapes (prometheus_client's
``collector/custom.md``). Every name is listed in ``METRICS.md`` beside this file.
"""

from __future__ import annotations

import gc
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, GCCollector, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from pipeline._schema import REASONS

#: Push latency buckets (seconds): sub-millisecond fan-out up to a stalled client.
LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

PROTOCOLS = ("websocket", "stomp")
DROP_REASONS = ("queue_full", "closed")
COMMAND_RESULTS = ("accepted", "invalid", "unknown_device", "unavailable", "unconfirmed")
#: ``rejected`` is split by reason in ``ingest_rejected`` (``pipeline._schema.REASONS``).
INGEST_RESULTS = ("accepted", "invalid", "rejected", "unavailable", "unconfirmed")
#: Where a bearer token was refused, and why (``pipeline.gateway._guard``).
AUTH_PROTOCOLS = ("http", "websocket", "stomp")
AUTH_REASONS = ("missing", "malformed", "signature", "expired", "issuer")
#: Limits a client ran into (each a setting, docs/pipeline-settings.md).
REJECT_REASONS = ("body_too_large", "connect_timeout", "too_many_subscriptions")
REPLAY_RESULTS = ("complete", "truncated", "failed")
#: Every reason an ERROR frame can carry: the codec's, then the session's.
STOMP_ERROR_REASONS = (
    "bad_content_length",
    "bad_encoding",
    "bad_escape",
    "bad_header",
    "missing_nul",
    "too_large",
    "unknown_command",
    "already_connected",
    "auth",
    "bad_since",
    "connect_timeout",
    "duplicate_subscription",
    "heartbeat_timeout",
    "missing_header",
    "not_connected",
    "replay_failed",
    "too_many_subscriptions",
    "unexpected_command",
    "unknown_destination",
    "unsupported",
    "version",
)


class FastHistogram:
    """Fixed buckets, no lock: observed from the event loop thread only."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound lands in that bound's `le` bucket.
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, int]]:
        out = []
        total = 0
        for bound, n in zip(self.bounds, self.counts, strict=False):
            total += n
            out.append((repr(float(bound)), total))
        out.append(("+Inf", total + self.counts[-1]))
        return out


class GatewayStats:
    """Everything the gateway counts; `/api/stats` and `/metrics` both read it."""

    def __init__(self) -> None:
        self.updates = 0
        self.bad_updates = 0
        self.redis_reconnects = 0
        self.stream_gaps = 0
        self.bad_latest = 0
        self.snapshots = 0
        # Every known label set starts at 0, so rate() sees the first increment.
        self.pushed: Counter[str] = Counter({p: 0 for p in PROTOCOLS})
        self.dropped: Counter[tuple[str, str]] = Counter(
            {(p, r): 0 for p in PROTOCOLS for r in DROP_REASONS}
        )
        self.commands: Counter[str] = Counter({r: 0 for r in COMMAND_RESULTS})
        self.ingest: Counter[str] = Counter({r: 0 for r in INGEST_RESULTS})
        self.ingest_rejected: Counter[str] = Counter({r: 0 for r in REASONS})
        self.ingest_latency = FastHistogram()
        self.stomp_errors: Counter[str] = Counter({r: 0 for r in STOMP_ERROR_REASONS})
        self.replays: Counter[tuple[str, str]] = Counter(
            {(p, r): 0 for p in PROTOCOLS for r in REPLAY_RESULTS}
        )
        self.replayed: Counter[str] = Counter({p: 0 for p in PROTOCOLS})
        self.auth_failures: Counter[tuple[str, str]] = Counter(
            {(p, r): 0 for p in AUTH_PROTOCOLS for r in AUTH_REASONS}
        )
        self.rejected: Counter[str] = Counter({r: 0 for r in REJECT_REASONS})
        self.push_latency = FastHistogram()
        # Filled in by the gateway: live values read at scrape time.
        self.connections: Callable[[], dict[str, int]] = lambda: {p: 0 for p in PROTOCOLS}
        self.devices: Callable[[], int] = lambda: 0
        self.redis_up: Callable[[], bool] = lambda: False
        self.mqtt_up: Callable[[], bool] = lambda: False


class _GatewayCollector(Collector):
    def __init__(self, stats: GatewayStats) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        s = self._stats
        ns = "pipeline_gateway_"

        yield _labelled(
            GaugeMetricFamily,
            ns + "connections",
            "Open client connections.",
            labels=["protocol"],
            values=s.connections(),
        )

        yield GaugeMetricFamily(
            ns + "gc_frozen_objects",
            "Objects in the permanent generation (gc.freeze()): flat under connection churn.",
            value=gc.get_freeze_count(),
        )

        counters = [
            ("updates", "Entries read from the Redis update stream and parsed.", s.updates),
            (
                "bad_updates",
                "Stream entries skipped: not a JSON object with device_id, too large or too deep.",
                s.bad_updates,
            ),
            (
                "redis_reconnects",
                "Times the Redis stream reader lost its connection and resumed.",
                s.redis_reconnects,
            ),
            (
                "stream_gaps",
                "Times the stream reader resumed from an id older than the stream's oldest entry.",
                s.stream_gaps,
            ),
            (
                "bad_latest",
                "Stored latest values skipped (REST, seeding): not a sane JSON object.",
                s.bad_latest,
            ),
            ("snapshots", "Snapshot batches built (snapshot push mode).", s.snapshots),
        ]
        for name, documentation, value in counters:
            yield CounterMetricFamily(ns + name, documentation, value=value)
        labelled: list[tuple[str, str, list[str], Mapping[Any, float]]] = [
            (
                "replays",
                "Resubscriptions with since, by outcome.",
                ["protocol", "result"],
                s.replays,
            ),
            ("replayed", "Frames replayed from the stream to clients.", ["protocol"], s.replayed),
            ("pushed", "Data frames written to clients.", ["protocol"], s.pushed),
            (
                "dropped",
                "Frames not delivered to a client (queue_full: slow client; closed: client gone).",
                ["protocol", "reason"],
                s.dropped,
            ),
            ("commands", "REST device commands by outcome.", ["result"], s.commands),
            ("ingest", "HTTP ingest requests by outcome.", ["result"], s.ingest),
            (
                "ingest_rejected",
                "HTTP ingest messages dead-lettered, by reason.",
                ["reason"],
                s.ingest_rejected,
            ),
            ("stomp_errors", "STOMP ERROR frames sent, by reason.", ["reason"], s.stomp_errors),
            (
                "auth_failures",
                "Bearer tokens refused (401, ERROR frame), by protocol and reason.",
                ["protocol", "reason"],
                s.auth_failures,
            ),
            ("rejected", "Requests and connections refused by a limit.", ["reason"], s.rejected),
        ]
        for name, documentation, labels, values in labelled:
            yield _labelled(CounterMetricFamily, ns + name, documentation, labels, values)

        hist = s.push_latency
        latency = HistogramMetricFamily(
            ns + "push_latency_seconds",
            "Read from Redis (or snapshot built) to frame written to the client socket.",
        )
        latency.add_metric([], hist.cumulative(), sum_value=hist.sum)
        yield latency
        hist = s.ingest_latency
        ingest = HistogramMetricFamily(
            ns + "ingest_latency_seconds",
            "HTTP ingest: request body read to Kafka acknowledgement (accepted messages).",
        )
        ingest.add_metric([], hist.cumulative(), sum_value=hist.sum)
        yield ingest

        yield GaugeMetricFamily(
            ns + "devices", "Devices whose latest update the gateway holds.", value=s.devices()
        )
        yield GaugeMetricFamily(
            ns + "redis_up",
            "1 while the Redis stream reader is connected.",
            value=int(s.redis_up()),
        )
        yield GaugeMetricFamily(
            ns + "mqtt_up", "1 while the MQTT command client is connected.", value=int(s.mqtt_up())
        )


def _labelled(
    family: type[CounterMetricFamily | GaugeMetricFamily],
    name: str,
    documentation: str,
    labels: list[str],
    values: Mapping[Any, float],
) -> CounterMetricFamily | GaugeMetricFamily:
    """One family with a sample per key of `values` (a label value, or a tuple of them)."""
    metric = family(name, documentation, labels=labels)
    for key, n in sorted(values.items()):
        metric.add_metric(list(key) if isinstance(key, tuple) else [key], n)
    return metric


def make_registry(stats: GatewayStats) -> CollectorRegistry:
    """A registry of its own per app, so two gateways in one process never collide."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_GatewayCollector(stats))
    ProcessCollector(registry=registry)
    GCCollector(registry=registry)  # python_gc_*: how often full collections ran (pipeline._gc)
    return registry
