"""The Locust wiring: E2E request entries (opt-in), worker → master merging, results files."""

from __future__ import annotations

import argparse
import csv
import json
import time

import gevent
import pytest
from locust.env import Environment
from locust.event import Events
from locust.rpc import Message
from locust.runners import MasterRunner, WorkerNode, WorkerNodes, WorkerRunner

import telemetry
from telemetry import clock, envelope
from telemetry.plugin import MSG_DRAIN, MSG_FINAL
from telemetry.results import TIMESERIES_COLUMNS


def _options(tmp_path, **over) -> argparse.Namespace:
    values = {
        "results_dir": str(tmp_path / "{run_id}"),
        "run_id": "",
        "e2e_grace": 1.0,
        "e2e_drain": 0.0,
        "locustfile": "locustfiles/pipeline.py",
    }
    values.update(over)
    return argparse.Namespace(**values)


def _wire(data):
    """Send ``data`` through Locust's own message encoding (msgpack), as a real worker would."""
    return Message.unserialize(Message("stats", data, "w").serialize()).data


class FakeWorker(WorkerRunner):
    """A WorkerRunner without a master connection: it records what it sends."""

    def __init__(self, environment: Environment, client_id: str) -> None:  # noqa: D107
        self.environment = environment
        self.client_id = client_id
        self.custom_messages = {}
        self.sent: list[tuple[str, object]] = []

    def send_message(self, msg_type, data=None, client_id=None):
        self.sent.append((msg_type, _wire(data)))


class FakeMaster(MasterRunner):
    """A MasterRunner without a socket: workers are plain WorkerNodes."""

    def __init__(self, environment: Environment, worker_ids: list[str]) -> None:  # noqa: D107
        self.environment = environment
        self.custom_messages = {}
        self.worker_indexes = {}
        self.worker_index_max = 0
        self.clients = WorkerNodes()
        for wid in worker_ids:
            self.clients[wid] = WorkerNode(wid)
        self.final_user_classes_count = {"MqttDevice": 4, "StompSubscriber": 2}
        self.sent: list[tuple[str, object, str | None]] = []

    def send_message(self, msg_type, data=None, client_id=None):
        self.sent.append((msg_type, data, client_id))


@pytest.fixture
def local_env(tmp_path):
    env = Environment(events=Events(), parsed_options=_options(tmp_path))
    runner = env.create_local_runner()  # its request listener fills environment.stats
    yield env
    runner.quit()


def _feed(ledger, device: str, seqs, sub, t_recv_offset_ns: int = 2_000_000) -> None:
    for seq in seqs:
        t0 = time.time_ns()
        ledger.published(device, seq, t0, t0 + 1_000)
        payload = json.loads(envelope.build(device, 1, 2, run=ledger.run_id, seq=seq, t0=t0))
        payload["trace"]["hops"] = {"bridge": t0 + 100_000, "gateway": t0 + 900_000}
        if sub is not None:
            sub.received(json.dumps(payload).encode(), t0 + t_recv_offset_ns)


def test_received_messages_stay_out_of_locusts_request_stats_by_default(local_env):
    env = local_env
    plugin = telemetry.install(env)
    env.events.test_start.fire(environment=env)
    ledger = telemetry.get_ledger(env)
    sub = ledger.subscriber("stomp")
    _feed(ledger, "robot-1", range(1, 6), sub)
    assert env.stats.total.num_requests == 0
    assert not any(method == "E2E" for _name, method in env.stats.entries)
    # ... and are all in the ledger's histograms
    assert ledger.histograms.get("mqtt→stomp", "total").count == 5
    assert ledger.histograms.get("mqtt→stomp", "push").count == 5
    plugin.probe.stop()
    if plugin._sampler is not None:
        plugin._sampler.kill()


