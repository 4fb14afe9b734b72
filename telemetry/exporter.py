"""Prometheus exporter: Locust's figures and the end-to-end ledger, read at scrape time.

The Locust master (or the single process of a local run) serves
``http://HOST:--prometheus-port/metrics`` (default 9646, 0 = off); workers
serve nothing, their figures reach the master in Locust's and the ledger's
reports. :class:`LoadCollector` is a ``prometheus_client`` custom collector
(``collector/custom.md``): every scrape reads the runner's ``RequestStats``,
the runner's worker/user state and the plugin's merged
:class:`~telemetry.collector.Collector` as they are at that moment — there is
no second copy of the stats, and nothing is recorded between scrapes.

Families (``docs/metrics.md`` lists each with its labels):

- ``locust_*`` — Locust's own figures: requests and failures per
  (request_type, name), response-time histogram per request type (from
  Locust's rounded ``response_times``), percentiles per request, users per user
  class, workers by state, runner state, current RPS.
- ``pipeswarm_*`` — ours: e2e latency histograms by path and hop (from the
  merged HDR histograms), published/delivered/duplicated/reordered/late
  counters, lost messages, schedule lag, command latency, generator CPU and
  event-loop lag per worker, run info.

Every sample carries ``run`` (the run id); Prometheus adds ``instance``. Names
are Locust's templated names, and at most ``max_names`` (request_type, name)
pairs are exported individually: the rest are added up under
``name="(overflow)"`` and counted in ``pipeswarm_exporter_overflow_names``.

Embedding (a test, or a custom runner)::

    registry = CollectorRegistry()
    registry.register(LoadCollector(environment))
    server = serve(registry, port=9646)
"""

from __future__ import annotations

import logging
import math
import sys
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import locust
from gevent.pywsgi import WSGIServer
from locust.runners import (
    STATE_CLEANUP,
    STATE_INIT,
    STATE_MISSING,
    STATE_RUNNING,
    STATE_SPAWNING,
    STATE_STOPPED,
    STATE_STOPPING,
    MasterRunner,
    WorkerRunner,
)
from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector as _PromCollector
from prometheus_client.samples import Sample

from telemetry._buckets import hdr_buckets, locust_buckets
from telemetry._live import ignored_counters, lost_by_path, path_counters
from telemetry.hdr import Histogram
from telemetry.options import option
from telemetry.plugin import get_plugin

if TYPE_CHECKING:
    from locust.argument_parser import LocustArgumentParser
    from locust.env import Environment
    from locust.stats import StatsEntry

__all__ = [
    "DEFAULT_PORT",
    "MAX_NAMES",
    "OVERFLOW_NAME",
    "LoadCollector",
    "add_arguments",
    "get_exporter",
    "serve",
]

log = logging.getLogger(__name__)

DEFAULT_PORT = 9646
#: Distinct (request_type, name) pairs exported one by one; a scenario with more
#: names than this has an unbounded name somewhere (anti-pattern 3, STYLE.md).
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


def add_arguments(parser: LocustArgumentParser) -> None:
    """``--prometheus-port`` / ``--prometheus-host`` (``init_command_line_parser`` listener)."""
    # the parser itself, not a group: only LocustArgumentParser understands include_in_web_ui
    parser.add_argument(
        "--prometheus-port",
        type=int,
        default=DEFAULT_PORT,
        env_var="PIPESWARM_PROMETHEUS_PORT",
        include_in_web_ui=False,
        help=f"Port of the master's (or local process's) /metrics for Prometheus; "
        f"0 = off. Default {DEFAULT_PORT}",
    )
    parser.add_argument(
        "--prometheus-host",
        type=str,
        default="",
        env_var="PIPESWARM_PROMETHEUS_HOST",
        include_in_web_ui=False,
        help="Address the exporter binds to. Default: all interfaces (like --web-host)",
    )


# --- the collector -------------------------------------------------------------------------


