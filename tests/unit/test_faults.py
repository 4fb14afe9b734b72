"""``--faults``: the schedule's grammar and checks, the figures per phase, the gauge, the toxics."""

from __future__ import annotations

import argparse
import json

import pytest
from locust.env import Environment
from locust.event import Events
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

import telemetry
from telemetry import faults
from telemetry._fault_actions import ToxiproxyExecutor
from telemetry._fault_figures import Second, format_table, phase_figures, seconds_of
from telemetry._fault_spec import Fault, check_schedule, parse_duration, parse_faults
from telemetry.exceptions import FaultError
from telemetry.exporter import LoadCollector
from telemetry.slo import Figures
from tests.helpers import wait_for


def test_the_issue_s_example_parses():
    got = parse_faults(
        "kill:bridge@30s+10s, pause:consumer@60s+10s, restart:kafka@90s, kill:redis@120s+5s, "
        "netem:mqtt@150s+20s:delay=200ms,loss=5%"
    )
    assert [(f.action, f.component, f.at_s, f.duration_s) for f in got] == [
        ("kill", "bridge", 30, 10),
        ("pause", "consumer", 60, 10),
        ("restart", "kafka", 90, 0),
        ("kill", "redis", 120, 5),
        ("netem", "mqtt", 150, 20),
    ]
    assert got[-1].params == {"delay": "200ms", "loss": "5%"}
    assert got[-1].param_s("delay") == pytest.approx(0.2) and got[-1].percent("loss") == 0.05
    assert got[0].undo == "start" and got[1].undo == "resume" and got[2].undo is None


def test_times_and_aliases():
    assert parse_duration("1m30s") == 90 and parse_duration("500ms") == 0.5
    assert parse_duration("12") == 12 and parse_duration("1h") == 3600
    for bad in ("", "10x", "-3", "s"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    # mqtt is Mosquitto for a process action, and the proxy "mqtt" for a network one
    kill, cut = parse_faults("kill:mqtt@1+2, partition:mosquitto@5+1")
    assert kill.component == "mosquitto" and cut.component == "mqtt"
    assert parse_faults("bandwidth:kafka@1+1:rate=2MB")[0].rate_kb() == 2048


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("explode:bridge@1s+1s", "unknown action 'explode'; use kill, stop, pause, restart"),
        ("kill:toaster@1s+1s", "unknown component 'toaster'; use mosquitto, redis, kafka"),
        ("latency:a/b@1s+1s:delay=1s", "unknown proxy 'a/b'"),
        ("kill:bridge@1s", "kill needs a duration, e.g. kill:bridge@1s+10s"),
        ("restart:kafka@1s+5s", "restart is instant"),
        ("kill:bridge@soon+1s", "times are like 30s"),
        ("kill bridge at 30", "write ACTION:COMPONENT@AT"),
        ("latency:mqtt@1s+1s", "latency needs delay="),
        ("latency:mqtt@1s+1s:delay=fast", "delay='fast' is not valid, e.g. delay=200ms"),
        ("netem:mqtt@1s+1s:delay=1s,loss=150%", "loss='150%' is not valid"),
        ("kill:bridge@1s+1s:delay=1s", "kill takes no parameters, not 'delay'"),
        ("bandwidth:redis@1s+1s", "bandwidth needs rate="),
    ],
)
def test_a_bad_phase_is_one_sentence_naming_it(text, words):
    with pytest.raises(FaultError) as err:
        parse_faults(text)
    message = str(err.value)
    assert message.startswith(f"--faults {text.strip()!r}: ") and words in message, message
    assert message.endswith(".") and "\n" not in message


def test_a_command_of_one_s_own_takes_any_component_name():
    (f,) = parse_faults("restart:my-kafka-0@1s", free_components=True)
    assert f.component == "my-kafka-0"
    with pytest.raises(FaultError, match="unknown component"):
        parse_faults("restart:a;rm -rf@1s", free_components=True)  # names only, no shell