def test_with_e2e_in_stats_received_messages_become_e2e_request_entries(local_env):
    env = local_env
    env.parsed_options.e2e_in_stats = "true"
    plugin = telemetry.install(env)
    env.events.test_start.fire(environment=env)
    ledger = telemetry.get_ledger(env)
    assert ledger.run_id and ledger.run_id == env.parsed_options.run_id
    sub = ledger.subscriber("stomp")
    _feed(ledger, "robot-1", range(1, 6), sub)
    total = env.stats.entries[("mqtt→stomp", "E2E")]
    assert total.num_requests == 5
    assert total.num_failures == 0
    assert 1.9 <= total.avg_response_time <= 2.1  # ms
    assert env.stats.entries[("mqtt→stomp:service", "E2E")].num_requests == 5
    assert env.stats.entries[("mqtt→stomp:mqtt", "E2E")].num_requests == 5
    assert env.stats.entries[("mqtt→stomp:kafka+redis", "E2E")].num_requests == 5
    assert env.stats.entries[("mqtt→stomp:push", "E2E")].num_requests == 5
    assert plugin.ledger is ledger
    plugin.probe.stop()
    if plugin._sampler is not None:
        plugin._sampler.kill()


def test_local_run_writes_documented_results(local_env, tmp_path):
    env = local_env
    telemetry.install(env)
    env.events.test_start.fire(environment=env)
    ledger = telemetry.get_ledger(env)
    sub = ledger.subscriber("stomp")
    _feed(ledger, "robot-1", range(1, 11), sub)
    _feed(ledger, "robot-2", range(1, 4), None)  # published, never received: lost
    gevent.sleep(1.2)  # one sampler tick
    env.events.test_stopping.fire(environment=env)
    assert ledger.draining
    sub.close()  # users' on_stop runs between test_stopping and test_stop
    env.events.test_stop.fire(environment=env)

    out = tmp_path / ledger.run_id
    run = json.loads((out / "run.json").read_text())
    e2e = json.loads((out / "e2e.json").read_text())
    with open(out / "timeseries.csv", newline="") as f:
        rows = list(csv.DictReader(f))

    assert run["format"] == "pipeswarm-run/1"
    assert run["run_id"] == e2e["run_id"] == ledger.run_id
    assert run["mode"] == "local"
    assert run["scenario"] == "pipeline"
    for key in ("started_at", "ended_at", "duration_s", "versions", "options", "hosts", "workers"):
        assert key in run
    assert run["versions"]["locust"]

    assert e2e["format"] == "pipeswarm-e2e/1"
    assert e2e["complete"] is True
    path = e2e["paths"]["mqtt→stomp"]
    assert path["totals"]["delivered"] == 10
    assert path["totals"]["lost"] == 3
    assert path["totals"]["published"] == 13
    assert path["latency"]["total"]["count"] == 10
    assert path["latency"]["total"]["hdr"].startswith("HISTF")
    assert telemetry.Histogram.decode(path["latency"]["total"]["hdr"]).count == 10
    assert e2e["schedule_lag"]["count"] == 13
    assert "local" in e2e["loop_lag"]
    assert e2e["loop_lag"]["local"]["count"] >= 5  # ~10 ticks in 1.2 s

    assert rows and list(rows[0].keys()) == list(TIMESERIES_COLUMNS)
    stomp_rows = [r for r in rows if r["path"] == "mqtt→stomp"]
    assert sum(int(r["delivered"]) for r in stomp_rows) == 10
    assert sum(int(r["published"]) for r in stomp_rows) == 13


