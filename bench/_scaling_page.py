"""``kafka-scaling``'s results: the sustained-rate rule, the table, the chart, the HTML page.

Kept apart from the measuring so a test can feed it synthetic cells. The chart is
matplotlib rendered to SVG with the report's own style and id prefixing
(``report._charts``), inlined into one self-contained page (no CDN, no script).
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

from report._charts import _PALETTE, _STYLE, _svg

__all__ = ["Cell", "find_sustained", "markdown_table", "text_table", "write_page"]


@dataclass
class Cell:
    """One (partitions, consumers) point: every step run, and what they add up to."""

    partitions: int
    consumers: int
    steps: list[dict[str, Any]] = field(default_factory=list)
    #: highest offered msg/s sustained before the first step that was not (0: none)
    sustained: int = 0
    #: p99 (ms) at the sustained rate
    p99: float = math.nan
    #: the first step not sustained (None: every rate offered was sustained)
    failed: dict[str, Any] | None = None

    @property
    def limit(self) -> str:
        """The busiest process at the first rate not sustained (else at the last rate)."""
        step = self.failed or (self.steps[-1] if self.steps else None)
        if not step or not step.get("cpu"):
            return ""
        name, pct = max(step["cpu"].items(), key=lambda kv: kv[1])
        box = f", box {step['box_cpu']:.0f}" if "box_cpu" in step else ""
        return f"{name} {pct:.0f} %{box} at {step['rate']:,}/s"


def sustained(step: dict[str, Any], p99_limit_ms: float) -> bool:
    """``pipeline-throughput``'s rule: every message arrived and p99 under the limit."""
    return step["lost"] == 0 and step["p99"] < p99_limit_ms


def find_sustained(
    cell: Cell,
    run_step: Callable[[int], dict[str, Any]],
    rates: list[int],
    p99_limit_ms: float,
    keep_going: bool = False,
    report: Callable[[Cell, dict[str, Any], bool], None] | None = None,
) -> Cell:
    """Offer ``rates`` in rising order; the cell's sustained rate is the highest one
    sustained before the first that is not (later steps run only with ``keep_going``:
    a backlog left by a failed step would count against the next)."""
    for rate in rates:
        step = run_step(rate)
        ok = sustained(step, p99_limit_ms)
        step["sustained"] = ok
        cell.steps.append(step)
        if report:
            report(cell, step, ok)
        if ok and cell.failed is None:
            cell.sustained, cell.p99 = rate, step["p99"]
        elif not ok and cell.failed is None:
            cell.failed = step
            if not keep_going:
                break
    return cell


def _ratio(cells: list[Cell], cell: Cell) -> str:
    """Sustained rate over the same consumer count's previous (half as many) partitions."""
    prev = [c for c in cells if c.consumers == cell.consumers and c.partitions < cell.partitions]
    if not prev:
        return ""
    before = max(prev, key=lambda c: c.partitions)
    if not before.sustained or not cell.sustained:
        return ""
    return f"{cell.sustained / before.sustained:.2f}x"


def _rows(cells: list[Cell]) -> list[list[str]]:
    rows = []
    for c in sorted(cells, key=lambda c: (c.consumers, c.partitions)):
        top = "" if c.failed else ">="  # never failed: the real ceiling is higher
        rows.append(
            [
                str(c.partitions),
                str(c.consumers),
                f"{top}{c.sustained:,}",
                _ratio(cells, c),
                "" if math.isnan(c.p99) else f"{c.p99:.1f}",
                c.limit,
            ]
        )
    return rows


HEADER = [
    "partitions",
    "consumers",
    "sustained msg/s",
    "vs fewer partitions",
    "p99 ms at it",
    "busiest process (CPU % of a core) at the first rate not sustained",
]


def markdown_table(cells: list[Cell]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(r) + " |" for r in _rows(cells)]
    return "\n".join(lines)


def text_table(cells: list[Cell]) -> str:
    rows = [HEADER[:5] + ["busiest process"], *_rows(cells)]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return "\n".join(
        "  ".join(v.rjust(w) for v, w in zip(r[:5], widths, strict=True)) + "  " + r[5]
        for r in rows
    )


def chart_svg(cells: list[Cell], title: str) -> tuple[str, str]:
    """Sustained msg/s and its p99 against partitions, one line per consumer count."""
    rc: Any = {**_STYLE, "svg.hashsalt": "pipeswarm-kafka-scaling"}
    with matplotlib.rc_context(rc):
        from matplotlib.figure import Figure

        fig = Figure(figsize=(9.0, 3.6), layout="constrained")
        rate_ax, p99_ax = fig.subplots(1, 2)
        for i, consumers in enumerate(sorted({c.consumers for c in cells})):
            line = sorted(
                (c for c in cells if c.consumers == consumers), key=lambda c: c.partitions
            )
            x = [c.partitions for c in line]
            label = f"{consumers} consumer{'s' if consumers > 1 else ''}"
            style = {"color": _PALETTE[i % len(_PALETTE)], "marker": "o", "label": label}
            rate_ax.plot(x, [c.sustained for c in line], **style)
            p99_ax.plot(x, [c.p99 for c in line], **style)
        partitions = sorted({c.partitions for c in cells})
        for ax, ylabel in ((rate_ax, "sustained msg/s"), (p99_ax, "p99 ms at that rate")):
            ax.set_xscale("log", base=2)
            ax.set_xticks(partitions, [str(p) for p in partitions])
            ax.set_xlabel("partitions")
            ax.set_ylabel(ylabel)
            ax.set_ylim(bottom=0)
        rate_ax.legend()
        fig.suptitle(title)
        return _svg(fig, "kafka-scaling")


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto;color:#222}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.2em .6em;text-align:right}}
code,pre{{background:#f4f4f4}}</style></head><body>
<h1>{title}</h1>
<p>{note}</p>
<pre>{command}</pre>
{svg}
<table id="cells"><tr>{head}</tr>
{rows}
</table>
<p>A rate is <em>sustained</em> when every message offered in the step arrived and p99
(intended send time to receive) stayed under {limit:g} ms; rates rise until the first
that is not. “&gt;=” marks a cell that sustained every rate offered.</p>
</body></html>
"""


def write_page(out: Path, cells: list[Cell], title: str, note: str, command: str,
               p99_limit_ms: float) -> Path:  # fmt: skip
    """``out/index.html`` (table + inline chart), ``out/kafka_scaling.svg``, ``out/cells.json``."""
    out.mkdir(parents=True, exist_ok=True)
    full, inline = chart_svg(cells, title)
    (out / "kafka_scaling.svg").write_text(full, encoding="utf-8")
    (out / "cells.json").write_text(
        json.dumps([asdict(c) for c in cells], indent=1, default=float), encoding="utf-8"
    )
    esc = html.escape
    page = PAGE.format(
        title=esc(title),
        note=esc(note),
        command=esc(command),
        svg=inline,
        head="".join(f"<th>{esc(h)}</th>" for h in HEADER),
        rows="\n".join(
            "<tr>" + "".join(f"<td>{esc(v)}</td>" for v in r) + "</tr>" for r in _rows(cells)
        ),
        limit=p99_limit_ms,
    )
    path = out / "index.html"
    path.write_text(page, encoding="utf-8")
    return path
