"""SLO files and their evaluation (``telemetry.slo``): parsing, pass/fail, the Locust hook."""

from __future__ import annotations

import argparse
import time

import gevent
import pytest
from locust.argument_parser import LocustArgumentParser
from locust.env import Environment
from locust.event import Events

import telemetry
from telemetry import envelope, slo
from telemetry.slo import Check, Figures, PathFigures, RequestFigures, SloError

GOOD = """
e2e_p95_ms: 50
e2e_p99_ms: 100
loss_ratio_max: 0.001
failure_ratio_max: 0.01
min_delivered_per_s: 900
requests:
  "publish:1:sensors/+/coordinates": {p95_ms: 20}
paths:
  "mqtt→stomp": {p99_ms: 80, loss_ratio_max: 0}
"""


def _write(tmp_path, text: str, name: str = "slo.yaml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _figures(**over) -> Figures:
    """A run that meets GOOD: p95 40 ms, p99 90 ms, no loss, 1 % failures... adjusted by ``over``."""
    f = Figures(
        e2e_ms={"p50_ms": 10.0, "p90_ms": 30.0, "p95_ms": 40.0, "p99_ms": 90.0, "max_ms": 200.0},
        paths={
            "mqtt→stomp": PathFigures(
                latency_ms={"p99_ms": 70.0}, delivered=10_000, expected=10_000, lost=0, active_s=10
            )
        },
        requests=[
            RequestFigures("MQTT", "publish:1:sensors/+/coordinates", 1000, 5, p95_ms=15.0),
            RequestFigures("E2E", "mqtt→stomp", 10_000, 0, p95_ms=40.0),
        ],
        active_s=10.0,
    )
    for key, value in over.items():
        setattr(f, key, value)
    return f


def _by_key(checks: list[Check]) -> dict[str, Check]:
    return {c.key: c for c in checks}


# --- the file -------------------------------------------------------------------------------
def test_a_good_file_keeps_every_objective_in_order(tmp_path):
    s = slo.load(_write(tmp_path, GOOD))
    assert list(s.top) == [
        "e2e_p95_ms",
        "e2e_p99_ms",
        "loss_ratio_max",
        "failure_ratio_max",
        "min_delivered_per_s",
    ]
    assert s.top["loss_ratio_max"] == 0.001
    assert s.requests == {"publish:1:sensors/+/coordinates": {"p95_ms": 20.0}}
    assert s.paths == {"mqtt→stomp": {"p99_ms": 80.0, "loss_ratio_max": 0.0}}


def test_the_example_file_in_docs_is_valid():
    s = slo.load("docs/slo.example.yaml")
    assert {"e2e_p99_ms", "e2e_p95_ms", "loss_ratio_max", "failure_ratio_max"} <= set(s.top)
    assert "min_delivered_per_s" in s.top and s.requests


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("e2e_p98_ms: 10\n", ["unknown key 'e2e_p98_ms'", "known: e2e_p50_ms"]),
        ("requests:\n  x: {p96_ms: 1}\n", ["unknown key 'p96_ms'", "under requests['x']"]),
        ("paths:\n  a→b: {loss: 1}\n", ["unknown key 'loss'", "paths['a→b']"]),
        ("e2e_p99_ms: fast\n", ["e2e_p99_ms must be a number", "'fast'"]),
        ("e2e_p99_ms: -1\n", ["must not be negative"]),
        ("e2e_p99_ms: true\n", ["must be a number"]),
        ("loss_ratio_max: 5\n", ["ratio between 0 and 1"]),
        ("requests: [a, b]\n", ["requests must map names to objectives"]),
        ("requests:\n  x: 5\n", ["requests['x'] must be a mapping"]),
        ("- e2e_p99_ms\n", ["must be a mapping of objectives"]),
        ("", ["must be a mapping of objectives"]),
        ("e2e_p99_ms: [1\n", ["not valid YAML", "line"]),
    ],
)
def test_an_unusable_file_is_one_sentence_naming_the_problem(tmp_path, text, words):
    path = _write(tmp_path, text)
    with pytest.raises(SloError) as err:
        slo.load(path)
    message = str(err.value)
    assert message.startswith(f"SLO file {path}")
    assert "\n" not in message
    for word in words:
        assert word in message


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(SloError, match="does not exist"):
        slo.load(tmp_path / "nope.yaml")
    with pytest.raises(SloError, match="is a directory"):
        slo.load(tmp_path)


# --- evaluation -------------------------------------------------------------------------------
def test_every_objective_met_passes(tmp_path):
    checks = slo.evaluate(slo.load(_write(tmp_path, GOOD)), _figures())
    assert [c.passed for c in checks] == [True] * 8
    by = _by_key(checks)
    assert by["e2e_p99_ms"].actual == 90.0
    assert by["min_delivered_per_s"].actual == 1000.0  # 10,000 delivered over 10 active seconds
    # E2E entries are measurements, not requests: 5 failures of 1,000 requests
    assert by["failure_ratio_max"].actual == pytest.approx(0.005)
    assert by["requests['publish:1:sensors/+/coordinates'].p95_ms"].actual == 15.0


