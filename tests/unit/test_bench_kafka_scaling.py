"""``bench kafka-scaling``'s rate search, table and page on synthetic steps (no servers)."""

from __future__ import annotations

import math
import re

import pytest

from bench._scaling_page import Cell, find_sustained, markdown_table, text_table, write_page
from bench.kafka_scaling import main
from pipeline import __main__ as cli
from pipeline.stack import Stack


def _fake(limit: int, p99: float = 20.0, flaky: frozenset[int] = frozenset(),
          slow: frozenset[int] = frozenset()):  # fmt: skip
    """A step function: loses messages above ``limit``; rates in ``flaky`` fail once,
    rates in ``slow`` always miss the p99 limit (300 ms) but lose nothing."""
    calls: list[int] = []

    def step(rate: int) -> dict:
        calls.append(rate)
        lost = rate > limit or (rate in flaky and calls.count(rate) == 1)
        return {"rate": rate, "published": rate, "lost": 7 if lost else 0,
                "p50": p99 / 2, "p99": 300.0 if rate in slow else p99,
                "cpu": {"kafka": rate / 100, "bridge": 5.0}, "box_cpu": 150.0}  # fmt: skip

    return step, calls


def test_rates_rise_until_a_confirmed_loss_and_the_best_held_rate_is_sustained():
    step, calls = _fake(limit=4000, flaky=frozenset({1000}), slow=frozenset({4000}))
    rates = [500, 1000, 2000, 4000, 8000, 16000]
    cell = find_sustained(Cell(4, 2), step, rates, p99_limit_ms=250)
    # 1000 failed once and held on the retry; 4000 missed p99 twice but lost nothing;
    # 8000 lost twice and ended the cell: 16000 was never offered
    assert calls == [500, 1000, 1000, 2000, 4000, 4000, 8000, 8000]
    assert (cell.sustained, cell.p99, cell.kept_up) == (2000, 20.0, 4000)
    assert cell.limit == "kafka 80, all 85, box 150 at 8,000/s"


def test_p99_over_the_limit_is_not_sustained_and_no_confirm_offers_each_rate_once():
    step, calls = _fake(limit=1000, p99=300.0)
    cell = find_sustained(Cell(1, 1), step, [500, 1000, 2000], p99_limit_ms=250, confirm=False)
    assert calls == [500, 1000, 2000]
    assert (cell.sustained, cell.kept_up) == (0, 1000) and math.isnan(cell.p99)


def _grid() -> list[Cell]:
    cells = []
    for consumers, ceiling in ((1, 2000), (2, 3000)):
        for partitions in (1, 2, 4):
            step, _ = _fake(limit=min(ceiling, 1000 * partitions))
            cell = find_sustained(Cell(partitions, consumers), step, [1000, 2000, 3000, 4000], 250)
            cells.append(cell)
    return cells


def test_the_table_shows_the_ratio_to_fewer_partitions_per_consumer_count():
    md = markdown_table(_grid())
    rows = [[v.strip() for v in r.strip("|").split("|")] for r in md.splitlines()[2:]]
    assert [r[:7] for r in rows] == [
        ["1", "1", "1,000", "", "20.0", "1,000", ""],
        ["2", "1", "2,000", "2.00x", "20.0", "2,000", "2.00x"],
        ["4", "1", "2,000", "1.00x", "20.0", "2,000", "1.00x"],
        ["1", "2", "1,000", "", "20.0", "1,000", ""],
        ["2", "2", "2,000", "2.00x", "20.0", "2,000", "2.00x"],
        ["4", "2", "3,000", "1.50x", "20.0", "3,000", "1.50x"],
    ]
    assert rows[0][7] == "kafka 20, all 25, box 150 at 2,000/s"  # the step that lost
    assert "kafka 20, all 25" in text_table(_grid()).splitlines()[1]


def test_a_cell_that_never_failed_says_its_ceiling_is_higher():
    step, _ = _fake(limit=10**9)
    cell = find_sustained(Cell(8, 4), step, [1000, 2000], 250)
    assert "| >=2,000 |" in markdown_table([cell])


def test_the_page_is_one_offline_file_with_the_table_and_one_line_per_consumer_count(tmp_path):
    page = write_page(tmp_path, _grid(), "Kafka scaling", "measured under contention",
                      "python -m bench kafka-scaling --partitions 1,2,4", 250)  # fmt: skip
    html = page.read_text()
    assert html.count("<tr><td>") == 6 and "measured under contention" in html
    svg = html[html.index("<svg") : html.index("</svg>")]
    assert re.search(r"1 consumer\b", svg) and "2 consumers" in svg
    assert "2 consumers, 0 lost" in svg and "p99 ms at the sustained rate" in svg
    # nothing to fetch: no scripts, no external stylesheets or images
    assert "<script" not in html and not re.search(r'(src|href)="https?:', html)
    assert (tmp_path / "kafka_scaling.svg").exists() and (tmp_path / "cells.json").exists()


def test_bad_grid_values_are_one_sentence_and_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--partitions", "1,0"])
    assert exc.value.code == 2
    assert "every number must be at least 1" in capsys.readouterr().err


def test_pipeline_up_partitions_and_consumers_reach_the_stack(tmp_path, monkeypatch):
    started: list[Stack] = []
    monkeypatch.setattr(Stack, "start", lambda self: started.append(self) or self)
    argv = ["--state-dir", str(tmp_path), "up", "--ports", "auto", "--detach",
            "--partitions", "3", "--consumers", "2"]  # fmt: skip
    assert cli.main(argv) == 0
    assert (started[0].partitions, started[0].consumers) == (3, 2)


def test_replot_renders_the_page_again_from_cells_json(tmp_path, capsys):
    write_page(tmp_path, _grid(), "old title", "", "cmd", 250)
    (tmp_path / "command.txt").write_text("python -m bench kafka-scaling --kafka-only\n")
    (tmp_path / "index.html").unlink()
    assert main(["--replot", str(tmp_path), "--kafka-only", "--note", "replotted"]) == 0
    html = (tmp_path / "index.html").read_text()
    assert "Apache Kafka alone" in html and "replotted" in html and "--kafka-only" in html
    assert html.count("<tr><td>") == 6 and "3,000" in capsys.readouterr().out
