"""analyze.py on synthetic results folders: exact tables, SLO verdicts, baseline deltas, exit codes."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from report import build_report, load_run
from report._build import _setup_differences
from report._compare import Headline, compare
from report._hdr import buckets, mean_us
from report._load import OUTPUT_NAMES
from report.cli import main
from telemetry.hdr import Histogram
from tests.unit.test_report_synthetic import DEVICES, LOST_STOMP, SEQS, WS_DEVICES, build_run

SECTIONS = ("verdict", "run", "throughput", "requests", "e2e", "ledger", "schedule", "commands",
            "failures", "health")  # fmt: skip
CHARTS = ("throughput", "latency_over_time", "latency_distribution", "hops", "generator_cpu")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Built once: a run, its baseline (legs 1.5x faster), a run whose generator ran hot."""
    root = tmp_path_factory.mktemp("runs")
    return {
        "run": build_run(root / "run", scale=1.5),
        "base": build_run(root / "base", run_id="20260101-000000-base", scale=1.0),
        "hot": build_run(root / "hot", run_id="20260101-000000-hot0", hot=True),
        "bare": build_run(root / "bare", run_id="20260101-000000-bare", locust_csv=False),
    }


def _analyze(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _nearest_rank(values: list[int], pct: float) -> int:
    ordered = sorted(values)
    rank = max(1, round(pct / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def _one_line_error(code: int, err: str, *words: str) -> None:
    assert code == 2
    assert err.startswith("analyze.py: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for word in words:
        assert word in err, err


# --- tables -------------------------------------------------------------------------------------
def test_percentiles_by_path_and_hop_are_the_exact_hdr_figures(folders):
    built = folders["run"]
    report = build_report(load_run(built.folder), charts=False)
    e2e = json.loads((built.folder / "e2e.json").read_text())
    assert [p.path for p in report.paths] == ["mqtt→stomp", "mqtt→ws"]
    for p in report.paths:
        assert [h.label for h in p.hops] == ["total", "service", "mqtt", "kafka", "redis", "push"]
        for row in p.hops:
            decoded = Histogram.decode(e2e["paths"][p.path]["latency"][row.label]["hdr"])
            assert row.count == decoded.count
            assert row.get("p99") == decoded.percentile(99) / 1000
            assert row.get("p99.99") == decoded.percentile(99.99) / 1000
            assert row.max_ms == decoded.hdr.get_max_value() / 1000
        raw = built.total_us[p.path]
        assert p.total.count == len(raw)
        for title, pct in (("p50", 50), ("p90", 90), ("p99", 99), ("p99.9", 99.9)):
            exact = _nearest_rank(raw, pct) / 1000
            assert p.total.get(title) == pytest.approx(exact, rel=1e-3, abs=1e-3), title
        for leg in p.legs:
            raw_leg = built.legs_us[(p.path, leg.label)]
            assert leg.get("p95") == pytest.approx(_nearest_rank(raw_leg, 95) / 1000, rel=1e-3)
    assert report.all_paths.count == sum(len(v) for v in built.total_us.values())
    merged = sorted(v for values in built.total_us.values() for v in values)
    assert report.all_paths.get("p99") == pytest.approx(_nearest_rank(merged, 99) / 1000, rel=1e-3)
    assert report.figures.e2e_ms["p99_ms"] == report.all_paths.get("p99")


def test_the_ledger_table_counts_every_kind_of_trouble(folders):
    report = build_report(load_run(folders["run"].folder), charts=False)
    stomp, ws = report.paths
    t = stomp.totals
    assert t["published"] == len(DEVICES) * SEQS
    assert (t["delivered"], t["lost"], t["duplicated"], t["reordered"], t["late"]) == (
        len(DEVICES) * SEQS - LOST_STOMP, LOST_STOMP, 1, 1, 1,
    )  # fmt: skip
    assert stomp.loss_ratio == pytest.approx(LOST_STOMP / (len(DEVICES) * SEQS))
    assert [(d["device_id"], d["lost"]) for d in stomp.worst_lost] == [
        ("robot-0002", 5),
        ("robot-0005", 3),
    ]
    assert stomp.worst_total[0]["device_id"] == "robot-0004"  # its late message
    assert stomp.worst_total[0]["max_total_ms"] > 3000
    assert (ws.totals["delivered"], ws.totals["lost"]) == (len(WS_DEVICES) * SEQS, 0)
    assert report.figures.loss_ratio == pytest.approx(
        LOST_STOMP / (len(DEVICES + WS_DEVICES) * SEQS)
    )
    assert report.schedule_lag.count == len(DEVICES) * SEQS
    assert 0.05 <= report.schedule_lag.get("p50") <= 0.15  # 50-149 µs by construction


def test_requests_commands_and_failures_come_from_locusts_csv(folders):
    report = build_report(load_run(folders["run"].folder), charts=False)
    by_name = {r.name: r for r in report.requests}
    publish = by_name["publish:1:sensors/+/coordinates"]
    assert (publish.type, publish.requests, publish.failures) == ("MQTT", 1000, 0)
    assert publish.p50_ms is not None and publish.max_ms == pytest.approx(29.5)
    assert all(r.type != "E2E" for r in report.requests)
    assert {r.name for r in report.e2e_requests} >= {"mqtt→stomp", "mqtt→stomp:kafka"}
    assert [r.name for r in report.commands] == [
        "POST /api/commands/{id}",
        "command:orin/+/command",
    ]
    rest = by_name["POST /api/commands/{id}"]
    assert (rest.requests, rest.failures) == (22, 2)
    assert report.failures == [
        {"type": "HTTP", "name": "POST /api/commands/{id}",
         "error": "HTTPError('503 Service Unavailable')", "occurrences": 2}
    ]  # fmt: skip
    assert report.figures.failure_ratio == pytest.approx(2 / (1000 + 20 + 22))


def test_a_hot_generator_is_flagged(folders):
    report = build_report(load_run(folders["hot"].folder), charts=False)
    (local,) = report.health
    assert local.hot_seconds > 5 and local.cpu_max == 95.0
    assert local.lag_p99_ms and local.lag_p99_ms > 10
    text = " ".join(report.warnings)
    assert "ran above 90 % CPU" in text and "event-loop lag p99" in text
    calm = build_report(load_run(folders["run"].folder), charts=False)
    assert not calm.health[0].hot
    assert not any("CPU" in w or "loop lag" in w for w in calm.warnings)


# --- the command line ---------------------------------------------------------------------------
def test_analyze_writes_every_section_and_chart(folders, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, _ = _analyze(capsys, folders["run"].folder, "-o", out)
    assert code == 0
    html = (out / "report.html").read_text()
    for section in SECTIONS:
        assert f'<section id="{section}">' in html, section
    for chart in CHARTS:
        assert f'id="chart-{chart}"' in html
        assert (out / "charts" / f"{chart}.svg").read_text().lstrip().startswith("<?xml")
    assert html.count("<svg") == len(CHARTS)
    ids = re.findall(r'\sid="([^"]+)"', html)
    assert len(ids) == len(set(ids)), "inlined SVGs must not repeat element ids"
    # offline: nothing to run, nothing to fetch (only the SVG namespace URIs mention http)
    assert "<script" not in html and not re.search(r'(src|href)="(https?:)?//', html)
    assert not re.search(r"https?://(?!www\.w3\.org/)", html)
    summary = (out / "summary.md").read_text()
    assert "| mqtt→stomp | 1,000 |" not in summary  # counts are deliveries, not publishes
    stomp_row = next(line for line in summary.splitlines() if line.startswith("| mqtt→stomp |"))
    assert f"| {len(DEVICES) * SEQS - LOST_STOMP:,} | {LOST_STOMP} |" in stomp_row
    assert "![Throughput and users over time](charts/throughput.svg)" in summary
    assert "mqtt→stomp: delivered 992, lost 8" in stdout
    assert f"report: {out / 'report.html'}" in stdout
    assert not (folders["run"].folder / "report.html").exists()  # -o: nothing in the results


def test_analyze_writes_into_the_results_folder_by_default(folders, tmp_path, capsys):
    folder = tmp_path / "copy"
    shutil.copytree(folders["bare"].folder, folder)
    code, stdout, _ = _analyze(capsys, folder, "--no-charts")
    assert code == 0
    assert (folder / "report.html").is_file() and (folder / "summary.md").is_file()
    assert "--csv files were not found" in (folder / "report.html").read_text()
    code, _, _ = _analyze(capsys, folder, "--no-charts", "-q")  # its own output is not input
    assert code == 0


def test_slo_pass_and_fail_set_the_exit_code(folders, tmp_path, capsys):
    good = tmp_path / "good.yaml"
    good.write_text("e2e_p99_ms: 1000\nloss_ratio_max: 0.01\nfailure_ratio_max: 0.01\n"
                    "min_delivered_per_s: 10\nrequests:\n  publish:1:sensors/+/coordinates: {p95_ms: 50}\n")  # fmt: skip
    code, stdout, _ = _analyze(capsys, folders["run"].folder, "-o", tmp_path / "a", "--slo", good)
    assert code == 0
    assert "PASS — 5 objectives met" in stdout
    html = (tmp_path / "a" / "report.html").read_text()
    assert 'id="slo-table"' in html and html.count('<tr class="pass">') == 5
    assert 'class="verdict pass"' in html

    bad = tmp_path / "bad.yaml"
    bad.write_text("e2e_p99_ms: 1\nloss_ratio_max: 0\n")
    code, stdout, _ = _analyze(capsys, folders["run"].folder, "-o", tmp_path / "b", "--slo", bad)
    assert code == 1
    assert "FAIL — 2 of 2 objectives failed" in stdout
    html = (tmp_path / "b" / "report.html").read_text()
    assert html.count('<tr class="fail">') == 2 and 'class="verdict fail"' in html
    assert "**FAIL**" in (tmp_path / "b" / "summary.md").read_text()


def test_an_unknown_slo_key_is_exit_2_naming_the_key(folders, tmp_path, capsys):
    slo = tmp_path / "slo.yaml"
    slo.write_text("e2e_p99_ms: 10\ne2e_p97_ms: 10\n")
    code, _, err = _analyze(capsys, folders["run"].folder, "-o", tmp_path / "o", "--slo", slo)
    _one_line_error(code, err, "unknown key 'e2e_p97_ms'", str(slo))
    assert not (tmp_path / "o" / "report.html").exists()
    code, _, err = _analyze(capsys, folders["run"].folder, "--slo", tmp_path / "missing.yaml")
    _one_line_error(code, err, "does not exist")


def test_baseline_deltas_are_flagged_beyond_the_tolerance(folders, tmp_path, capsys):
    run, base = folders["run"].folder, folders["base"].folder
    code, stdout, _ = _analyze(capsys, run, "-o", tmp_path / "a", "--baseline", base)
    assert code == 0  # regressions alone do not fail unless asked
    report = build_report(load_run(run), baseline=load_run(base), charts=False)
    flagged = {d.label for d in report.regressions}
    assert {"end to end p50", "end to end p99", "mqtt→stomp p99", "mqtt→ws p50"} <= flagged
    p99 = next(d for d in report.deltas if d.label == "end to end p99")
    assert p99.change_pct == pytest.approx(
        100 * (report.figures.e2e_ms["p99_ms"] / p99.baseline - 1), rel=1e-6
    )
    assert 20 < p99.change_pct < 60  # legs 1.5x slower, schedule lag unchanged
    assert not any(d.flagged for d in report.deltas if d.label in ("loss", "delivered"))
    assert report.baseline_differs == []  # same scenario, users, workers, hosts
    html = (tmp_path / "a" / "report.html").read_text()
    assert 'id="baseline-table"' in html and "WORSE" in html
    assert "figures worse by more than 10 %" in stdout

    loose = build_report(load_run(run), baseline=load_run(base), tolerance_pct=80, charts=False)
    assert not any(d.flagged for d in loose.deltas if d.unit == "ms")
    code, _, _ = _analyze(
        capsys, run, "-o", tmp_path / "b", "--baseline", base, "--fail-on-regression"
    )
    assert code == 1
    code, _, _ = _analyze(
        capsys, base, "-o", tmp_path / "c", "--baseline", run, "--fail-on-regression"
    )
    assert code == 0  # faster than its baseline: nothing is worse


def test_compare_rules():
    def h(key, value, unit="ms", better="lower"):
        return Headline(key, key, value, unit, better)

    deltas = compare(
        [h("a", 1.2), h("b", 0.5, "ratio"), h("c", 90.0, "/s", "higher"), h("d", None), h("n", 1)],
        [
            h("a", 1.0),
            h("b", 0.0, "ratio"),
            h("c", 100.0, "/s", "higher"),
            h("d", 3.0),
            h("gone", 1),
        ],
        tolerance_pct=15,
        tolerance_ms=0.1,
    )
    by = {d.label: d for d in deltas}
    assert by["a"].flagged and by["a"].change_text == "+0.2 ms (+20.0 %)"
    assert by["b"].flagged and by["b"].change_text == "+50 %"  # from zero: any worsening
    assert not by["c"].flagged and by["c"].worse  # 10 % lower rate: within 15 %
    assert by["d"].flagged and by["d"].change_text == "only in baseline"
    assert not by["n"].flagged and by["n"].change_text == "new"
    assert "gone" in by
    small = compare([h("a", 1.2)], [h("a", 1.0)], tolerance_pct=10, tolerance_ms=0.5)
    assert not small[0].flagged  # 20 % but only 0.2 ms
    now = {"scenario": "pipeline", "user_count": 25, "worker_count": 2, "hosts": ["a"]}
    then = dict(now, scenario="mqtt_fleet", user_count=10)
    assert _setup_differences(now, then) == ["scenario: mqtt_fleet → pipeline", "users: 10 → 25"]


# --- unusable input ---------------------------------------------------------------------------
def _corrupt(folder: Path, name: str, edit) -> None:
    path = folder / name
    path.write_text(edit(path.read_text()))


def _edit_json(text: str, edit) -> str:
    doc = json.loads(text)
    edit(doc)
    return json.dumps(doc, ensure_ascii=False)


def _truncate_hdr(text: str) -> str:
    doc = json.loads(text)
    h = doc["paths"]["mqtt→stomp"]["latency"]["kafka"]
    h["hdr"] = h["hdr"][:40]
    return json.dumps(doc, ensure_ascii=False)


CORRUPTIONS = [
    ("run.json", lambda t: t[: len(t) // 2], ["run.json is not valid JSON (line"]),
    ("run.json", lambda t: "[1, 2]", ["run.json is not a pipeswarm file"]),
    ("run.json", lambda t: t.replace('"pipeswarm-run/1"', '"pipeswarm-run/9"'), ["format 'pipeswarm-run/9'"]),
    ("run.json", lambda t: t.replace('"duration_s"', '"duration"'), ["run.json has no 'duration_s'"]),
    ("e2e.json", _truncate_hdr, ["e2e.json paths['mqtt→stomp'].latency['kafka']", "cannot be decoded"]),
    ("e2e.json", lambda t: t.replace('"count": 992', '"count": 991', 1), ["holds 992 samples but says 991"]),
    ("e2e.json", lambda t: t.replace('"run_id": "2026', '"run_id": "1999', 1), ["mixes two runs"]),
    ("e2e.json", lambda t: _edit_json(t, lambda d: d["paths"]["mqtt→ws"]["totals"].update(lost="many")), ["paths['mqtt→ws'].totals: 'lost' should be an integer"]),
    ("e2e.json", lambda t: _edit_json(t, lambda d: d["paths"].update({"x→y": []})), ["paths['x→y'] should be an object"]),
    ("e2e.json", lambda t: _edit_json(t, lambda d: d.pop("paths")), ["e2e.json has no 'paths'"]),
    ("e2e.json", lambda t: t.replace('"format": "pipeswarm-e2e/1"', '"format": "x"'), ["e2e.json is not a pipeswarm file"]),
    ("timeseries.csv", lambda t: t.replace("\n", "\nx", 1), ["timeseries.csv line 2, column 'epoch_s', is not a number"]),
    ("timeseries.csv", lambda t: "", ["timeseries.csv is empty"]),
    ("timeseries.csv", lambda t: "a,b\n1,2\n", ["timeseries.csv has no column 'epoch_s'"]),
    ("locust_stats.csv", lambda t: t.replace("Request Count", "Requests"), ["locust_stats.csv has no column 'Request Count'"]),
    ("locust_stats.csv", lambda t: t.replace(",1000,", ",lots,", 1), ["locust_stats.csv", "'Request Count'", "not a number"]),
]  # fmt: skip


def _set(*path_and_value):
    """An edit that sets the field at ``path`` to ``value``."""
    *path, value = path_and_value

    def edit(doc):
        for key in path[:-1]:
            doc = doc[key]
        doc[path[-1]] = value

    return lambda text: _edit_json(text, edit)


#: Values of the wrong type in fields the report reads: each used to end in exit 3
#: ("internal error") or a traceback; now one sentence naming the file and the field.
WRONG_TYPES = [
    ("run.json", _set("ended_epoch_s", "x"), "run.json: ended_epoch_s should be a number"),
    ("run.json", _set("user_count", None), "run.json: user_count should be an integer, not None"),
    ("run.json", _set("user_classes_count", "MqttDevice", "x"), "run.json: user_classes_count['MqttDevice'] should be an integer"),
    ("run.json", _set("hosts", None), "run.json: hosts should be a list, not None"),
    ("run.json", _set("master", "argv", -1), "run.json: master.argv should be a list"),
    ("run.json", _set("e2e", "paths", 5), "run.json: e2e.paths should be a list"),
    ("e2e.json", _set("ignored", None), "e2e.json: ignored should be an object"),
    ("e2e.json", _set("ignored", "foreign_run", "x"), "e2e.json: ignored.foreign_run should be an integer"),
    ("e2e.json", _set("published", "messages", "x"), "e2e.json: published.messages should be an integer"),
    ("e2e.json", _set("paths", "mqtt→stomp", "modes", -1), "e2e.json: paths['mqtt→stomp'].modes should be a list"),
    ("e2e.json", _set("paths", "mqtt→stomp", "subscribers", "x"), "paths['mqtt→stomp'].subscribers should be an integer"),
    ("e2e.json", _set("paths", "mqtt→stomp", "snapshot", None), "paths['mqtt→stomp'].snapshot should be an object"),
    ("e2e.json", _set("paths", "mqtt→stomp", "snapshot", "regressions", "x"), "paths['mqtt→stomp'].snapshot.regressions should be an integer"),
    ("e2e.json", _set("paths", "mqtt→stomp", "worst_devices", "max_total_us", 0, "max_total_us", "x"), "worst_devices.max_total_us[0].max_total_us should be a number"),
    ("e2e.json", _set("paths", "mqtt→stomp", "worst_devices", "lost", 0, "device_id", None), "worst_devices.lost[0].device_id should be a string"),
    ("e2e.json", _set("subscribers", 0, -1), "e2e.json: subscribers[0] should be an object"),
    ("e2e.json", _set("loop_lag", "local", "count", "x"), "e2e.json: loop_lag['local'].count should be an integer"),
    ("run.json", _set("master", {}), "run.json: master has no 'hostname'"),
    ("e2e.json", _set("paths", "mqtt→stomp", "totals", {}), "e2e.json: paths['mqtt→stomp'].totals has no 'published'"),
    ("e2e.json", _set("published", {}), "e2e.json: published has no 'messages'"),
    ("e2e.json", _set("paths", "mqtt→stomp", "worst_devices", "lost", 0, {}), "worst_devices.lost[0] has no 'device_id'"),
    ("e2e.json", _set("subscribers", 0, "lost", None), "e2e.json: subscribers[0].lost should be an integer"),
    ("e2e.json", _set("schedule_lag", "p99_us", None), "e2e.json: schedule_lag.p99_us should be a number"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "edit", "words"), WRONG_TYPES)
def test_a_field_of_the_wrong_type_is_exit_2_naming_file_and_field(
    folders, tmp_path, capsys, name, edit, words
):
    folder = tmp_path / "run"
    shutil.copytree(folders["run"].folder, folder)
    _corrupt(folder, name, edit)
    code, _, err = _analyze(capsys, folder)
    _one_line_error(code, err, words)
    assert "internal error" not in err


@pytest.mark.parametrize(("name", "edit", "words"), CORRUPTIONS)
def test_a_corrupt_file_is_exit_2_with_one_sentence(folders, tmp_path, capsys, name, edit, words):
    folder = tmp_path / "run"
    shutil.copytree(folders["run"].folder, folder)
    _corrupt(folder, name, edit)
    code, _, err = _analyze(capsys, folder, "--no-charts")
    _one_line_error(code, err, *words)
    assert not (folder / "report.html").exists()


@pytest.mark.parametrize("missing", ["run.json", "e2e.json", "timeseries.csv"])
def test_a_missing_file_is_exit_2(folders, tmp_path, capsys, missing):
    folder = tmp_path / "run"
    shutil.copytree(folders["run"].folder, folder)
    (folder / missing).unlink()
    code, _, err = _analyze(capsys, folder)
    _one_line_error(code, err, f"{folder / missing} is missing")


def test_a_missing_empty_or_wrong_folder_is_exit_2(tmp_path, capsys, folders):
    code, _, err = _analyze(capsys, tmp_path / "nope")
    _one_line_error(code, err, "does not exist")
    (tmp_path / "empty").mkdir()
    code, _, err = _analyze(capsys, tmp_path / "empty")
    _one_line_error(code, err, "is empty")
    (tmp_path / "empty" / "report.html").write_text("old")  # our own output does not count
    code, _, err = _analyze(capsys, tmp_path / "empty")
    _one_line_error(code, err, "is empty")
    (tmp_path / "file").write_text("x")
    code, _, err = _analyze(capsys, tmp_path / "file")
    _one_line_error(code, err, "is not a folder")
    code, _, err = _analyze(capsys, folders["run"].folder, "--baseline", tmp_path / "nope")
    _one_line_error(code, err, "baseline: results folder", "does not exist")
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the output folder should be")
    code, _, err = _analyze(capsys, folders["run"].folder, "-o", blocker / "out")
    _one_line_error(code, err, "cannot write the report to")


def test_late_worker_rows_of_the_same_second_are_added_up(folders, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(folders["run"].folder, folder)
    lines = (folder / "timeseries.csv").read_text().splitlines()
    header, rows = lines[0], lines[1:]
    cols = header.split(",")
    first = next(r for r in rows if r.split(",")[cols.index("path")] == "mqtt→ws")
    late = first.split(",")
    late[cols.index("delivered")] = "7"
    (folder / "timeseries.csv").write_text("\n".join([header, *rows, ",".join(late)]) + "\n")
    run = load_run(folder)
    merged = next(r for r in run.timeseries if r.path == "mqtt→ws")
    assert merged.delivered == int(first.split(",")[cols.index("delivered")]) + 7
    assert len({(r.epoch_s, r.path) for r in run.timeseries}) == len(run.timeseries)
    assert "report.html" in OUTPUT_NAMES


def test_vectorised_bucket_reads_match_hdrh():
    h = Histogram()
    for i in range(1, 5000):
        h.record_us(i * i % 7_000_001 + 1)
    lowest, width, counts = buckets(h)
    assert int(counts.sum()) == h.count
    assert mean_us(h) == pytest.approx(h.hdr.get_mean_value(), rel=1e-12)
    assert int(lowest[-1] + width[-1] - 1) == h.hdr.get_max_value()
    assert int(lowest[0]) == h.hdr.get_min_value()
    assert mean_us(Histogram()) == 0.0


def test_a_snapshot_mode_path_reports_staleness_not_loss(tmp_path, capsys):
    built = build_run(tmp_path / "snap", snapshot=True)
    report = build_report(load_run(built.folder), charts=False)
    snap = next(p for p in report.paths if p.path == "mqtt→snap")
    assert snap.is_snapshot and snap.total is None
    assert [h.label for h in snap.hops] == ["staleness"]
    staleness = snap.hops[0]
    assert staleness.count == len(DEVICES) * SEQS // 10  # every device in each of 20 batches
    # sent 50 ms after the shown seq's t0 (minus the device's 0-4 ms offset), received 2 ms later
    assert (staleness.min_ms, staleness.max_ms) == (
        pytest.approx(48, abs=0.05),
        pytest.approx(52, abs=0.05),
    )
    assert snap.snapshot["batches"] == SEQS // 10 and snap.snapshot["conflated"] > 0
    assert snap.totals["lost"] == 0 and snap.loss_ratio is None
    assert len(snap.worst_staleness) == len(DEVICES)
    assert [b.label for b in report.batch_push] == ["*→snap"] and report.batch_push[0].count == 20
    code, _, _ = _analyze(capsys, built.folder, "-o", tmp_path / "out")
    assert code == 0
    html = (tmp_path / "out" / "report.html").read_text()
    assert "snapshot mode; conflation is by design" in html and "stalest value" in html
    assert "Snapshot batches" in html


def test_a_redis_bench_folder_reports_locust_beside_redis_benchmark(tmp_path, capsys):
    """``python -m bench redis`` writes redis_benchmark.json next to its run: the report shows
    both sides per operation and their ratio; a wrong field is one sentence, exit 2."""
    from bench.redis_bench import OPS, comparison

    built = build_run(tmp_path / "redis")
    stats = {
        name: {
            "Requests/s": "2000",
            "Average Response Time": "0.09",
            "99%": "0",
            "Failure Count": "0",
        }
        for _, name, _ in OPS
    }
    native = {
        label: {"rps": "30000", "p50_latency_ms": "0.095", "p99_latency_ms": "0.231"}
        for label, _, _ in OPS
    }
    doc = comparison(stats, native, users=5, operations=20000)
    assert [r["ratio"] for r in doc["rows"]] == [15.0] * len(OPS)
    (built.folder / "redis_benchmark.json").write_text(json.dumps(doc))
    code, _, _ = _analyze(capsys, built.folder, "-o", tmp_path / "out")
    assert code == 0
    html = (tmp_path / "out" / "report.html").read_text()
    section = html[html.index('id="redis-bench"') :]
    assert section.count("15.0×") == len(OPS) and "30,000" in section and "&lt; 1 ms" in section
    doc["rows"][1]["native_per_s"] = "fast"
    (built.folder / "redis_benchmark.json").write_text(json.dumps(doc))
    code, _, err = _analyze(capsys, built.folder, "-o", tmp_path / "out2")
    assert code == 2 and "redis_benchmark.json rows[1]" in err and "native_per_s" in err