def test_each_objective_fails_on_its_own_figure(tmp_path):
    s = slo.load(_write(tmp_path, GOOD))
    f = _figures(e2e_ms={"p95_ms": 40.0, "p99_ms": 101.0})
    f.paths["mqtt→stomp"].lost = 1
    f.paths["mqtt→stomp"].expected = 10_001
    f.requests[0].p95_ms = 25.0
    by = _by_key(slo.evaluate(s, f))
    assert not by["e2e_p99_ms"].passed and by["e2e_p99_ms"].actual == 101.0
    assert by["e2e_p95_ms"].passed
    assert by["loss_ratio_max"].passed  # 1 / 10,001 = 0.01 % <= 0.1 %
    assert by["loss_ratio_max"].actual == pytest.approx(1 / 10_001)
    assert not by["paths['mqtt→stomp'].loss_ratio_max"].passed  # the path allows none
    assert not by["requests['publish:1:sensors/+/coordinates'].p95_ms"].passed


def test_loss_ratio_and_minimum_rate_thresholds(tmp_path):
    s = slo.parse({"loss_ratio_max": 0.001, "min_delivered_per_s": 2000})
    f = _figures()
    f.paths["mqtt→stomp"].lost = 20
    f.paths["mqtt→stomp"].expected = 10_020
    by = _by_key(slo.evaluate(s, f))
    assert not by["loss_ratio_max"].passed  # 20 / 10,020 = 0.2 %
    assert by["loss_ratio_max"].measured == "0.2 %"
    assert not by["min_delivered_per_s"].passed and by["min_delivered_per_s"].op == ">="
    assert by["min_delivered_per_s"].objective == "≥ 2,000/s"


def test_missing_data_fails_with_a_reason():
    s = slo.parse(
        {
            "e2e_p99_ms": 100,
            "loss_ratio_max": 0.1,
            "requests": {"nope": {"p95_ms": 1}},
            "paths": {"kafka→ws": {"p99_ms": 5}},
        }
    )
    f = Figures(e2e_note="no test ran")
    by = _by_key(slo.evaluate(s, f))
    assert not any(c.passed for c in by.values())
    assert by["e2e_p99_ms"].note == "no test ran" and by["e2e_p99_ms"].measured == "no data"
    assert by["requests['nope'].p95_ms"].note == "no such request"
    assert by["paths['kafka→ws'].p99_ms"].note == "no such path in this run"


def test_incomplete_loss_figures_fail_the_loss_objective():
    s = slo.parse({"loss_ratio_max": 0.5, "paths": {"mqtt→stomp": {"loss_ratio_max": 0.5}}})
    checks = slo.evaluate(s, _figures(loss_complete=False))
    assert [c.passed for c in checks] == [False, False]
    assert "incomplete" in checks[0].note


def test_a_request_objective_can_name_the_type_and_checks_every_match():
    s = slo.parse({"requests": {"MQTT publish": {"p95_ms": 10}, "publish": {"max_ms": 100}}})
    f = _figures(
        requests=[
            RequestFigures("MQTT", "publish", 10, 0, p95_ms=5.0, max_ms=50.0),
            RequestFigures("HTTP", "publish", 10, 0, p95_ms=50.0, max_ms=500.0),
        ]
    )
    by = _by_key(slo.evaluate(s, f))
    assert by["requests['MQTT publish'].p95_ms"].passed
    assert by["requests['publish'] (MQTT).max_ms"].passed
    assert not by["requests['publish'] (HTTP).max_ms"].passed


def test_a_request_without_response_times_fails_a_latency_objective():
    s = slo.parse({"requests": {"publish:0:x": {"p95_ms": 10, "min_rps": 5}}})
    f = _figures(requests=[RequestFigures("MQTT", "publish:0:x", 100, 0, rps=50.0)])
    by = _by_key(slo.evaluate(s, f))
    assert not by["requests['publish:0:x'].p95_ms"].passed
    assert by["requests['publish:0:x'].min_rps"].passed


def test_the_text_table_lists_each_check():
    checks = slo.evaluate(slo.parse({"e2e_p99_ms": 50}), _figures())
    text = slo.table(checks)
    assert "FAIL" in text and "e2e_p99_ms" in text and "90 ms" in text and "≤ 50 ms" in text