def test_phases_past_the_end_or_overlapping_on_one_part_are_refused():
    check_schedule(parse_faults("kill:bridge@10s+5s, kill:bridge@20s+5s"), 60)
    check_schedule(parse_faults("kill:bridge@10s+5s, pause:consumer@12s+5s"), 60)  # other part
    with pytest.raises(FaultError, match="ends at 65 s but the run stops at 60 s"):
        check_schedule(parse_faults("kill:bridge@55s+10s"), 60)
    with pytest.raises(FaultError, match="overlaps 'kill:bridge@10s\\+5s' on bridge"):
        check_schedule(parse_faults("kill:bridge@10s+5s, pause:bridge@14s+5s"), 60)


def _options(tmp_path, **over) -> argparse.Namespace:
    values = {
        "results_dir": str(tmp_path / "{run_id}"),
        "run_id": "run-1",
        "e2e_grace": 1.0,
        "e2e_drain": 0.0,
        "e2e_hop_events": "true",
        "locustfile": "x.py",
        "prometheus_port": 0,
        "faults": "",
        "fault_command": "",
        "toxiproxy_url": "http://127.0.0.1:1",
        "run_time": "60s",
    }
    values.update(over)
    return argparse.Namespace(**values)


def test_the_tools_are_checked_before_the_run(tmp_path, monkeypatch):
    monkeypatch.setenv("PIPESWARM_STATE_DIR", str(tmp_path / "nowhere"))
    env = Environment(events=Events(), parsed_options=_options(tmp_path, faults="kill:bridge@1+1"))
    with pytest.raises(FaultError, match="no embedded stack recorded in .*stack.json"):
        faults.load_schedule(env)
    env.parsed_options.fault_command = "no-such-tool-xyz {action} {component}"
    with pytest.raises(FaultError, match="'no-such-tool-xyz' is not installed or not on PATH"):
        faults.load_schedule(env)
    env.parsed_options.fault_command = "true"
    with pytest.raises(FaultError, match="must use {action} and/or {component}"):
        faults.load_schedule(env)
    env.parsed_options.fault_command = "true {action} {component}"
    assert len(faults.load_schedule(env)) == 1
    env.parsed_options.faults = "partition:mqtt@1+1"
    with pytest.raises(FaultError, match="Toxiproxy does not answer; start the stack with"):
        faults.load_schedule(env)


def test_a_schedule_runs_on_the_test_clock_and_writes_faults_json(tmp_path):
    """Local runner, ``true`` as the fault command: the phases run, heal, and are recorded."""
    env = Environment(
        events=Events(),
        parsed_options=_options(
            tmp_path,
            faults="kill:bridge@0.2s+1.5s, restart:kafka@0.3s, pause:consumer@5s+1s, "
            "stop:redis@0.1s+30s",
            fault_command="echo {action} {component}",
        ),
    )
    env.create_local_runner()
    telemetry.install(env)
    schedule = faults.install(env)
    env.events.test_start.fire(environment=env)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(LoadCollector(env))

    def active() -> dict[tuple[str, str], float]:
        return {
            (s.labels["action"], s.labels["component"]): s.value
            for fam in text_string_to_metric_families(_scrape(registry))
            if fam.name == "pipeswarm_fault_active"
            for s in fam.samples
        }

    # inside the kill window (0.2 s to 1.7 s), once the restart at 0.3 s has run its command
    # (active while it runs); polled, not slept, so a slow box only waits longer
    inside = {
        ("kill", "bridge"): 1,
        ("restart", "kafka"): 0,
        ("pause", "consumer"): 0,
        ("stop", "redis"): 1,
    }
    restart = next(p for p in schedule.phases if p.fault.action == "restart")
    wait_for(lambda: restart.ended_epoch_s and active() == inside, 5, "the restart run, mid-kill")
    wait_for(lambda: active().get(("kill", "bridge")) == 0, 5, "the kill phase over")
    env.events.test_stopping.fire(environment=env)
    env.events.test_stop.fire(environment=env)  # before the pause phase: it never ran
    doc = json.loads((tmp_path / "run-1" / "faults.json").read_text())
    assert doc["format"] == "pipeswarm-faults/1" and doc["executor"] == "command"
    stop, kill, restart, pause = doc["phases"]
    # still active when the test stopped: healed at once
    assert [s["output"] for s in stop["steps"]] == ["stop redis", "start redis"]
    assert stop["note"] == "ended early by the end of the test" and stop["ended_s"] < 5
    assert [s["output"] for s in kill["steps"]] == ["kill bridge", "start bridge"]
    assert kill["ok"] and 0.2 <= kill["started_s"] < 0.3 and kill["ended_s"] >= 1.7
    assert [s["command"] for s in restart["steps"]] == ["echo restart kafka"]
    assert pause["started_s"] is None and pause["steps"] == []
    assert [f["phase"] for f in doc["figures"]] == [
        "stop:redis@0.1s+30s",
        "kill:bridge@0.2s+1.5s",
        "restart:kafka@0.3s",
    ]
    assert schedule.active() == []
    env.runner.quit()


