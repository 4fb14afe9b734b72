"""The Locust wiring: options, run id, reports to the master, drain, results files.

Importing ``telemetry`` registers the command-line options and an ``init``
listener on Locust's global events, so any locustfile that imports ``users``
(which imports ``telemetry``) gets it. Tests and embedders call
:func:`install` on their own ``Environment`` instead.

Lifecycle (``Runner`` types from ``locust.runners``):

- ``test_start`` — master/local: decide the run id (``--run-id`` or a fresh
  timestamp id) and write it into ``parsed_options.run_id``; Locust's spawn
  message carries custom options to the workers, whose ``test_start`` fires after
  it arrived, so every process tags and filters with the same id. Each process
  starts a fresh :class:`~telemetry.ledger.Ledger` and its loop-lag probe.
- ``report_to_master`` / ``worker_report`` — workers add ``data["pipeswarm"]``
  (histogram and window deltas, cumulative counters); the master merges it into
  its :class:`~telemetry.collector.Collector`.
- ``test_stopping`` — master: send ``pipeswarm_drain`` to every worker, which
  stops its publishers (``ledger.draining``), keeps its subscribers reading for
  ``--e2e-drain`` seconds and answers ``pipeswarm_final`` with its full state
  (the handler runs before Locust's own ``stop`` message is handled, so users
  are still alive while draining). Local: the same, in process.
- ``test_stop`` — master/local: wait for the finals (bounded), compute loss and
  write ``run.json``, ``e2e.json``, ``timeseries.csv`` (docs/results.md).

Deliveries are measurements, not requests: they stay out of Locust's request
statistics (RPS, Aggregated, ``--csv``, ``--html``) unless ``--e2e-in-stats true``
makes the ledger fire each one as a request of type :data:`E2E_REQUEST_TYPE`.
"""

from __future__ import annotations

import logging
import secrets
import socket
import time
import weakref
from typing import TYPE_CHECKING, Any

import gevent
import locust
import msgpack
import psutil
from gevent.lock import Semaphore
from locust.runners import MasterRunner, WorkerRunner

from telemetry import clock, results, run_info, summary
from telemetry._gc import Freezer
from telemetry._locust_fixes import cache_default_args, write_final_csv
from telemetry.collector import Collector
from telemetry.exceptions import OptionError
from telemetry.ledger import REPORT_SLICE, Ledger
from telemetry.looplag import LoopLagProbe, yield_to_loop
from telemetry.options import (
    E2E_DRAIN,
    E2E_GRACE,
    E2E_HOP_EVENTS,
    E2E_IN_STATS,
    RESULTS_DIR,
    RUN_ID,
    TELEMETRY,
)
from telemetry.timeseries import Sample, Timeseries

if TYPE_CHECKING:
    from locust.env import Environment
    from locust.rpc import Message

__all__ = [
    "E2E_REQUEST_TYPE",
    "E2EPlugin",
    "install",
    "get_plugin",
    "get_ledger",
    "new_run_id",
]

log = logging.getLogger(__name__)

E2E_REQUEST_TYPE = "E2E"
REPORT_KEY = "pipeswarm"
#: a worker's periodic report carries its subscriptions' summaries pre-packed under this key
PACKED_SUBS = "subs_packed"
#: every this many periodic reports carry every subscription's summary (3 s apart on a
#: worker: the master's per-subscription view of a worker that dies is at most 30 s old)
EVERY_SUB_REPORTS = 10
MSG_DRAIN = "pipeswarm_drain"
MSG_FINAL = "pipeswarm_final"
#: Workers report every 3 s (locust.runners.WORKER_REPORT_INTERVAL): a second is
#: closed once no report can still add to it.
MASTER_CLOSE_DELAY_S = 5.0
LOCAL_CLOSE_DELAY_S = 1.0
#: Extra time the master waits for the workers' final state beyond the drain.
FINAL_TIMEOUT_S = 15.0


