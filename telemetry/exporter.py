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
  class, workers by state, runner state, current RPS (``telemetry._locust_metrics``).
- ``pipeswarm_*`` — ours: e2e latency histograms by path and hop (from the
  merged HDR histograms), published/delivered/duplicated/reordered/late
  counters, lost messages, schedule lag, command latency, generator CPU and
  event-loop lag per worker, run info, the ``--faults`` phase in effect.

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
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import locust
from gevent.pywsgi import WSGIServer
from locust.runners import MasterRunner, WorkerRunner
from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector as _PromCollector

from telemetry._buckets import hdr_buckets
from telemetry._live import ignored_counters, lost_by_path, path_counters
from telemetry._locust_metrics import MAX_NAMES, OVERFLOW_NAME, locust_families
from telemetry.exceptions import OptionError, exit_on_option_error
from telemetry.hdr import Histogram
from telemetry.options import Option, OptionGroup
from telemetry.plugin import get_plugin

if TYPE_CHECKING:
    from locust.env import Environment

    from telemetry.plugin import E2EPlugin

__all__ = [
    "DEFAULT_PORT",
    "MAX_NAMES",
    "OVERFLOW_NAME",
    "OPTIONS",
    "PROMETHEUS_HOST",
    "PROMETHEUS_PORT",
    "LoadCollector",
    "get_exporter",
    "serve",
]

log = logging.getLogger(__name__)

DEFAULT_PORT = 9646


PROMETHEUS_PORT = Option(
    "--prometheus-port",
    int,
    DEFAULT_PORT,
    "PIPESWARM_PROMETHEUS_PORT",
    "Port of the master's (or local process's) /metrics for Prometheus; 0 = off. "
    "Read once at start-up (the web UI shows it; changing it there has no effect)",
    check=lambda port: None if 0 <= port < 65536 else "must be 0 (off) to 65535",
)
PROMETHEUS_HOST = Option(
    "--prometheus-host",
    str,
    "",
    "PIPESWARM_PROMETHEUS_HOST",
    "Address the exporter binds to; read once at start-up",
    doc_default="all interfaces (like --web-host)",
)
OPTIONS = OptionGroup("pipeswarm Prometheus exporter", PROMETHEUS_PORT, PROMETHEUS_HOST)


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
        yield from locust_families(env, run, self.max_names)
        yield from self._run_info(env, run)
        yield from self._e2e(plugin, run)
        yield from self._generators(plugin, run)
        yield from self._loop_lag(plugin, run, runner)
        yield from self._faults(env, run)

    # --- pipeswarm_ ---------------------------------------------------------------------------
    def _run_info(self, env: Environment, run: str) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            "pipeswarm_run_info",
            "Always 1: the current run id and how it runs (the dashboards' run variable).",
            labels=["run", "mode", "scenario"],
        )
        mode = "distributed" if isinstance(env.runner, MasterRunner) else "local"
        locustfile = str(getattr(env.parsed_options, "locustfile", "") or "")
        scenario = locustfile.rsplit("/", 1)[-1].removesuffix(".py")
        info.add_metric([run, mode, scenario], 1)
        yield info

    def _e2e(self, plugin: E2EPlugin, run: str) -> Iterator[Metric]:
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

    def _generators(self, plugin: E2EPlugin, run: str) -> Iterator[Metric]:
        cpu = GaugeMetricFamily(
            "pipeswarm_generator_cpu_ratio",
            "Process CPU of each load generator over its last report, 1.0 = one core busy "
            "(worker = Locust's worker index, or 'local'). Above 0.9 its timings are suspect.",
            labels=["run", "worker"],
        )
        for worker, percent in sorted(plugin.generator_cpu().items()):
            cpu.add_metric([run, worker], float(percent) / 100)
        yield cpu

    def _loop_lag(self, plugin: E2EPlugin, run: str, runner: Any) -> Iterator[Metric]:
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

    def _faults(self, env: Environment, run: str) -> Iterator[Metric]:
        from telemetry.faults import get_schedule  # faults imports this package's plugin

        family = GaugeMetricFamily(
            "pipeswarm_fault_active",
            "1 while a --faults phase is in effect (from its action until the part is back), "
            "0 for every other phase of the schedule: Grafana draws the 1s as annotations.",
            labels=["run", "action", "component"],
        )
        schedule = get_schedule(env)
        if schedule is not None:
            state: dict[tuple[str, str], int] = {}
            for phase in schedule.phases:
                key = (phase.fault.action, phase.fault.component)
                state[key] = max(state.get(key, 0), int(phase.active))
            for (action, component), value in sorted(state.items()):
                family.add_metric([run, action, component], value)
        yield family


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
    with exit_on_option_error():
        port = PROMETHEUS_PORT.get(environment)
        if port == 0 or environment in _exporters:
            return
        host = PROMETHEUS_HOST.get(environment)
        try:
            exporter = _Exporter(environment, port, host)
        except OSError as err:
            raise OptionError(
                f"--prometheus-port {port} cannot be served on {host or 'all interfaces'} "
                f"({err.strerror}); choose a free port, or 0 to turn the exporter off."
            ) from None
    _exporters[environment] = exporter
    log.info("pipeswarm Prometheus exporter on http://%s:%d/metrics", host or "0.0.0.0", port)

    def on_quitting(**_kw: Any) -> None:
        exporter.stop()
        _exporters.pop(environment, None)

    environment.events.quitting.add_listener(on_quitting)


OPTIONS.register()
locust.events.init.add_listener(_on_init)
