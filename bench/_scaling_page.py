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
    #: highest offered msg/s that met the rule (``pipeline-throughput``'s "best"; 0: none)
    sustained: int = 0
    #: p99 (ms) at the sustained rate
    p99: float = math.nan
    #: highest offered msg/s with nothing lost, whatever its p99 (0: none)
    kept_up: int = 0

    @property
    def top(self) -> dict[str, Any] | None:
        """The last step: the highest rate offered (the first that lost messages, if any)."""
        return self.steps[-1] if self.steps else None

    @property
    def limit(self) -> str:
        """At the highest rate offered: the busiest process, all the processes measured
        together, and the whole machine (other work included), each in % of one core."""
        step = self.top
        if not step or not step.get("cpu"):
            return ""
        name, pct = max(step["cpu"].items(), key=lambda kv: kv[1])
        ours = sum(step["cpu"].values())
        box = f", box {step['box_cpu']:.0f}" if "box_cpu" in step else ""
        return f"{name} {pct:.0f}, all {ours:.0f}{box} at {step['rate']:,}/s"


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
    confirm: bool = True,
) -> Cell:
    """Offer ``rates`` in rising order, as ``pipeline-throughput`` does: the sustained
    rate is the highest one that met the rule; ``kept_up`` the highest with nothing
    lost. A step that lost messages ends the cell (with ``keep_going`` every rate is
    offered): past it the backlog only grows, and it would count against the next.

    With ``confirm`` a rate that fails is offered once more and the second step
    stands: on a shared machine one neighbour's burst can spoil one step's p99.
    """
    for rate in rates:
        step = run_step(rate)
        ok = sustained(step, p99_limit_ms)
        step["sustained"] = ok
        cell.steps.append(step)
        if report:
            report(cell, step, ok)
        if not ok and confirm:
            step = run_step(rate)
            ok = sustained(step, p99_limit_ms)
            step["sustained"], step["retry"] = ok, True
            cell.steps.append(step)
            if report:
                report(cell, step, ok)
        if ok:
            cell.sustained, cell.p99 = rate, step["p99"]
        if step["lost"] == 0:
            cell.kept_up = rate
        elif not keep_going:
            break
    return cell


def _ratio(cells: list[Cell], cell: Cell, key: str) -> str:
    """``key`` (a rate) over the same consumer count's next smaller partition count."""
    prev = [c for c in cells if c.consumers == cell.consumers and c.partitions < cell.partitions]
    if not prev:
        return ""
    before = getattr(max(prev, key=lambda c: c.partitions), key)
    return f"{getattr(cell, key) / before:.2f}x" if before and getattr(cell, key) else ""


def _rows(cells: list[Cell]) -> list[list[str]]:
    rows = []
    for c in sorted(cells, key=lambda c: (c.consumers, c.partitions)):
        top = c.top["rate"] if c.top else 0
        # the highest rate offered held: the real ceiling is higher
        more = {k: ">=" if getattr(c, k) == top and top else "" for k in ("sustained", "kept_up")}
        rows.append(
            [
                str(c.partitions),
                str(c.consumers),
                f"{more['sustained']}{c.sustained:,}",
                _ratio(cells, c, "sustained"),
                "" if math.isnan(c.p99) else f"{c.p99:.1f}",
                f"{more['kept_up']}{c.kept_up:,}",
                _ratio(cells, c, "kept_up"),
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
    "0 lost up to msg/s",
    "vs fewer partitions",
    "CPU % of a core at the highest rate offered: busiest process, all measured, whole box",
]
N = len(HEADER) - 1  # columns before the free-text last one


def markdown_table(cells: list[Cell]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(r) + " |" for r in _rows(cells)]
    return "\n".join(lines)


def text_table(cells: list[Cell]) -> str:
    rows = [[*HEADER[:N], "busiest process at the top rate"], *_rows(cells)]
    widths = [max(len(r[i]) for r in rows) for i in range(N)]
    return "\n".join(
        "  ".join(v.rjust(w) for v, w in zip(r[:N], widths, strict=True)) + "  " + r[N]
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
            kept = {**style, "label": f"{label}, 0 lost", "linestyle": "--", "marker": "x"}
            rate_ax.plot(x, [c.kept_up for c in line], **kept)
            p99_ax.plot(x, [c.p99 for c in line], **style)
        partitions = sorted({c.partitions for c in cells})
        for ax, ylabel in ((rate_ax, "msg/s"), (p99_ax, "p99 ms at the sustained rate")):
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
(intended send time to receive) stayed under {limit:g} ms (<code>pipeline-throughput</code>'s
rule; a failed rate is offered once more). Solid lines: the highest rate sustained; dashed:
the highest rate with nothing lost, whatever its p99. Rates rise until one loses messages.
“&gt;=” marks a figure that held at the highest rate offered: the ceiling is higher.
“vs fewer partitions” is the figure over the same consumer count's row above.</p>
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