class LoadCollector(_PromCollector):
    """Yields the ``locust_`` and ``pipeswarm_`` families of ``environment`` on each scrape."""

    def __init__(self, environment: Environment, *, max_names: int = MAX_NAMES) -> None:
        self.environment = environment
        self.max_names = max_names

    def collect(self) -> Iterator[Metric]:
        env = self.environment
        runner = env.runner
        plugin = get_plugin(env)
        run = plugin.run_id
        yield from self._locust(env, run)
        yield from self._run_info(env, run)
        yield from self._e2e(plugin, run)
        yield from self._generators(plugin, run)
        yield from self._loop_lag(plugin, run, runner)

    # --- locust_ ---------------------------------------------------------------------------
    def _entries(self) -> tuple[list[tuple[str, str, list[StatsEntry]]], int]:
        """``[(request_type, name, [entries]), ...]`` capped at ``max_names``; overflow count.

        Locust's ``entries`` dict keeps first-seen order, so the exported set is
        stable within a run and the overflow row only ever grows (a counter).
        """
        runner = self.environment.runner
        if runner is None:
            return [], 0
        rows: list[tuple[str, str, list[StatsEntry]]] = []
        overflow: dict[str, list[StatsEntry]] = {}
        dropped = 0
        for (name, method), entry in list(runner.stats.entries.items()):
            if len(rows) < self.max_names:
                rows.append((method, name, [entry]))
            else:
                dropped += 1
                overflow.setdefault(method, []).append(entry)
        rows.extend((method, OVERFLOW_NAME, entries) for method, entries in overflow.items())
        return rows, dropped

    def _locust(self, env: Environment, run: str) -> Iterator[Metric]:
        runner = env.runner
        rows, dropped = self._entries()

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
            hist.add_metric(
                [run, method], buckets, sum(e.total_response_time for e in entries) / 1000
            )
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

        yield _gauge(
            "pipeswarm_exporter_overflow_names",
            f"(request_type, name) pairs beyond the first {self.max_names}, exported added up "
            f'as name="{OVERFLOW_NAME}" (a sign of an unbounded request name).',
            run,
            dropped,
        )

        total = runner.stats.total if runner is not None else None
        yield _gauge(
            "locust_requests_per_second",
            "Locust's current requests per second, all requests (its ~10 s moving average).",
            run,
            float(total.current_rps) if total is not None else 0.0,
        )
        yield _gauge(
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

    # --- pipeswarm_ ---------------------------------------------------------------------------
    def _run_info(self, env: Environment, run: str) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            "pipeswarm_run_info",
            "Always 1: the current run id and how it runs (the dashboards' run variable).",
            labels=["run", "mode", "scenario"],
        )
        mode = "distributed" if isinstance(env.runner, MasterRunner) else "local"
        locustfile = str(option(env, "locustfile", "") or "")
        scenario = locustfile.rsplit("/", 1)[-1].removesuffix(".py")
        info.add_metric([run, mode, scenario], 1)
        yield info

    def _e2e(self, plugin: Any, run: str) -> Iterator[Metric]:
        collector = plugin.collector
        latency = HistogramMetricFamily(
            "pipeswarm_e2e_latency_seconds",
            "End-to-end latency by path and hop, exact over all workers (merged HDR histograms): "
            "hop total = intended send to receive, service = actual send to receive, "
            "mqtt/kafka/redis/push = pipeline legs, staleness/batch = snapshot mode.",
            labels=["run", "path", "hop"],
        )
        sched = HistogramMetricFamily(
            "pipeswarm_schedule_lag_seconds",
            "Publish time minus intended time of every publish (coordinated omission made "
            "visible: a generator that falls behind its timetable).",
            labels=["run"],
        )
        published = CounterMetricFamily(
            "pipeswarm_e2e_published",
            "Messages the device users published (all workers).",
            labels=["run"],
        )
        devices = GaugeMetricFamily(
            "pipeswarm_e2e_publishing_devices",
            "Devices that have published in this run (all workers).",
            labels=["run"],
        )
        counters = {
            name: CounterMetricFamily(
                f"pipeswarm_e2e_{name}",
                help_text,
                labels=["run", "path"],
            )
            for name, help_text in (
                (
                    "delivered",
                    "Distinct messages received per path, all subscriptions (first copies).",
                ),
                ("duplicated", "Copies of a message a subscription had already received."),
                (
                    "reordered",
                    "Messages that arrived below the highest seq seen, within the grace window.",
                ),
                (
                    "late",
                    "Messages that filled a gap older than the grace window (no longer lost).",
                ),
            )
        }
        ignored = CounterMetricFamily(
            "pipeswarm_e2e_ignored",
            "Received messages not measured: of another run id, or of devices outside a "
            "subscription's scope, or frames without a valid trace.",
            labels=["run", "subscriber", "reason"],
        )
        lost = GaugeMetricFamily(
            "pipeswarm_e2e_lost_messages",
            "Messages missing per path: during the run, gaps older than the grace window "
            "(a late arrival lowers it); after the test, the final loss of e2e.json.",
            labels=["run", "path"],
        )
        if collector is not None:
            for (path, hop), h in collector.histograms:
                buckets, total = hdr_buckets(h.hdr)
                latency.add_metric([run, path, hop], buckets, total)
            buckets, total = hdr_buckets(collector.schedule_lag.hdr)
            sched.add_metric([run], buckets, total)
            published.add_metric([run], collector.published_total())
            devices.add_metric(
                [run], sum(int(p.get("devices", 0)) for p in collector.published.values())
            )
            for path, counts in sorted(path_counters(collector).items()):
                for name, family in counters.items():
                    family.add_metric([run, path], counts[name])
            for (kind, reason), n in sorted(ignored_counters(collector).items()):
                ignored.add_metric([run, kind, reason], n)
            for path, n in sorted(lost_by_path(plugin).items()):
                lost.add_metric([run, path], n)
        yield latency
        yield sched
        yield published
        yield devices
        yield from counters.values()
        yield ignored
        yield lost

    def _generators(self, plugin: Any, run: str) -> Iterator[Metric]:
        cpu = GaugeMetricFamily(
            "pipeswarm_generator_cpu_ratio",
            "Process CPU of each load generator over its last report, 1.0 = one core busy "
            "(worker = Locust's worker index, or 'local'). Above 0.9 its timings are suspect.",
            labels=["run", "worker"],
        )
        for worker, percent in sorted(plugin.generator_cpu().items()):
            cpu.add_metric([run, worker], float(percent) / 100)
        yield cpu

    def _loop_lag(self, plugin: Any, run: str, runner: Any) -> Iterator[Metric]:
        family = HistogramMetricFamily(
            "pipeswarm_loop_lag_seconds",
            "gevent event-loop lag per process (a 100 ms timer's lateness): a stalled loop "
            "delays every timestamp that process takes.",
            labels=["run", "worker"],
        )
        sources: dict[str, Histogram] = {}
        collector = plugin.collector
        if collector is not None:
            for source, h in list(collector.loop_lag.items()):
                sources[_worker_label(runner, source)] = h
        if isinstance(runner, MasterRunner) and "master" not in sources:
            sources["master"] = plugin.probe.histogram  # the master never ships its own
        for worker, h in sorted(sources.items()):
            buckets, total = hdr_buckets(h.hdr)
            family.add_metric([run, worker], buckets, total)
        yield family