def _pack_subs(subs: dict[str, Any]) -> bytes:
    """The subscriptions' summaries as one msgpack map, packed a slice at a time.

    Locust packs a worker's report in one go: 5,000 summaries were 6 ms of it on
    a quiet core, 15–20 ms on a busy one, every 3 s, with every greenlet of the
    worker waiting. Packed here, with a yield every :data:`REPORT_SLICE`, what
    Locust packs is one ``bytes``.
    """
    packer = msgpack.Packer()
    parts = [packer.pack_map_header(len(subs))]
    for n, (sid, entry) in enumerate(subs.items(), 1):
        parts.append(packer.pack(sid))
        parts.append(packer.pack(entry))
        if n % REPORT_SLICE == 0:
            yield_to_loop()
    return b"".join(parts)


def new_run_id() -> str:
    """``YYYYmmdd-HHMMSS-xxxx`` (UTC time + 4 hex digits): sortable and unique."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(2)


class E2EPlugin:
    """Per-``Environment`` telemetry state; one is made by :func:`install`."""

    def __init__(self, environment: Environment) -> None:
        self.environment = environment
        self.run_id = ""
        self._generated_ids: set[str] = set()
        self.ledger = Ledger("", source=self._source())
        self.probe = LoopLagProbe()
        self.freezer = Freezer()
        self.collector: Collector | None = None
        self.timeseries: Timeseries | None = None
        self.results_path: Any = None
        #: ``e2e.json`` of the last finished run (master/local), for the exporter and web UI
        self.final_e2e: dict[str, Any] | None = None
        self.started_s = 0.0
        self._sampler: gevent.Greenlet | None = None
        self._expected_finals: list[str] = []
        self._finals_received: set[str] = set()
        self._worker_hosts: dict[str, str] = {}
        self._worker_cpu: dict[str, float] = {}
        self._worker_users: dict[str, dict[str, int]] = {}
        #: per worker: its clock offset to the master and its address (``telemetry.clock``)
        self._worker_clocks: dict[str, dict[str, Any]] = {}
        self._worker_addresses: dict[str, str] = {}
        self._address = ""
        self._process = psutil.Process()
        self._process.cpu_percent()  # the first call only starts the measurement
        self._final_sent = False
        self._stopping = False
        self._payload_lock = Semaphore()
        self._reports = 0
        events = environment.events
        events.test_start.add_listener(self.on_test_start)
        events.test_stopping.add_listener(self.on_test_stopping)
        events.test_stop.add_listener(self.on_test_stop)
        events.report_to_master.add_listener(self.on_report_to_master)
        events.worker_report.add_listener(self.on_worker_report)
        self.register_messages()

    # --- roles ---------------------------------------------------------------
    @property
    def is_master(self) -> bool:
        return isinstance(self.environment.runner, MasterRunner)

    @property
    def is_worker(self) -> bool:
        return isinstance(self.environment.runner, WorkerRunner)

    def _source(self) -> str:
        runner = self.environment.runner
        return runner.client_id if isinstance(runner, WorkerRunner) else "local"

    def register_messages(self) -> None:
        """Register the drain/final messages (needs ``environment.runner``)."""
        runner = self.environment.runner
        if isinstance(runner, WorkerRunner) and MSG_DRAIN not in runner.custom_messages:
            runner.register_message(MSG_DRAIN, self._on_drain_message)
        elif isinstance(runner, MasterRunner) and MSG_FINAL not in runner.custom_messages:
            runner.register_message(MSG_FINAL, self._on_final_message)
        if clock.install(self.environment) is not None:
            self._address = clock.local_address(self.environment)

    # --- sampling -------------------------------------------------------------
    def _fire(self, name: str, response_time_ms: float, length: int) -> None:
        self.environment.events.request.fire(
            request_type=E2E_REQUEST_TYPE,
            name=name,
            response_time=response_time_ms,
            response_length=length,
            exception=None,
            context={},
        )

    # --- test start ---------------------------------------------------------------
    def _decide_run_id(self) -> str:
        requested = RUN_ID.get(self.environment)
        if requested and requested not in self._generated_ids:
            return requested
        run_id = new_run_id()
        self._generated_ids.add(run_id)
        if self.environment.parsed_options is not None:
            setattr(self.environment.parsed_options, RUN_ID.dest, run_id)
        return run_id

    def on_test_start(self, environment: Environment, **_kw: Any) -> None:
        if self.is_worker:
            # the master's id came with the spawn message (custom options are forwarded)
            self.run_id = RUN_ID.get(environment) or new_run_id()
        else:
            self.run_id = self._decide_run_id()
        self.start_run(self.run_id)

    def start_run(self, run_id: str) -> None:
        """Fresh ledger (and on master/local a fresh collector) for ``run_id``."""
        env = self.environment
        grace = E2E_GRACE.get(env)
        drain = E2E_DRAIN.get(env)
        self.run_id = run_id
        self.started_s = time.time()
        self._final_sent = False
        self._reports = 0
        self._stopping = False
        self.final_e2e = None
        hop_events = E2E_HOP_EVENTS.get(env) == "true"
        # Locust's request statistics count requests the users made; deliveries are
        # measurements and stay in the ledger unless --e2e-in-stats asks for the old entries
        fire = self._fire if E2E_IN_STATS.get(env) == "true" else None
        self.ledger = Ledger(
            run_id, grace_s=grace, fire=fire, source=self._source(), hop_events=hop_events
        )
        self.probe.stop()
        self.probe = LoopLagProbe()
        self.probe.start()
        self.freezer.start()
        if self.is_worker:
            return
        self.collector = Collector(run_id, grace_s=grace, drain_s=drain)
        self.timeseries = Timeseries(
            self.collector,
            self._sample,
            started_s=self.started_s,
            close_delay_s=MASTER_CLOSE_DELAY_S if self.is_master else LOCAL_CLOSE_DELAY_S,
        )
        self.results_path = results.results_dir(RESULTS_DIR.get(env), run_id)
        if self._sampler is not None:
            self._sampler.kill(block=False)
        self._sampler = gevent.spawn(self._sample_loop)
        log.info("pipeswarm run %s: results will be written to %s", run_id, self.results_path)

    # --- reports -------------------------------------------------------------
    def _payload(self, final: bool) -> dict[str, Any]:
        # one payload at a time: a periodic one yields while it summarises the
        # subscriptions, and the final must not take the histograms from under it
        with self._payload_lock:
            return self._build_payload(final)

    def _build_payload(self, final: bool) -> dict[str, Any]:
        if final:
            payload = self.ledger.final()
        else:
            # every subscription's summary only every EVERY_SUB_REPORTS-th time (and each
            # new one at once): the live figures need only the sums (Ledger.report)
            every_sub = self._reports % EVERY_SUB_REPORTS == 0
            self._reports += 1
            payload = self.ledger.report(pause=yield_to_loop, every_sub=every_sub)
        payload["looplag"] = self.probe.take_wire()
        payload["host"] = socket.gethostname()
        if self.is_worker:
            payload["address"] = self._address
            payload["clock"] = clock.state.to_wire()
        # CPU since the previous report: Locust's own figure is refreshed only every 10 s
        payload["cpu_percent"] = self._process.cpu_percent()
        if self.is_worker and not final:
            payload[PACKED_SUBS] = _pack_subs(payload.pop("subs"))
        return payload

    def on_report_to_master(self, client_id: str, data: dict[str, Any], **_kw: Any) -> None:
        if self.run_id and not self._final_sent:
            data[REPORT_KEY] = self._payload(final=False)

    def on_worker_report(self, client_id: str, data: dict[str, Any], **_kw: Any) -> None:
        payload = data.get(REPORT_KEY)
        if payload is not None and self.collector is not None:
            self._merge(client_id, payload)

    def _merge(self, source: str, payload: dict[str, Any]) -> None:
        assert self.collector is not None
        packed = payload.pop(PACKED_SUBS, None)
        if packed is not None:
            payload["subs"] = msgpack.unpackb(packed)
        if "host" in payload:
            self._worker_hosts[source] = payload["host"]
        if "cpu_percent" in payload:
            self._worker_cpu[source] = float(payload["cpu_percent"])
        if "clock" in payload:
            self._worker_clocks[source] = payload["clock"]
        if payload.get("address"):
            self._worker_addresses[source] = payload["address"]
        self.collector.merge(source, payload)

    def _local_merge(self, final: bool) -> None:
        """A local run is its own worker: merge its own payload directly."""
        if self.collector is not None and not self.is_master:
            self._merge("local", self._payload(final=final))

    # --- per-second sampler (master/local) ----------------------------------------
    def _sample(self) -> Sample:
        runner = self.environment.runner
        sample = Sample()
        if self.collector is not None:
            sample.lost = self.collector.lost_so_far()
        if isinstance(runner, MasterRunner):
            sample.users = runner.user_count
            sample.workers = len(runner.clients)
        elif runner is not None:
            sample.users = runner.user_count
            sample.workers = 1
        sample.cpu = self.generator_cpu()
        return sample

    def generator_cpu(self) -> dict[str, float]:
        """Process CPU (percent of one core) per worker index, or ``{"local": …}``."""
        runner = self.environment.runner
        if isinstance(runner, MasterRunner):
            return {
                str(runner.get_worker_index(c.id)): self._worker_cpu.get(c.id, float(c.cpu_usage))
                for c in list(runner.clients.values())
            }
        if runner is not None:
            return {"local": self._worker_cpu.get("local", 0.0)}
        return {}

    def _sample_loop(self) -> None:
        while True:
            gevent.sleep(1.0 - (time.time() % 1.0))
            try:
                if not self._stopping:
                    self._local_merge(final=False)
                if self.timeseries is not None:
                    self.timeseries.tick(time.time())
            except Exception:  # a sampler bug must not kill the run; log once per tick
                log.exception("pipeswarm timeseries sampler failed")

    # --- drain and stop ----------------------------------------------------------
    def on_test_stopping(self, environment: Environment, **_kw: Any) -> None:
        if self._stopping or not self.run_id:
            return
        self._stopping = True
        runner = environment.runner
        if isinstance(runner, MasterRunner):
            self._expected_finals = [c.id for c in runner.clients.values()]
            self._finals_received = set()
            # worker reports after the stop say 0 users: keep what ran
            self._worker_users = {c.id: dict(c.user_classes_count) for c in runner.clients.values()}
            data = {"run": self.run_id}
            for client_id in self._expected_finals:
                runner.send_message(MSG_DRAIN, data, client_id)
        elif not self.is_worker:
            self.drain()

    def drain(self) -> None:
        """Stop publishers, let subscribers read for ``--e2e-drain`` seconds."""
        self.ledger.draining = True
        gevent.sleep(E2E_DRAIN.get(self.environment))

    def _on_drain_message(self, environment: Environment, msg: Message, **_kw: Any) -> None:
        runner = environment.runner
        if not self.run_id or self._final_sent or not isinstance(runner, WorkerRunner):
            # a worker that ran no users in this test still answers, so the master need not wait
            if isinstance(runner, WorkerRunner):
                runner.send_message(MSG_FINAL, {"idle": True})
            return
        if msg.data and msg.data.get("run") not in (None, self.run_id):
            log.warning("drain request for run %s, but this worker runs %s", msg.data, self.run_id)
        self.drain()
        self._send_final()

    def _send_final(self) -> None:
        runner = self.environment.runner
        if self._final_sent or not isinstance(runner, WorkerRunner):
            return
        self._final_sent = True
        runner.send_message(MSG_FINAL, self._payload(final=True))

    def _on_final_message(self, environment: Environment, msg: Message, **_kw: Any) -> None:
        self._finals_received.add(msg.node_id)
        if self.collector is not None and isinstance(msg.data, dict) and not msg.data.get("idle"):
            self._merge(msg.node_id, msg.data)

    def on_test_stop(self, environment: Environment, **_kw: Any) -> None:
        if not self.run_id:
            return
        if self.is_worker:
            # normally sent after the drain; if the master never asked, send it now
            self._send_final()
            self.probe.stop()
            self.freezer.stop()
            return
        if self.collector is None:
            return
        if self.is_master:
            self._wait_for_finals()
            self.collector.loop_lag.setdefault("master", self.probe.histogram)
        else:
            self._local_merge(final=True)
        self.probe.stop()
        self.freezer.stop()
        if self._sampler is not None:
            self._sampler.kill(block=False)
            self._sampler = None
        self.write_results()

    def _wait_for_finals(self) -> None:
        assert self.collector is not None
        runner = self.environment.runner
        drain = E2E_DRAIN.get(self.environment)
        deadline = time.monotonic() + drain + FINAL_TIMEOUT_S
        while time.monotonic() < deadline:
            alive = set(runner.clients.keys()) if isinstance(runner, MasterRunner) else set()
            pending = [
                w for w in self._expected_finals if w not in self._finals_received and w in alive
            ]
            if not pending:
                break
            gevent.sleep(0.05)
        missing = [w for w in self._expected_finals if w not in self._finals_received]
        if missing:
            log.warning(
                "no final e2e state from worker(s) %s: loss figures are incomplete", missing
            )

    # --- results -------------------------------------------------------------------
    def write_results(self) -> None:
        """Write ``run.json``, ``e2e.json``, ``timeseries.csv``, ``summary.csv`` into the results dir."""
        assert self.collector is not None and self.timeseries is not None
        ended = time.time()
        self.timeseries.tick(ended)
        self.timeseries.flush()
        e2e = self.final_e2e = self.collector.e2e()
        out = self.results_path
        results.write_json(out / "e2e.json", e2e)
        results.write_timeseries(out / "timeseries.csv", self.timeseries.rows)
        results.write_json(out / "run.json", self.run_info(ended, e2e))
        rows = summary.summary_rows(e2e, self.environment.stats, ended - self.started_s)
        summary.write_summary(out / "summary.csv", rows)
        try:
            write_final_csv(self.environment)  # Locust's --csv is up to a second behind
        except OSError as err:
            log.warning("could not write Locust's --csv files at the end: %s", err)
        log.info("%s", summary.format_summary(rows))
        log.info("pipeswarm results written to %s", out)

    def run_info(self, ended_s: float, e2e: dict[str, Any]) -> dict[str, Any]:
        """``run.json`` of the run that just ended (``telemetry.run_info``)."""
        return run_info.build(
            self.environment,
            run_id=self.run_id,
            started_s=self.started_s,
            ended_s=ended_s,
            e2e=e2e,
            worker_hosts=self._worker_hosts,
            worker_users=self._worker_users,
            worker_clocks=self._worker_clocks,
            worker_addresses=self._worker_addresses,
            finals=self._finals_received,
            peak_users=self.timeseries.peak_users if self.timeseries else 0,
        )


_plugins: weakref.WeakKeyDictionary[Environment, E2EPlugin] = weakref.WeakKeyDictionary()


def install(environment: Environment) -> E2EPlugin:
    """Attach telemetry to ``environment`` (idempotent) and return its plugin."""
    plugin = _plugins.get(environment)
    if plugin is None:
        cache_default_args()
        plugin = _plugins[environment] = E2EPlugin(environment)
    else:
        plugin.register_messages()
    return plugin


def get_plugin(environment: Environment) -> E2EPlugin:
    return install(environment)


def get_ledger(environment: Environment) -> Ledger:
    """The current run's :class:`~telemetry.ledger.Ledger` of this process.

    Users call it in ``on_start`` (after ``test_start``, so it carries the run id)::

        self.ledger = telemetry.get_ledger(self.environment)
    """
    return install(environment).ledger


def _on_init(environment: Environment, **_kw: Any) -> None:
    install(environment)


def _check_results_dir(environment: Environment) -> None:
    """An unwritable ``--results-dir`` is one sentence and exit 2 before the run, not a
    traceback that loses the results after it (master/local; workers write nothing)."""
    if isinstance(environment.runner, WorkerRunner):
        return
    problem = results.check_writable(RESULTS_DIR.get(environment))
    if problem:
        raise OptionError(problem)


TELEMETRY.validators.append(_check_results_dir)
TELEMETRY.register()
locust.events.init.add_listener(_on_init)