def _scrape(registry: CollectorRegistry) -> str:
    from prometheus_client import generate_latest

    return generate_latest(registry).decode()


def _secs(spec: list[tuple[int, int, int, float | None, float | None, int]]) -> list[Second]:
    return [
        Second(t, published=pub, delivered=dlv, p99_ms=p99, max_ms=mx, lost_so_far=lost)
        for t, pub, dlv, p99, mx, lost in spec
    ]


def test_figures_of_a_phase_from_the_seconds():
    # 100 msg/s, p99 10 ms; the bridge is away 110-115 (back at 115.5): nothing arrives,
    # then the backlog comes through slow for two seconds; 3 messages never arrive
    seconds = [(t, 100, 100, 10.0, 12.0, 0) for t in range(100, 110)]
    seconds += [(t, 100, 0, None, None, 0) for t in range(110, 116)]
    seconds += [(116, 100, 500, 5000.0, 6100.0, 0), (117, 100, 300, 900.0, 950.0, 3)]
    seconds += [(t, 100, 100, 9.0, 11.0, 3) for t in range(118, 125)]
    phase = {"spec": "kill:bridge@10s+5s", "action": "kill", "component": "bridge",
             "started_epoch_s": 110.2, "ended_epoch_s": 115.5}  # fmt: skip
    (f,) = phase_figures([phase], _secs(seconds))
    assert f["published"] == 600 and f["lost"] == 3 and f["late"] == 800
    assert f["duplicated"] == 0
    assert f["first_delivery_s"] == 0.5 and f["recovery_s"] == 2.5
    assert f["peak_ms"] == 6100.0 and f["baseline_p99_ms"] == 10.0
    # the final word on the last phase's loss is e2e.json's
    assert phase_figures([phase], _secs(seconds), final_lost=5)[0]["lost"] == 5
    table = format_table([f], [dict(phase, ok=True)])
    assert "kill:bridge@10s+5s" in table and "6100" in table
    figures = Figures()
    figures.add_faults([f, dict(f, lost=1, recovery_s=None)])
    assert figures.fault_loss == 3 and figures.recovery_s == float("inf")


def test_seconds_add_up_the_paths_of_a_second():
    rows = [
        {"epoch_s": "5", "path": "mqtt→ws", "published": "10", "delivered": "10",
         "e2e_p99_ms": "3.5", "e2e_max_ms": "4", "lost_so_far": "1"},
        {"epoch_s": "5", "path": "mqtt→stomp", "published": "10", "delivered": "9",
         "e2e_p99_ms": "", "e2e_max_ms": "", "lost_so_far": "2"},
    ]  # fmt: skip
    (s,) = seconds_of(rows)
    assert (s.published, s.delivered, s.p99_ms, s.max_ms, s.lost_so_far) == (10, 19, 3.5, 4.0, 3)