def test_run_id_travels_to_workers_and_worker_reports_merge_exactly(tmp_path):
    master_env = Environment(events=Events(), parsed_options=_options(tmp_path))
    master = master_env.runner = FakeMaster(master_env, ["w1", "w2"])
    plugin = telemetry.install(master_env)
    assert MSG_FINAL in master.custom_messages
    master_env.events.test_start.fire(environment=master_env)
    run_id = master_env.parsed_options.run_id
    assert run_id == plugin.run_id

    workers = []
    for wid in ("w1", "w2"):
        env = Environment(events=Events(), parsed_options=_options(tmp_path, run_id=run_id))
        env.runner = FakeWorker(env, wid)
        wplugin = telemetry.install(env)
        assert MSG_DRAIN in env.runner.custom_messages
        env.events.test_start.fire(environment=env)
        assert wplugin.ledger.run_id == run_id
        workers.append((wid, env, wplugin))

    # w1 publishes robot-1 and subscribes; w2 subscribes only (cross-worker loss)
    (_, env1, p1), (_, env2, p2) = workers
    sub1 = p1.ledger.subscriber("stomp")
    sub2 = p2.ledger.subscriber("stomp")

    for seq in range(1, 21):
        t0 = time.time_ns()
        p1.ledger.published("robot-1", seq, t0, t0 + 500)
        payload = envelope.build("robot-1", 1, 2, run=run_id, seq=seq, t0=t0)
        sub1.received(payload, t0 + 1_000_000)
        if seq <= 15:
            sub2.received(payload, t0 + 3_000_000)

    # periodic reports, through msgpack as Locust sends them
    for wid, env, _p in workers:
        data: dict = {}
        env.events.report_to_master.fire(client_id=wid, data=data)
        master_env.events.worker_report.fire(client_id=wid, data=_wire(data))
    merged = plugin.collector.histograms.get("mqtt→stomp", "total")
    assert merged.count == 20 + 15
    assert p1.ledger.histograms.get("mqtt→stomp", "total").count == 0  # shipped as a delta

    # stop: the master asks for a drain, workers answer with their final state
    master_env.events.test_stopping.fire(environment=master_env)
    drains = [(t, c) for t, _d, c in master.sent if t == MSG_DRAIN]
    assert sorted(c for _t, c in drains) == ["w1", "w2"]
    for wid, env, wplugin in workers:
        wplugin._on_drain_message(env, Message(MSG_DRAIN, {"run": run_id}, "master"))
        assert wplugin.ledger.draining
        ((msg_type, data),) = [m for m in env.runner.sent if m[0] != clock.MSG_PING]
        assert msg_type == MSG_FINAL
        master.custom_messages[MSG_FINAL][0](
            environment=master_env, msg=Message(MSG_FINAL, data, wid)
        )
    master_env.events.test_stop.fire(environment=master_env)

    e2e = json.loads((tmp_path / run_id / "e2e.json").read_text())
    run = json.loads((tmp_path / run_id / "run.json").read_text())
    path = e2e["paths"]["mqtt→stomp"]
    assert path["latency"]["total"]["count"] == 35
    assert path["totals"]["delivered"] == 35
    assert path["totals"]["lost"] == 5  # w2's subscriber missed 16..20 of w1's device
    assert path["totals"]["published"] == 20
    assert path["subscribers"] == 2
    assert e2e["complete"] is True
    assert run["mode"] == "distributed"
    assert run["worker_count"] == 2
    assert [w["id"] for w in run["workers"]] == ["w1", "w2"]
    assert run["user_classes_count"] == {"MqttDevice": 4, "StompSubscriber": 2}
    for _wid, _env, wplugin in workers:
        wplugin.probe.stop()


def test_options_are_registered_with_env_vars(monkeypatch):
    from locust.argument_parser import get_empty_argument_parser

    parser = get_empty_argument_parser()
    telemetry.options.TELEMETRY.add_arguments(parser)
    opts = parser.parse_args(["--e2e-grace", "2.5", "--run-id", "abc"])
    assert (opts.e2e_grace, opts.run_id, opts.e2e_drain, opts.results_dir) == (2.5, "abc", 3.0, "")
    monkeypatch.setenv("PIPESWARM_E2E_DRAIN", "7")
    monkeypatch.setenv("PIPESWARM_RESULTS_DIR", "out/{run_id}")
    opts = parser.parse_args([])
    assert (opts.e2e_drain, opts.results_dir) == (7.0, "out/{run_id}")
    in_ui = parser.args_included_in_web_ui
    assert {"e2e_grace", "run_id", "results_dir", "e2e_in_stats"} <= set(in_ui)


