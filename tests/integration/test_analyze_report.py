"""A short real run on the embedded stack, then analyze.py: every section there, numbers = e2e.json."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from report import build_report, load_run
from report._render import _ms
from report.cli import main as analyze
from telemetry.hdr import Histogram
from tests.swarm import run_locust

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SECTIONS = ("verdict", "run", "throughput", "requests", "e2e", "ledger", "schedule", "commands",
            "failures", "health")  # fmt: skip
CHARTS = ("throughput", "latency_over_time", "latency_distribution", "hops", "generator_cpu")
SLO = """
e2e_p99_ms: 10000
loss_ratio_max: 0.01
failure_ratio_max: 0.05
min_delivered_per_s: 10
requests:
  "publish:1:sensors/+/coordinates": {p95_ms: 5000}
"""


@pytest.fixture(scope="module")
def finished_run(stack, tmp_path_factory):
    """``locustfiles/pipeline.py`` for 15 s against the stack, with --csv and --html."""
    tmp = tmp_path_factory.mktemp("analyze")
    out = tmp / "run"
    run_locust(stack, out, "locustfiles/pipeline.py", "-u", "12", "-r", "12", "-t", "15s")
    (tmp / "slo.yaml").write_text(SLO)
    return out, tmp / "slo.yaml"


def _cells(html: str, table_id: str, first_cell: str) -> list[str]:
    """Text of the cells of the row of ``table_id`` whose first cell is ``first_cell``."""
    table = re.search(rf'<table[^>]*id="{table_id}".*?</table>', html, re.S)
    assert table, table_id
    for row in re.findall(r"<tr.*?</tr>", table.group(0), re.S):
        cells = [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td.*?</td>", row, re.S)]
        if cells and cells[0].startswith(first_cell):
            return cells
    raise AssertionError(f"no row {first_cell!r} in {table_id}")


def test_a_real_run_reports_every_section_with_the_numbers_of_e2e_json(finished_run, capsys):
    folder, slo = finished_run
    out = folder.parent / "report"
    code = analyze([str(folder), "-o", str(out), "--slo", str(slo)])
    stdout = capsys.readouterr().out
    assert code == 0, stdout
    html = (out / "report.html").read_text()
    for section in SECTIONS:
        assert f'<section id="{section}">' in html, section
    for chart in CHARTS:
        assert f'id="chart-{chart}"' in html, chart
        assert (out / "charts" / f"{chart}.svg").stat().st_size > 5_000

    e2e = json.loads((folder / "e2e.json").read_text())
    assert set(e2e["paths"]) >= {"mqtt→stomp", "mqtt→ws"}
    for path, entry in e2e["paths"].items():
        total = Histogram.decode(entry["latency"]["total"]["hdr"])
        assert total.count > 100, path
        cells = _cells(html, "e2e-paths-table", path)
        # path, count, min, mean, p50, p90, p95, p99, p99.9, p99.99, max
        assert cells[1] == f"{total.count:,}"
        assert cells[4] == _ms(total.percentile(50) / 1000)
        assert cells[7] == _ms(total.percentile(99) / 1000)
        assert cells[10] == _ms(total.hdr.get_max_value() / 1000)
        assert {"mqtt", "kafka", "redis", "push"} <= set(entry["latency"])  # every leg stamped
        ledger = _cells(html, "ledger-table", path)
        t = entry["totals"]
        assert ledger[1:5] == [f"{t['published']:,}", f"{t['expected']:,}", f"{t['delivered']:,}",
                               f"{t['lost']:,}"]  # fmt: skip
        assert t["delivered"] == total.count > 0
    sched = _cells(html, "schedule-table", "schedule lag")
    assert sched[1] == f"{e2e['schedule_lag']['count']:,}" and e2e["schedule_lag"]["count"] > 100

    report = build_report(load_run(folder), charts=False)
    by_name = {r.name: r for r in report.requests}
    publish = by_name["publish:1:sensors/+/coordinates"]
    assert publish.requests > 100 and publish.p95_ms is not None
    assert _cells(html, "requests-table", "MQTT")  # the request table has rows
    assert report.commands and all(c.requests > 0 for c in report.commands)
    assert 'id="commands-table"' in html
    assert report.health and report.health[0].cpu_mean and report.health[0].lag_p99_ms is not None
    assert _cells(html, "health-table", "local")[2].endswith("%")
    assert report.meta["scenario"] == "pipeline" and report.meta["user_count"] == 12
    assert "PASS" in stdout and f"report: {out / 'report.html'}" in stdout