def test_toxics_go_both_ways_and_loss_resets_a_share_of_connections():
    (f,) = parse_faults("netem:mqtt@1+1:delay=200ms,jitter=20ms,loss=5%")
    toxics = ToxiproxyExecutor.toxics(f)
    assert {(t["type"], t["stream"]) for t in toxics} == {
        ("latency", "upstream"), ("latency", "downstream"),
        ("reset_peer", "upstream"), ("reset_peer", "downstream"),
    }  # fmt: skip
    latency = next(t for t in toxics if t["type"] == "latency")
    assert latency["attributes"] == {"latency": 200, "jitter": 20}
    assert next(t for t in toxics if t["type"] == "reset_peer")["toxicity"] == 0.05
    assert isinstance(Fault("partition", "mqtt", 1, 1).undo, type(None))


def test_a_duplicate_is_counted_in_the_second_it_arrived():
    from telemetry import envelope
    from telemetry.ledger import Ledger

    ledger = Ledger("r", grace_s=1.0)
    sub = ledger.subscriber("ws")
    t0 = 1_700_000_000 * 10**9
    ledger.published("d1", 1, t0, t0)
    body = envelope.build("d1", 1.0, 2.0, run="r", seq=1, t0=t0)
    sub.received(body, t0 + 1_000_000)
    sub.received(body, t0 + 2_000_000)  # redelivered
    ((sec, _published, paths),) = ledger.windows.take_wire()
    delivered, _hist, duplicated = paths["mqtt→ws"]
    assert (sec, delivered, duplicated) == (1_700_000_000, 1, 1)


def test_the_slo_keys_check_the_worst_phase(tmp_path):
    from telemetry import slo

    path = tmp_path / "slo.yaml"
    path.write_text("fault_loss_max: 0\nrecovery_s_max: 15\n")
    objectives = slo.load(str(path))
    figures = Figures()
    assert [c.passed for c in slo.evaluate(objectives, figures)] == [False, False]  # no faults
    figures.add_faults([{"lost": 0, "recovery_s": 3.5}, {"lost": 0, "recovery_s": 14.0}])
    assert [c.passed for c in slo.evaluate(objectives, figures)] == [True, True]
    figures.add_faults([{"lost": 2, "recovery_s": None}])  # never drained in its window
    checks = slo.evaluate(objectives, figures)
    assert [(c.key, c.actual, c.passed) for c in checks] == [
        ("fault_loss_max", 2.0, False),
        ("recovery_s_max", float("inf"), False),
    ]


def test_an_earlier_phase_s_backlog_is_not_the_next_phase_s_normal():
    # phase 1 away 100-105, its backlog arrives slow until 107; phase 2 at 112 (back 114)
    seconds = [(t, 100, 100, 10.0, 12.0, 0) for t in range(90, 100)]
    seconds += [(t, 100, 0, None, None, 0) for t in range(100, 106)]
    seconds += [(106, 100, 500, 9000.0, 9500.0, 0), (107, 100, 150, 9.0, 25.0, 0)]
    seconds += [(t, 100, 100, 10.0, 12.0, 0) for t in range(108, 112)]
    seconds += [(t, 100, 0, None, None, 0) for t in range(112, 114)]
    seconds += [(114, 100, 300, 3000.0, 3100.0, 0)]
    seconds += [(t, 100, 100, 10.0, 12.0, 0) for t in range(115, 120)]
    phases = [
        {"spec": "a", "started_epoch_s": 100.0, "ended_epoch_s": 105.5},
        {"spec": "b", "started_epoch_s": 112.0, "ended_epoch_s": 114.0},
    ]
    first, second = phase_figures(phases, _secs(seconds))
    assert first["recovery_s"] == 1.5 and first["baseline_p99_ms"] == 10.0
    # 106-107 (phase 1 until drained) are not phase 2's normal: its baseline stays 10 ms
    assert second["baseline_p99_ms"] == 10.0 and second["recovery_s"] == 1.0