# --- figures from the results files ------------------------------------------------------------
def _run_locally(tmp_path, slo_path, *, lost: int = 0):
    """A local Locust run without network: one device published into one subscriber."""
    options = argparse.Namespace(
        results_dir=str(tmp_path / "{run_id}"),
        run_id="",
        e2e_grace=0.2,
        e2e_drain=0.0,
        e2e_hop_events="true",
        locustfile="locustfiles/x.py",
        slo=str(slo_path),
    )
    env = Environment(events=Events(), parsed_options=options)
    runner = env.create_local_runner()
    plugin = telemetry.install(env)
    env.events.test_start.fire(environment=env)
    ledger = telemetry.get_ledger(env)
    sub = ledger.subscriber("stomp")
    for seq in range(1, 101):
        t0 = time.time_ns()
        ledger.published("robot-1", seq, t0, t0 + 1_000)
        if seq <= 100 - lost:
            sub.received(
                envelope.build("robot-1", 1, 2, run=ledger.run_id, seq=seq, t0=t0), t0 + 2_000_000
            )
        env.events.request.fire(
            request_type="MQTT", name="publish:1:x", response_time=3.0, response_length=10,
            exception=None, context={},
        )  # fmt: skip
    gevent.sleep(1.1)
    env.events.test_stopping.fire(environment=env)
    env.events.test_stop.fire(environment=env)
    return env, runner, plugin


def test_the_locust_hook_sets_the_exit_code_when_an_objective_fails(tmp_path):
    path = _write(
        tmp_path, "e2e_p99_ms: 1\nloss_ratio_max: 0\nrequests:\n  publish:1:x: {p95_ms: 10}\n"
    )
    env, runner, plugin = _run_locally(tmp_path, path, lost=5)
    try:
        checks = slo.check_at_quit(env)
    finally:
        runner.quit()
    by = _by_key(checks)
    assert by["e2e_p99_ms"].actual == pytest.approx(2.0, rel=0.01)  # recv - t0 = 2 ms, exact
    assert not by["e2e_p99_ms"].passed
    assert not by["loss_ratio_max"].passed and by["loss_ratio_max"].actual == pytest.approx(0.05)
    assert by["requests['publish:1:x'].p95_ms"].passed  # from environment.stats
    assert env.process_exit_code == 1
    assert (plugin.results_path / "e2e.json").is_file()


def test_the_locust_hook_leaves_the_exit_code_alone_when_everything_passes(tmp_path):
    path = _write(tmp_path, "e2e_p99_ms: 50\nloss_ratio_max: 0\nmin_delivered_per_s: 1\n")
    env, runner, _ = _run_locally(tmp_path, path)
    try:
        checks = slo.check_at_quit(env)
    finally:
        runner.quit()
    assert checks and all(c.passed for c in checks)
    assert env.process_exit_code is None


def test_the_hook_does_nothing_without_slo_or_on_a_worker(tmp_path):
    env = Environment(events=Events(), parsed_options=argparse.Namespace(slo=""))
    assert slo.check_at_quit(env) is None
    assert env.process_exit_code is None


def test_a_bad_slo_file_stops_locust_at_start_with_exit_code_2(tmp_path, capsys):
    path = _write(tmp_path, "e2e_p42_ms: 1\n")
    env = Environment(events=Events(), parsed_options=argparse.Namespace(slo=str(path)))
    with pytest.raises(SystemExit) as exit_:
        slo.OPTIONS.validate(env)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("pipeswarm: SLO file") and "'e2e_p42_ms'" in err


def test_slo_option_reads_its_environment_variable(monkeypatch):
    parser = LocustArgumentParser()
    slo.OPTIONS.add_arguments(parser)
    assert parser.parse_args([]).slo == ""
    monkeypatch.setenv("PIPESWARM_SLO", "ci/slo.yaml")
    assert parser.parse_args([]).slo == "ci/slo.yaml"
    assert parser.parse_args(["--slo", "other.yaml"]).slo == "other.yaml"


def test_e2e_figures_divide_by_the_seconds_messages_arrived():
    e2e = {"paths": {"mqtt→ws": {"totals": {"delivered": 300, "expected": 300, "lost": 0}}}}
    rows = [
        {"epoch_s": "100", "path": "", "delivered": "0"},
        {"epoch_s": "101", "path": "mqtt→ws", "delivered": "100"},
        {"epoch_s": "102", "path": "mqtt→ws", "delivered": "150"},
        {"epoch_s": "103", "path": "mqtt→ws", "delivered": "50"},
        {"epoch_s": "104", "path": "mqtt→ws", "delivered": "0"},
    ]
    f = slo.e2e_figures(e2e, rows, duration_s=60)
    assert f.active_s == 3.0
    assert f.delivered_per_s == 100.0
    assert f.paths["mqtt→ws"].delivered_per_s == 100.0
    assert f.e2e_ms == {}  # no histogram: no latency figure
    assert slo.e2e_figures(e2e, [], duration_s=60).delivered_per_s == 5.0


def test_a_failed_objective_with_a_figure_carries_no_missing_data_note():
    checks = slo.evaluate(slo.parse({"e2e_p99_ms": 1, "loss_ratio_max": 0}), _figures())
    assert [(c.passed, c.note) for c in checks] == [(False, ""), (True, "")]