def _gauge(name: str, documentation: str, run: str, value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=["run"])
    family.add_metric([run], value)
    return family


def _worker_label(runner: Any, source: str) -> str:
    if source in ("local", "master") or not isinstance(runner, MasterRunner):
        return source
    return str(runner.get_worker_index(source))


# --- serving -------------------------------------------------------------------------------


def serve(registry: CollectorRegistry, port: int, host: str = "") -> WSGIServer:
    """Serve ``registry`` at ``http://host:port/metrics`` from a gevent WSGI server (started)."""
    server = WSGIServer((host, port), make_wsgi_app(registry), log=None, error_log=log)
    server.start()
    return server


class _Exporter:
    """The registry and server of one Environment (master or local)."""

    def __init__(self, environment: Environment, port: int, host: str) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.collector = LoadCollector(environment)
        self.registry.register(self.collector)
        self.server = serve(self.registry, port, host)
        self.port = self.server.server_port

    def stop(self) -> None:
        self.server.stop(timeout=1)


_exporters: weakref.WeakKeyDictionary[Environment, _Exporter] = weakref.WeakKeyDictionary()


def get_exporter(environment: Environment) -> _Exporter | None:
    """The running exporter of ``environment`` (None when off, on a worker, or before init)."""
    return _exporters.get(environment)


def _on_init(environment: Environment, **_kw: Any) -> None:
    if isinstance(environment.runner, WorkerRunner) or environment.parsed_options is None:
        return
    port = int(option(environment, "prometheus_port", DEFAULT_PORT))
    if port == 0 or environment in _exporters:
        return
    host = str(option(environment, "prometheus_host", ""))
    try:
        exporter = _Exporter(environment, port, host)
    except OSError as err:
        sys.stderr.write(
            f"pipeswarm: --prometheus-port {port} cannot be served on {host or 'all interfaces'} "
            f"({err.strerror}); choose a free port, or 0 to turn the exporter off.\n"
        )
        raise SystemExit(2) from None
    _exporters[environment] = exporter
    log.info("pipeswarm Prometheus exporter on http://%s:%d/metrics", host or "0.0.0.0", port)

    def on_quitting(**_kw: Any) -> None:
        exporter.stop()
        _exporters.pop(environment, None)

    environment.events.quitting.add_listener(on_quitting)


locust.events.init_command_line_parser.add_listener(add_arguments)
locust.events.init.add_listener(_on_init)
