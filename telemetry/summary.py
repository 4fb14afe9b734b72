"""``summary.csv``: a run's headline figures as ``metric,value,unit`` rows, and the same on the console.

The Go STOMP load tool writes a ``load_test_result.csv`` of this shape; this is
ours, for any run: connect time of every connecting user kind (Locust's
``connect`` entries, P50/P90/P95/P99 in ms), per end-to-end path the
deliveries, losses and total latency P50/P90/P95/P99 (the ledger's HDR
histograms, ms), and the event-loop lag P99 of each generator process (a
stalled loop distorts every latency it measured). Rows are written by the
plugin with ``e2e.json`` (docs/results.md) and printed after Locust's tables.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["summary_rows", "write_summary", "format_summary"]

Row = tuple[str, float | int | str, str]
_PCTS = (50, 90, 95, 99)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text.lower()).strip("_")


def summary_rows(e2e: Mapping[str, Any], stats: Any, duration_s: float) -> list[Row]:
    """The rows of one run: ``e2e`` is ``e2e.json``'s document, ``stats`` Locust's ``RequestStats``."""
    rows: list[Row] = [("duration", round(duration_s, 1), "s")]
    for (name, method), entry in sorted(stats.entries.items()):
        if name != "connect" and not name.startswith("connect:"):
            continue
        key = _slug(f"{method} {name}")
        rows.append((f"{key}_count", entry.num_requests, "requests"))
        rows.append((f"{key}_failures", entry.num_failures, "requests"))
        for p in _PCTS:
            value = entry.get_response_time_percentile(p / 100) if entry.num_requests else 0
            rows.append((f"{key}_p{p}", value, "ms"))
    rows.append(("published", e2e.get("published", {}).get("messages", 0), "messages"))
    rows.append(("ledger_subscribers", len(e2e.get("subscribers", ())), "subscribers"))
    for path, entry in e2e.get("paths", {}).items():
        key = _slug(path.replace("→", " to "))
        totals = entry.get("totals", {})
        for counter in ("delivered", "lost", "duplicated", "reordered", "late"):
            rows.append((f"{key}_{counter}", totals.get(counter, 0), "messages"))
        if duration_s > 0:
            rate = totals.get("delivered", 0) / duration_s
            rows.append((f"{key}_delivered_per_s", round(rate, 1), "messages/s"))
        total = entry.get("latency", {}).get("total")
        if total and total.get("count"):
            for p in _PCTS:
                rows.append((f"{key}_latency_p{p}", round(total[f"p{p}_us"] / 1000, 3), "ms"))
    for source, lag in e2e.get("loop_lag", {}).items():
        if lag.get("count"):
            rows.append((f"loop_lag_p99_{_slug(source)}", round(lag["p99_us"] / 1000, 3), "ms"))
    return rows


def write_summary(path: Path, rows: Iterable[Row]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(("metric", "value", "unit"))
    writer.writerows(rows)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(buf.getvalue())
    tmp.replace(path)


def format_summary(rows: Iterable[Row]) -> str:
    """The console block: one ``metric  value unit`` line per row."""
    lines = ["pipeswarm summary (also summary.csv in the results folder):"]
    lines += [f"  {metric:<48} {value:>12} {unit}" for metric, value, unit in rows]
    return "\n".join(lines)
