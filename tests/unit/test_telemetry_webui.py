"""The web UI tab: template args, rows in /stats/requests, JSON/CSV routes, charts, the options form."""

from __future__ import annotations

import argparse
import json
import time

import pytest
from locust.argument_parser import get_parser
from locust.env import Environment
from locust.event import Events

import telemetry
from telemetry import envelope, webui
from telemetry.options import GROUPS

MS = 1_000_000


@pytest.fixture
def env(tmp_path, monkeypatch):
    # the web UI's template args parse sys.argv for extra options: not pytest's
    monkeypatch.setattr("sys.argv", ["locust", "-f", "x.py"])
    options = get_parser().parse_args(
        ["-f", "x.py", "--run-id", "run-1", "--e2e-drain", "0", "--results-dir", str(tmp_path)]
    )
    environment = Environment(events=Events(), parsed_options=options)
    runner = environment.create_local_runner()
    environment.create_web_ui("127.0.0.1", 0, delayed_start=True)
    telemetry.install(environment)
    webui.install(environment)
    environment.events.test_start.fire(environment=environment)
    yield environment
    runner.quit()


def _deliver(env, seqs, latency_ms, kind="stomp"):
    plugin = telemetry.get_plugin(env)
    ledger = plugin.ledger
    sub = ledger.subscriber(kind)
    now = time.time_ns()
    for seq in seqs:
        t0 = now + seq * MS
        ledger.published("d1", seq, t0, t0)
        body = envelope.build("d1", 1.0, 2.0, run=ledger.run_id, seq=seq, t0=t0, tp=t0)
        doc = envelope.read(body)
        doc.hops.update({"bridge": t0 + MS, "consumer": t0 + 2 * MS, "gateway": t0 + 3 * MS})
        sub.received(doc, t0 + latency_ms * MS)
    sub.received(envelope.build("d1", 1.0, 2.0, run=ledger.run_id, seq=1, t0=now, tp=now))  # dup
    plugin.collector.merge("local", ledger.report())
    return plugin


def test_rows_per_path_and_hop_in_pipeline_order(env):
    plugin = _deliver(env, range(1, 101), 8)
    rows = webui.rows(plugin)
    assert [r["hop"] for r in rows] == ["total", "service", "mqtt", "kafka", "redis", "push"]
    total = rows[0]
    assert total["path"] == "mqtt→stomp"
    assert total["count"] == 100
    # HDR values are exact to 3 significant digits (8 ms reads 8.003)
    assert total["p50"] == total["p99"] == total["max"] == pytest.approx(8.0, rel=1e-3)
    assert (total["lost"], total["dup"], total["reorder"]) == (0, 1, 0)
    assert rows[-1]["p99"] == pytest.approx(
        5.0, rel=1e-3
    )  # gateway (t0 + 3 ms) → receive (t0 + 8 ms)
    assert rows[1]["dup"] == ""  # counts only on the total row
    assert {k for k, _ in webui.COLUMNS} == set(total)


def test_the_tab_is_in_the_template_args_and_rows_in_stats_requests(env):
    _deliver(env, range(1, 11), 3)
    args = env.web_ui.template_args
    assert {"title": "End to end", "key": "e2e"} in args["extended_tabs"]
    table = next(t for t in args["extended_tables"] if t["key"] == "e2e")
    assert [c["key"] for c in table["structure"]] == [k for k, _ in webui.COLUMNS]
    client = env.web_ui.app.test_client()
    body = client.get("/stats/requests").get_json()
    assert body["stats"]  # Locust's own answer is intact
    e2e = next(x for x in body["extended_stats"] if x["key"] == "e2e")
    assert e2e["data"][0]["count"] == 10
    assert client.get("/pipeswarm/e2e").get_json()[0]["path"] == "mqtt→stomp"
    csv_text = client.get("/pipeswarm/e2e.csv").get_data(as_text=True)
    assert csv_text.splitlines()[0] == ",".join(k for k, _ in webui.COLUMNS)
    assert len(csv_text.splitlines()) == 1 + 6


def test_install_is_idempotent(env):
    webui.install(env)
    assert [t["key"] for t in env.web_ui.template_args["extended_tabs"]].count("e2e") == 1


def test_no_rows_before_the_first_test(tmp_path):
    environment = Environment(events=Events(), parsed_options=argparse.Namespace(run_id=""))
    environment.create_local_runner()
    assert webui.rows(telemetry.get_plugin(environment)) == []


def _template_args(client) -> dict:
    html = client.get("/").get_data(as_text=True)
    doc = html.split("window.templateArgs = ", 1)[1].split("\n", 1)[0]
    return json.loads(doc)


def test_the_index_loads_the_charts_script_and_lists_every_option_by_group(env):
    import users.shapes  # noqa: F401 - registers every load-side group

    client = env.web_ui.app.test_client()
    html = client.get("/").get_data(as_text=True)
    assert html.count('<script src="./pipeswarm/e2e/tab.js" defer></script></body>') == 1
    extra = _template_args(client)["extra_options"]
    ours = [o for g in GROUPS for o in g.options]
    shown = [o.dest for o in ours if o.web_ui]
    assert [o.dest for o in ours if not o.web_ui] == [
        "clock_sync",
        "fault_command",
    ]  # read at worker start; a shell command
    assert len(shown) >= 36 and {"mqtt_url", "device_interval", "mqtt_qos", "slo"} <= set(shown)
    assert {"shape", "shape_stages", "e2e_in_stats", "results_dir"} <= set(shown)
    # every one of them, in declaration order (group by group), each help led by its group
    assert [k for k in extra if k in shown] == shown
    assert list(extra)[: len(shown)] == shown
    assert extra["mqtt_qos"]["help_text"].startswith("Backends and devices: QoS")
    assert extra["stomp_destination"]["help_text"].startswith("STOMP subscriber: ")
    assert (
        extra["mqtt_url"]["is_secret"]
        and extra["jwt_secret"]["is_secret"]
        and not extra["device_interval"]["is_secret"]
    )


def test_the_charts_page_and_its_per_second_series(env):
    plugin = _deliver(env, range(1, 21), 4)
    client = env.web_ui.app.test_client()
    page = client.get("/pipeswarm/e2e/charts")
    assert page.status_code == 200 and page.mimetype == "text/html"
    body = page.get_data(as_text=True)
    assert 'fetch("series?from="' in body and "<script src" not in body  # self-contained
    script = client.get("/pipeswarm/e2e/tab.js")
    assert script.status_code == 200 and b"pipeswarm/e2e/charts" in script.get_data()
    assert client.get("/pipeswarm/e2e/series").get_json()["rows"] == []  # nothing closed yet
    plugin.timeseries.flush()  # close every second, as the end of a run does
    doc = client.get("/pipeswarm/e2e/series").get_json()
    assert doc["run"] == "run-1" and doc["from"] == 0 and doc["next"] >= 1
    rows = [r for r in doc["rows"] if r["delivered"]]
    assert sum(r["delivered"] for r in rows) == 20
    assert {r["path"] for r in rows} == {"mqtt→stomp"}
    assert all(r["p99"] == pytest.approx(4.0, rel=1e-2) for r in rows)
    assert all(r["lost"] == 0 for r in doc["rows"])
    again = client.get(f"/pipeswarm/e2e/series?from={doc['next']}").get_json()
    assert again["rows"] == [] and again["from"] == doc["next"]  # polled incrementally
