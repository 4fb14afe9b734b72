"""The ``locust_`` families: Locust's own figures, read from the runner at scrape time.

Part of the exporter (``telemetry.exporter``); ``docs/metrics.md`` lists each
family. Request names are Locust's templated names, at most ``max_names``
(request_type, name) pairs one by one, the rest added up under
``name="(overflow)"`` and counted in ``pipeswarm_exporter_overflow_names``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING

from locust.runners import (
    STATE_CLEANUP,
    STATE_INIT,
    STATE_MISSING,
    STATE_RUNNING,
    STATE_SPAWNING,
    STATE_STOPPED,
    STATE_STOPPING,
    MasterRunner,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.samples import Sample

from telemetry._buckets import locust_buckets

if TYPE_CHECKING:
    from locust.env import Environment
    from locust.runners import Runner
    from locust.stats import StatsEntry

__all__ = [
    "MAX_NAMES",
    "OVERFLOW_NAME",
    "STATES",
    "COMMAND_PREFIX",
    "gauge",
    "locust_families",
]

#: Distinct (request_type, name) pairs exported one by one; a scenario with more
#: names than this has an unbounded name somewhere (a raw id in a name, e.g.
#: ``/api/commands/robot-17``), which would blow up Prometheus' label sets.
MAX_NAMES = 200
MAX_REQUEST_TYPES = 50
OVERFLOW_NAME = "(overflow)"
#: Percentiles of ``locust_request_response_time_seconds`` (Locust's table shows these).
QUANTILES = (0.5, 0.95, 0.99)
#: Every state a runner or a worker node can be in (``locust.runners``).
STATES = (
    STATE_INIT,
    STATE_SPAWNING,
    STATE_RUNNING,
    STATE_CLEANUP,
    STATE_STOPPING,
    STATE_STOPPED,
    STATE_MISSING,
)
#: Name prefix of the Locust entries that carry command delivery (``users/mqtt.py``).
COMMAND_PREFIX = "command:"


def gauge(name: str, documentation: str, run: str, value: float) -> GaugeMetricFamily:
    """A gauge family with one sample labelled ``run``."""
    family = GaugeMetricFamily(name, documentation, labels=["run"])
    family.add_metric([run], value)
    return family


def _capped(
    runner: Runner | None, max_names: int
) -> tuple[list[tuple[str, str, list[StatsEntry]]], int]:
    """``[(request_type, name, [entries]), ...]`` capped at ``max_names``; overflow count.

    Locust's ``entries`` dict keeps first-seen order, so the exported set is
    stable within a run and the overflow row only ever grows (a counter).
    """
    if runner is None:
        return [], 0
    rows: list[tuple[str, str, list[StatsEntry]]] = []
    overflow: dict[str, list[StatsEntry]] = {}
    dropped = 0
    for (name, method), entry in list(runner.stats.entries.items()):
        if len(rows) < max_names:
            rows.append((method, name, [entry]))
        else:
            dropped += 1
            overflow.setdefault(method, []).append(entry)
    rows.extend((method, OVERFLOW_NAME, entries) for method, entries in overflow.items())
    return rows, dropped


def locust_families(env: Environment, run: str, max_names: int = MAX_NAMES) -> Iterator[Metric]:
    """Every ``locust_`` family, plus command latency and the name overflow (from the stats)."""
    runner = env.runner
    rows, dropped = _capped(runner, max_names)

    requests = CounterMetricFamily(
        "locust_requests",
        "Requests Locust recorded (request event fired), by request type and name.",
        labels=["run", "request_type", "name"],
    )
    failures = CounterMetricFamily(
        "locust_failures",
        "Requests Locust recorded as failed, by request type and name.",
        labels=["run", "request_type", "name"],
    )
    by_name = SummaryMetricFamily(
        "locust_request_response_time_seconds",
        "Response time per request since the test started (Locust's statistics table); "
        "requests without a response time are not counted.",
        labels=["run", "request_type", "name"],
    )
    by_type: dict[str, list[StatsEntry]] = {}
    for method, name, entries in rows:
        labels = [run, method, name]
        requests.add_metric(labels, sum(e.num_requests for e in entries))
        failures.add_metric(labels, sum(e.num_failures for e in entries))
        timed = sum(e.num_requests - e.num_none_requests for e in entries)
        total_ms = sum(e.total_response_time for e in entries)
        by_name.add_metric(labels, timed, total_ms / 1000)
        if len(entries) == 1:
            for q in QUANTILES:
                value = entries[0].get_response_time_percentile(q) if timed else math.nan
                by_name.samples.append(
                    Sample(
                        by_name.name,
                        {"run": run, "request_type": method, "name": name, "quantile": str(q)},
                        value / 1000,
                    )
                )
        key = method if method in by_type or len(by_type) < MAX_REQUEST_TYPES else "(overflow)"
        by_type.setdefault(key, []).extend(entries)
    yield requests
    yield failures
    yield by_name

    hist = HistogramMetricFamily(
        "locust_response_time_seconds",
        "Response-time distribution per request type, from Locust's rounded response times "
        "(1 ms below 100 ms, 10 ms below 1 s, 100 ms above).",
        labels=["run", "request_type"],
    )
    for method, entries in sorted(by_type.items()):
        buckets = locust_buckets(e.response_times for e in entries)
        hist.add_metric([run, method], buckets, sum(e.total_response_time for e in entries) / 1000)
    yield hist

    command = HistogramMetricFamily(
        "pipeswarm_command_latency_seconds",
        "Command delivery: the gateway's issued_at stamp to the device receiving the "
        "command (Locust entries named 'command:...').",
        labels=["run"],
    )
    stats = runner.stats.entries if runner is not None else {}
    cmd_entries = [e for (n, _m), e in list(stats.items()) if n.startswith(COMMAND_PREFIX)]
    command.add_metric(
        [run],
        locust_buckets(e.response_times for e in cmd_entries),
        sum(e.total_response_time for e in cmd_entries) / 1000,
    )
    yield command

    yield gauge(
        "pipeswarm_exporter_overflow_names",
        f"(request_type, name) pairs beyond the first {max_names}, exported added up "
        f'as name="{OVERFLOW_NAME}" (a sign of an unbounded request name).',
        run,
        dropped,
    )

    total = runner.stats.total if runner is not None else None
    yield gauge(
        "locust_requests_per_second",
        "Locust's current requests per second, all requests (its ~10 s moving average).",
        run,
        float(total.current_rps) if total is not None else 0.0,
    )
    yield gauge(
        "locust_failures_per_second",
        "Locust's current failures per second, all requests (its ~10 s moving average).",
        run,
        float(total.current_fail_per_sec) if total is not None else 0.0,
    )

    users = GaugeMetricFamily(
        "locust_users",
        "Running users per user class (all workers).",
        labels=["run", "user_class"],
    )
    counts = {cls.__name__: 0 for cls in env.user_classes}
    if isinstance(runner, MasterRunner):
        counts.update(runner.reported_user_classes_count)  # its own greenlets run no users
    elif runner is not None:
        counts.update(runner.user_classes_count)
    for cls_name, n in sorted(counts.items()):
        users.add_metric([run, cls_name], n)
    yield users

    workers = GaugeMetricFamily(
        "locust_workers",
        "Connected workers by state (always 0 in a local run).",
        labels=["run", "state"],
    )
    by_state = dict.fromkeys(STATES, 0)
    if isinstance(runner, MasterRunner):
        for node in list(runner.clients.values()):
            by_state[node.state] = by_state.get(node.state, 0) + 1
    for worker_state, n in by_state.items():
        workers.add_metric([run, worker_state], n)
    yield workers

    runner_state = GaugeMetricFamily(
        "locust_runner_state",
        "1 for the state the master (or local runner) is in, 0 for the others.",
        labels=["run", "state"],
    )
    current = runner.state if runner is not None else STATE_INIT
    for s in STATES:
        runner_state.add_metric([run, s], 1 if s == current else 0)
    yield runner_state