def test_run_json_never_carries_secrets():
    from telemetry.results import safe_argv, safe_options

    argv = ["locust", "--mqtt-url", "mqtt://dev:s3cret@h:1883", "--gateway-token", "jwt"]
    assert safe_argv(argv) == [
        "locust",
        "--mqtt-url",
        "mqtt://dev:***@h:1883",
        "--gateway-token",
        "***",
    ]
    opts = safe_options(
        argparse.Namespace(redis_url="redis://:pw@h:6379/0", gateway_token="jwt", users=5)
    )
    assert opts == {"gateway_token": "***", "redis_url": "redis://:***@h:6379/0", "users": 5}


def test_each_test_gets_a_fresh_run_id_unless_one_is_fixed(local_env, tmp_path):
    env = local_env
    plugin = telemetry.install(env)
    ids = []
    for _ in range(2):
        env.events.test_start.fire(environment=env)
        ids.append(plugin.run_id)
        env.events.test_stopping.fire(environment=env)
        env.events.test_stop.fire(environment=env)
    assert ids[0] != ids[1]
    assert all((tmp_path / i / "e2e.json").exists() for i in ids)

    env.parsed_options.run_id = "nightly-42"
    env.events.test_start.fire(environment=env)
    assert telemetry.get_ledger(env).run_id == "nightly-42"
    env.events.test_stopping.fire(environment=env)
    env.events.test_stop.fire(environment=env)
    assert json.loads((tmp_path / "nightly-42" / "run.json").read_text())["run_id"] == "nightly-42"


def test_idle_worker_answers_the_drain_so_the_master_need_not_wait(tmp_path):
    env = Environment(events=Events(), parsed_options=_options(tmp_path))
    env.runner = FakeWorker(env, "w9")
    plugin = telemetry.install(env)  # no test_start: this worker ran no users
    plugin._on_drain_message(env, Message(MSG_DRAIN, {"run": "r"}, "master"))
    assert env.runner.sent == [(MSG_FINAL, {"idle": True})]


def test_locusts_csv_files_hold_the_final_figures(tmp_path):
    """Locust rewrites ``--csv``'s files once a second and never at the end: the plugin
    writes them once more when the run is over, so analyze.py reads what Locust checked."""
    prefix = tmp_path / "csv" / "locust"
    env = Environment(events=Events(), parsed_options=_options(tmp_path, csv_prefix=str(prefix)))
    runner = env.create_local_runner()
    plugin = telemetry.install(env)
    env.events.test_start.fire(environment=env)
    for n in range(7):
        env.events.request.fire(
            request_type="LOOP", name="publish", response_time=3.0 + n, response_length=10,
            exception=RuntimeError("no") if n == 6 else None, context={},
        )  # fmt: skip
    env.events.test_stopping.fire(environment=env)
    env.events.test_stop.fire(environment=env)
    try:
        with open(f"{prefix}_stats.csv", newline="") as f:
            rows = {r["Name"]: r for r in csv.DictReader(f)}
        assert (rows["publish"]["Type"], rows["publish"]["Request Count"]) == ("LOOP", "7")
        assert (
            rows["publish"]["Failure Count"] == "1"
            and float(rows["publish"]["Max Response Time"]) == 9
        )
        assert rows["Aggregated"]["Request Count"] == "7"
        with open(f"{prefix}_failures.csv", newline="") as f:
            (failure,) = csv.DictReader(f)
        assert failure["Name"] == "publish" and "no" in failure["Error"]
        assert open(f"{prefix}_exceptions.csv").readline().startswith("Count,Message")
    finally:
        plugin.probe.stop()
        runner.quit()
