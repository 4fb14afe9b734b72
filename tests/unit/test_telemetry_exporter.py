"""The Prometheus exporter: families and values for a synthetic stats/ledger state."""

from __future__ import annotations

import argparse
import random
import re
import urllib.request
from pathlib import Path

import pytest
from locust import User, constant, task
from locust.argument_parser import get_parser
from locust.env import Environment
from locust.event import Events
from locust.runners import MasterRunner, WorkerNode, WorkerNodes
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

import telemetry
from pipeline._procs import free_port
from telemetry import envelope, exporter
from telemetry._buckets import E2E_BUCKETS_S, hdr_buckets, locust_buckets
from telemetry._locust_metrics import STATES
from telemetry.exporter import OVERFLOW_NAME, LoadCollector
from telemetry.hdr import Histogram
from tests.helpers import taken_port

ROOT = Path(__file__).resolve().parents[2]
MS = 1_000_000  # ns


class Device(User):
    wait_time = constant(1)

    @task
    def idle(self) -> None:
        pass


class Watcher(Device):
    pass


def _options(tmp_path, **over) -> argparse.Namespace:
    values = {
        "results_dir": str(tmp_path / "{run_id}"),
        "run_id": "run-1",
        "e2e_grace": 1.0,
        "e2e_drain": 0.0,
        "locustfile": "locustfiles/pipeline.py",
        "prometheus_port": 0,
        "prometheus_host": "127.0.0.1",
    }
    values.update(over)
    return argparse.Namespace(**values)


@pytest.fixture
def env(tmp_path):
    environment = Environment(
        events=Events(), parsed_options=_options(tmp_path), user_classes=[Device, Watcher]
    )
    runner = environment.create_local_runner()
    telemetry.install(environment)
    environment.events.test_start.fire(environment=environment)
    yield environment
    runner.quit()


def _request(env, rtype, name, ms, exc=None):
    env.events.request.fire(
        request_type=rtype,
        name=name,
        response_time=ms,
        response_length=0,
        exception=exc,
        context={},
    )


def _traffic(env, now_ns):
    """Device d1 publishes seqs 1..10 (intended 1 ms before sending); seq 5 never arrives.

    Every received message took 5 ms end to end: 1 ms schedule lag, then 1 ms
    per leg (publish→bridge, bridge→consumer, consumer→gateway) and 1 ms push.
    """
    plugin = telemetry.get_plugin(env)
    ledger = plugin.ledger
    sub = ledger.subscriber("stomp")
    for seq in range(1, 11):
        t0 = now_ns + seq * 100 * MS
        tp = t0 + 1 * MS
        ledger.published("d1", seq, t0, tp)
        if seq == 5:
            continue
        hops = {"bridge": tp + MS, "consumer": tp + 2 * MS, "gateway": tp + 3 * MS}
        body = envelope.build("d1", 1.0, 2.0, run=ledger.run_id, seq=seq, t0=t0, tp=tp)
        doc = envelope.read(body)
        assert doc is not None
        doc.hops.update(hops)
        sub.received(doc, t0 + 5 * MS)
    return plugin


def _scrape(env, **kw) -> dict[str, object]:
    registry = CollectorRegistry()
    registry.register(LoadCollector(env, **kw))
    return {m.name: m for m in registry.collect()}


def _value(family, sample_name, **labels):
    hits = [
        s.value
        for s in family.samples
        if s.name == sample_name and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    assert len(hits) == 1, (sample_name, labels, family.samples)
    return hits[0]


# --- locust_ ---------------------------------------------------------------------------------


def test_requests_failures_and_response_time_families(env):
    for ms in (3, 40, 400):
        _request(env, "MQTT", "publish:1:sensors/+/coordinates", ms)
    _request(env, "MQTT", "publish:0:sensors/+/coordinates", None)  # QoS 0: no response time
    _request(env, "REST", "/api/commands/{id}", 120, exc=RuntimeError("503"))
    fams = _scrape(env)

    req = fams["locust_requests"]
    assert req.type == "counter"
    pub = {"run": "run-1", "request_type": "MQTT", "name": "publish:1:sensors/+/coordinates"}
    assert _value(req, "locust_requests_total", **pub) == 3
    assert _value(req, "locust_requests_total", name="publish:0:sensors/+/coordinates") == 1
    assert _value(fams["locust_failures"], "locust_failures_total", request_type="REST") == 1
    assert _value(fams["locust_failures"], "locust_failures_total", **pub) == 0

    hist = fams["locust_response_time_seconds"]
    assert hist.type == "histogram"
    bucket = "locust_response_time_seconds_bucket"
    assert _value(hist, bucket, request_type="MQTT", le="0.001") == 0
    assert _value(hist, bucket, request_type="MQTT", le="0.005") == 1
    assert _value(hist, bucket, request_type="MQTT", le="0.05") == 2
    assert _value(hist, bucket, request_type="MQTT", le="0.5") == 3
    assert _value(hist, bucket, request_type="MQTT", le="+Inf") == 3
    assert _value(hist, "locust_response_time_seconds_count", request_type="MQTT") == 3
    assert _value(hist, "locust_response_time_seconds_sum", request_type="MQTT") == pytest.approx(
        0.443
    )
    assert _value(hist, "locust_response_time_seconds_count", request_type="REST") == 1

    summary = fams["locust_request_response_time_seconds"]
    assert summary.type == "summary"
    name = "locust_request_response_time_seconds"
    assert _value(summary, name, quantile="0.5", **pub) == pytest.approx(0.04)
    assert _value(summary, name, quantile="0.99", **pub) == pytest.approx(0.4)
    assert _value(summary, name + "_count", **pub) == 3
    # the QoS 0 row: counted in requests, no timed sample
    assert _value(summary, name + "_count", name="publish:0:sensors/+/coordinates") == 0


def test_users_workers_and_state_in_a_local_run(env):
    fams = _scrape(env)
    users = fams["locust_users"]
    assert {s.labels["user_class"]: s.value for s in users.samples} == {"Device": 0, "Watcher": 0}
    workers = fams["locust_workers"]
    assert {s.labels["state"] for s in workers.samples} == set(STATES)
    assert sum(s.value for s in workers.samples) == 0
    state = fams["locust_runner_state"]
    assert [s.labels["state"] for s in state.samples if s.value == 1] == ["ready"]
    info = fams["pipeswarm_run_info"]
    assert info.samples[0].labels == {"run": "run-1", "mode": "local", "scenario": "pipeline"}
    assert fams["locust_requests_per_second"].samples[0].value == 0


def test_names_are_capped_and_the_overflow_is_counted(env):
    for i in range(5):
        _request(env, "HTTP", f"/n{i}", 10)
    _request(env, "HTTP", "/n4", 20)
    fams = _scrape(env, max_names=3)
    req = fams["locust_requests"]
    names = sorted(s.labels["name"] for s in req.samples)
    assert names == sorted(["/n0", "/n1", "/n2", OVERFLOW_NAME])
    assert _value(req, "locust_requests_total", name=OVERFLOW_NAME) == 3  # /n3 once, /n4 twice
    assert fams["pipeswarm_exporter_overflow_names"].samples[0].value == 2
    # the histogram per request type still holds every request
    hist = fams["locust_response_time_seconds"]
    assert _value(hist, "locust_response_time_seconds_count", request_type="HTTP") == 6


def test_command_latency_comes_from_command_entries(env):
    _request(env, "MQTT", "command:orin/+/command", 12)
    _request(env, "MQTT", "command:orin/+/command", 2)
    _request(env, "MQTT", "publish:1:sensors/+/coordinates", 900)
    fam = _scrape(env)["pipeswarm_command_latency_seconds"]
    assert _value(fam, "pipeswarm_command_latency_seconds_count") == 2
    assert _value(fam, "pipeswarm_command_latency_seconds_bucket", le="0.0025") == 1
    assert _value(fam, "pipeswarm_command_latency_seconds_bucket", le="0.025") == 2


# --- pipeswarm_ e2e -----------------------------------------------------------------------------


def test_e2e_families_from_the_merged_ledger(env):
    import time

    now = time.time_ns()
    plugin = _traffic(env, now)
    # a report taken well after the grace window: the missing seq 5 counts as lost so far
    plugin.collector.merge("local", plugin.ledger.report(now_ns=now + 30_000 * MS))
    fams = _scrape(env)

    lat = fams["pipeswarm_e2e_latency_seconds"]
    assert lat.type == "histogram"
    hops = {s.labels["hop"] for s in lat.samples}
    assert hops == {"total", "service", "mqtt", "kafka", "redis", "push"}
    total = {"path": "mqtt→stomp", "hop": "total"}
    bucket = "pipeswarm_e2e_latency_seconds_bucket"
    assert _value(lat, "pipeswarm_e2e_latency_seconds_count", **total) == 9
    assert _value(lat, bucket, le="0.0025", **total) == 0
    assert _value(lat, bucket, le="0.005", **total) == 9  # exactly 5 ms
    assert _value(lat, "pipeswarm_e2e_latency_seconds_sum", **total) == pytest.approx(
        9 * 0.005, rel=1e-3
    )
    assert _value(lat, bucket, le="0.001", path="mqtt→stomp", hop="kafka") == 9
    assert _value(lat, bucket, le="0.0005", path="mqtt→stomp", hop="kafka") == 0

    sched = fams["pipeswarm_schedule_lag_seconds"]
    assert _value(sched, "pipeswarm_schedule_lag_seconds_count") == 10
    assert _value(sched, "pipeswarm_schedule_lag_seconds_bucket", le="0.001") == 10

    assert fams["pipeswarm_e2e_published"].samples[0].value == 10
    assert fams["pipeswarm_e2e_publishing_devices"].samples[0].value == 1
    path = {"path": "mqtt→stomp"}
    assert _value(fams["pipeswarm_e2e_delivered"], "pipeswarm_e2e_delivered_total", **path) == 9
    assert _value(fams["pipeswarm_e2e_duplicated"], "pipeswarm_e2e_duplicated_total", **path) == 0
    assert _value(fams["pipeswarm_e2e_reordered"], "pipeswarm_e2e_reordered_total", **path) == 0
    assert _value(fams["pipeswarm_e2e_lost_messages"], "pipeswarm_e2e_lost_messages", **path) == 1
    ignored = fams["pipeswarm_e2e_ignored"]
    assert {(s.labels["subscriber"], s.labels["reason"]) for s in ignored.samples} == {
        ("stomp", "foreign_run"),
        ("stomp", "out_of_scope"),
        ("stomp", "untraced"),
    }


def test_lost_is_the_final_figure_once_the_results_are_written(env):
    import time

    plugin = _traffic(env, time.time_ns())
    plugin.collector.merge("local", plugin.ledger.report())
    assert _value(_scrape(env)["pipeswarm_e2e_lost_messages"], "pipeswarm_e2e_lost_messages") == 0
    plugin.final_e2e = {"run_id": "run-1", "paths": {"mqtt→stomp": {"totals": {"lost": 7}}}}
    assert _value(_scrape(env)["pipeswarm_e2e_lost_messages"], "pipeswarm_e2e_lost_messages") == 7
    plugin.final_e2e = {"run_id": "an-older-run", "paths": {"mqtt→stomp": {"totals": {"lost": 7}}}}
    assert _value(_scrape(env)["pipeswarm_e2e_lost_messages"], "pipeswarm_e2e_lost_messages") == 0


def test_families_exist_before_the_first_test(tmp_path):
    environment = Environment(events=Events(), parsed_options=_options(tmp_path, run_id=""))
    runner = environment.create_local_runner()
    try:
        fams = _scrape(environment)
        assert "pipeswarm_e2e_latency_seconds" in fams
        assert fams["pipeswarm_e2e_latency_seconds"].samples == []
        assert fams["pipeswarm_run_info"].samples[0].labels["run"] == ""
    finally:
        runner.quit()


# --- master ------------------------------------------------------------------------------------


class FakeMaster(MasterRunner):
    """A MasterRunner without sockets: its workers are plain WorkerNodes."""

    def __init__(self, environment: Environment, nodes) -> None:  # noqa: D107
        self.environment = environment
        self.greenlet = None
        self.custom_messages = {}
        self.worker_indexes = {}
        self.worker_index_max = 0
        self.clients = WorkerNodes()
        self.state = "running"
        for wid, state, cpu, users in nodes:
            node = WorkerNode(wid)
            node.state = state
            node.cpu_usage = cpu
            node.user_classes_count = users
            self.clients[wid] = node
            self.get_worker_index(wid)


def _master_env(tmp_path):
    environment = Environment(
        events=Events(), parsed_options=_options(tmp_path), user_classes=[Device, Watcher]
    )
    environment.runner = FakeMaster(
        environment,
        [
            ("w-a", "running", 42, {"Device": 3}),
            ("w-b", "running", 95, {"Device": 2, "Watcher": 1}),
            ("w-c", "missing", 0, {}),
        ],
    )
    return environment


def test_master_reports_workers_users_cpu_and_loop_lag(tmp_path):
    environment = _master_env(tmp_path)
    plugin = telemetry.install(environment)
    plugin.start_run("run-1")
    try:
        lag = Histogram()
        lag.record_us(20_000)
        plugin.collector.merge("w-b", {"run": "run-1", "looplag": lag.to_wire()})
        fams = _scrape(environment)
        workers = {s.labels["state"]: s.value for s in fams["locust_workers"].samples}
        assert workers["running"] == 2 and workers["missing"] == 1 and workers["ready"] == 0
        users = {s.labels["user_class"]: s.value for s in fams["locust_users"].samples}
        assert users == {"Device": 5, "Watcher": 1}
        cpu = {s.labels["worker"]: s.value for s in fams["pipeswarm_generator_cpu_ratio"].samples}
        assert cpu == {"0": 0.42, "1": 0.95, "2": 0.0}
        loop = fams["pipeswarm_loop_lag_seconds"]
        assert {s.labels["worker"] for s in loop.samples} == {"1", "master"}
        assert _value(loop, "pipeswarm_loop_lag_seconds_bucket", worker="1", le="0.025") == 1
        assert _value(loop, "pipeswarm_loop_lag_seconds_bucket", worker="1", le="0.01") == 0
        assert fams["pipeswarm_run_info"].samples[0].labels["mode"] == "distributed"
    finally:
        plugin.probe.stop()
        if plugin._sampler is not None:
            plugin._sampler.kill(block=False)


# --- buckets ------------------------------------------------------------------------------------


def test_hdr_buckets_match_a_brute_force_count():
    rng = random.Random(7)
    values = [int(rng.lognormvariate(8, 2)) for _ in range(5000)]  # µs, ~3 ms median
    h = Histogram()
    for v in values:
        h.record_us(v)
    buckets, total_s = hdr_buckets(h.hdr)
    assert buckets[-1] == ("+Inf", 5000)
    for (le, count), bound in zip(buckets, E2E_BUCKETS_S, strict=False):
        exact = sum(1 for v in values if v <= bound * 1e6)
        # HDR resolution: values within 0.1 % above a bound may share its sub-bucket
        near = sum(1 for v in values if bound * 1e6 < v <= bound * 1e6 * 1.001)
        assert exact <= count <= exact + near, le
    assert total_s == pytest.approx(sum(values) / 1e6, rel=1e-3)


def test_locust_buckets_put_a_bound_into_its_own_bucket():
    assert locust_buckets([{1: 2, 5: 1}, {30_000: 1, 40_000: 1}], (0.001, 0.005, 30.0)) == [
        ("0.001", 2),
        ("0.005", 3),
        ("30.0", 4),
        ("+Inf", 5),
    ]


# --- options and serving --------------------------------------------------------------------------


def test_prometheus_port_option_env_and_default(monkeypatch):
    args = ["-f", "x.py"]
    assert get_parser().parse_args(args).prometheus_port == 9646
    monkeypatch.setenv("PIPESWARM_PROMETHEUS_PORT", "0")
    assert get_parser().parse_args(args).prometheus_port == 0
    assert get_parser().parse_args([*args, "--prometheus-port", "9700"]).prometheus_port == 9700


def test_init_serves_metrics_and_quitting_stops(tmp_path):
    port = free_port()
    environment = Environment(
        events=Events(), parsed_options=_options(tmp_path, prometheus_port=port)
    )
    runner = environment.create_local_runner()
    try:
        exporter._on_init(environment)
        served = exporter.get_exporter(environment)
        assert served is not None and served.port == port
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        names = {f.name for f in text_string_to_metric_families(text.decode())}
        assert {"locust_requests", "pipeswarm_e2e_latency_seconds", "pipeswarm_run_info"} <= names
        environment.events.quitting.fire(environment=environment)
        assert exporter.get_exporter(environment) is None
    finally:
        runner.quit()


def test_port_zero_is_off_and_a_taken_port_is_exit_2(tmp_path, capsys):
    environment = Environment(events=Events(), parsed_options=_options(tmp_path, prometheus_port=0))
    runner = environment.create_local_runner()
    exporter._on_init(environment)
    assert exporter.get_exporter(environment) is None
    runner.quit()
    with taken_port() as port:
        environment = Environment(
            events=Events(), parsed_options=_options(tmp_path, prometheus_port=port)
        )
        runner = environment.create_local_runner()
        with pytest.raises(SystemExit) as exit_info:
            exporter._on_init(environment)
        runner.quit()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"--prometheus-port {port}" in err and "choose a free port" in err
    assert err.count("\n") == 1


# --- docs/metrics.md ----------------------------------------------------------------------------


def documented() -> dict[str, str]:
    """``name -> type`` of every table row of docs/metrics.md."""
    rows = re.findall(
        r"^\| `([a-z0-9_:]+)` \| (\w+) \|", (ROOT / "docs/metrics.md").read_text(), re.M
    )
    return dict(rows)


def test_every_exported_family_is_documented_and_vice_versa(env):
    import time

    plugin = _traffic(env, time.time_ns())
    plugin.collector.merge("local", plugin.ledger.report())
    docs = documented()
    exported = {}
    for fam in _scrape(env).values():
        name = fam.name + ("_total" if fam.type == "counter" else "")
        exported[name] = fam.type
    for name, kind in exported.items():
        assert docs.get(name) == kind, (
            f"{name} ({kind}) is not documented as such in docs/metrics.md"
        )
    ours = {n for n in docs if n.startswith(("locust_", "pipeswarm_"))}
    assert ours == set(exported), ours ^ set(exported)
