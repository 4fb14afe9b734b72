"""The report's charts: matplotlib, rendered to SVG and inlined into ``report.html``.

Why SVG inlined: the report stays one self-contained file that opens offline
(no CDN, no JavaScript, nothing to fetch), the charts stay sharp at any zoom or
print size, their text is real text (``svg.fonttype: none``: selectable,
searchable, small), and a test can find each chart in the DOM. The same SVG is
written to ``charts/<name>.svg`` for ``summary.md`` and for reuse.

Each chart gets its own ``svg.hashsalt``, so the ids matplotlib generates
(clip paths, markers) are unique within the page and stable between runs.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from report._hdr import buckets
from report._health import HOT_CPU_PERCENT
from report._load import LocustCsv, Run, TimeseriesRow
from report._tables import PathTables, hop_key
from telemetry.hdr import Histogram
from telemetry.stages import LEG_COLOUR, split_path

__all__ = ["CHART_NAMES", "Chart", "render_charts"]

#: Every chart the report can show, in page order (``charts/<name>.svg``).
CHART_NAMES = ("throughput", "latency_over_time", "latency_distribution", "hops", "generator_cpu")

_STYLE: dict[str, Any] = {
    "svg.fonttype": "none",
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Helvetica", "Arial", "Liberation Sans"],
    "font.size": 9.0,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlesize": 10.0,
    "axes.titleweight": "bold",
    "legend.fontsize": 8.0,
    "legend.frameon": False,
    "lines.linewidth": 1.3,
}
_PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"]
_WIDTH_IN = 9.0


@dataclass(frozen=True, slots=True)
class Chart:
    """One rendered chart: ``svg`` is the ``<svg>`` element alone, for inlining."""

    name: str
    title: str
    caption: str
    svg: str
    file: str


_ID_REF = re.compile(r'(\bid="|url\(#|href="#)([^")]+)')


def _svg(fig: Figure, name: str) -> tuple[str, str]:
    """The SVG document and its ``<svg>`` element; ids prefixed with ``name``.

    matplotlib numbers its element ids per figure (``axes_1``, ``line2d_3``…): two
    charts inlined in one page would repeat them, and ``url(#…)`` clip paths would
    point into the wrong chart.
    """
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    ids = set(re.findall(r'\bid="([^"]+)"', text))
    text = _ID_REF.sub(
        lambda m: f"{m[1]}{name}-{m[2]}" if m[2] in ids else m[0],
        text,
    )
    # inline: no XML prolog; no RDF metadata (namespace URLs a reader might mistake for fetches)
    inline = re.sub(r"<metadata>.*?</metadata>\s*", "", text[text.index("<svg") :], flags=re.S)
    return text, inline


def _colour(i: int) -> str:
    return _PALETTE[i % len(_PALETTE)]


_Colour = Callable[[str], str]


def _path_colours(names: Iterable[str]) -> _Colour:
    """One colour per path, the same in every chart (sorted names, like the tables)."""
    fixed = {name: _colour(i) for i, name in enumerate(sorted(set(names)))}
    return lambda name: fixed.get(name, "#777")


# --- time axes --------------------------------------------------------------------------------
class _Clock:
    """Elapsed time from the run's start, in seconds or (long runs) minutes."""

    def __init__(self, run: Run) -> None:
        self.start = math.floor(float(run.run.get("started_epoch_s", 0)))
        span = max((r.elapsed_s for r in run.timeseries), default=0)
        self.scale, self.label = (
            (60.0, "minutes since start") if span > 900 else (1.0, "seconds since start")
        )

    def x(self, elapsed_s: Iterable[float]) -> np.ndarray:
        return np.asarray(list(elapsed_s), dtype=float) / self.scale


def _per_second(rows: list[TimeseriesRow]) -> list[TimeseriesRow]:
    """One row per second (users, workers, CPU are the same on every path's row)."""
    out: dict[int, TimeseriesRow] = {}
    for r in rows:
        out.setdefault(r.epoch_s, r)
    return [out[k] for k in sorted(out)]


def _paths(rows: list[TimeseriesRow]) -> list[str]:
    return list(dict.fromkeys(r.path for r in rows if r.path))


def _shade_faults(ax: Any, run: Run, clock: _Clock) -> None:
    """The ``--faults`` phases as shaded spans (from the action until the part was back)."""
    for phase in (run.faults or {}).get("phases", []):
        start, end = phase.get("started_epoch_s"), phase.get("ended_epoch_s")
        if start is None:
            continue
        end = max(float(end or start), float(start) + 0.5)  # an instant restart stays visible
        x0, x1 = clock.x([float(start) - clock.start, end - clock.start])
        ax.axvspan(x0, x1, color="#e8a33d", alpha=0.25, linewidth=0)
        ax.annotate(phase.get("spec", "").split("@")[0], (x0, 1), xycoords=("data", "axes fraction"),
                    fontsize=7, va="top", ha="left", rotation=90, color="#8a5a12")  # fmt: skip


# --- charts ----------------------------------------------------------------------------------
def _throughput(run: Run, clock: _Clock, paths: list[str], colour: _Colour) -> Figure | None:
    rows = run.timeseries
    if not rows:
        return None
    seconds = _per_second(rows)
    lost = any(r.lost_so_far for r in rows if r.path)
    fig = Figure(figsize=(_WIDTH_IN, 5.2 if lost else 4.2), layout="constrained")
    axes = fig.subplots(
        3 if lost else 2, 1, sharex=True, height_ratios=[3, 1.2, 1.2][: 3 if lost else 2]
    )
    ax = axes[0]
    published: dict[int, dict[str, int]] = {}
    for r in rows:
        src = split_path(r.path)[0] if r.path else "*"
        by_src = published.setdefault(r.epoch_s, {})
        by_src[src] = max(by_src.get(src, 0), r.published)
    secs = sorted(published)
    by_sec = {s: r for s, r in ((r.epoch_s, r) for r in seconds)}
    ax.plot(
        clock.x(by_sec[s].elapsed_s for s in secs),
        [sum(v for k, v in published[s].items() if k != "*") or published[s].get("*", 0) for s in secs],
        color="#444", linestyle="--", label="published (all devices)",
    )  # fmt: skip
    for path in paths:
        pr = [r for r in rows if r.path == path]
        ax.plot(clock.x(r.elapsed_s for r in pr), [r.delivered for r in pr], color=colour(path),
                label=f"delivered {path}")  # fmt: skip
    rps = _locust_rps(run.locust, clock)
    if rps is not None:
        ax.plot(
            rps[0],
            rps[1],
            color="#999",
            linewidth=1.0,
            label="Locust requests/s (E2E entries left out)",
        )
    ax.set_ylabel("messages / s")
    ax.set_ylim(bottom=0)
    _shade_faults(ax, run, clock)
    fig.suptitle("Throughput and users", fontweight="bold", fontsize=10)
    fig.legend(loc="outside lower center", ncols=min(4, len(paths) + 2))
    ax = axes[1]
    ax.step(
        clock.x(r.elapsed_s for r in seconds),
        [r.users for r in seconds],
        where="post",
        color="#555",
    )
    ax.set_ylabel("users")
    ax.set_ylim(bottom=0)
    if run.run.get("worker_count"):
        twin = ax.twinx()
        twin.step(clock.x(r.elapsed_s for r in seconds), [r.workers for r in seconds], where="post",
                  color=_PALETTE[4], linewidth=1.0)  # fmt: skip
        twin.set_ylabel("workers", color=_PALETTE[4])
        twin.set_ylim(bottom=0)
        twin.grid(False)
    if lost:
        ax = axes[2]
        for path in paths:
            pr = [r for r in rows if r.path == path]
            ax.plot(
                clock.x(r.elapsed_s for r in pr), [r.lost_so_far for r in pr], color=colour(path)
            )
        ax.set_ylabel("lost so far")
        ax.set_ylim(bottom=0)
    axes[-1].set_xlabel(clock.label)
    return fig


def _locust_rps(locust: LocustCsv | None, clock: _Clock) -> tuple[np.ndarray, list[float]] | None:
    """Requests/s without the E2E entries — only when Locust wrote per-entry history."""
    if locust is None:
        return None
    per: dict[int, float] = {}
    for r in locust.history:
        if r.get("Name") == "Aggregated" or r.get("Type") == "E2E":
            continue
        try:
            ts, value = int(float(r["Timestamp"])), float(r.get("Requests/s") or 0)
        except (KeyError, ValueError):
            continue
        per[ts] = per.get(ts, 0.0) + value
    if not per:
        return None
    secs = sorted(per)
    return clock.x(s - clock.start for s in secs), [per[s] for s in secs]


def _latency_over_time(run: Run, clock: _Clock, paths: list[str], colour: _Colour) -> Figure | None:
    rows = [r for r in run.timeseries if r.path and r.p50_ms is not None]
    if not rows:
        return None
    fig = Figure(figsize=(_WIDTH_IN, 3.6), layout="constrained")
    ax = fig.subplots()
    lo, hi = math.inf, 0.0
    for path in paths:
        pr = [r for r in rows if r.path == path]
        if not pr:
            continue
        x = clock.x(r.elapsed_s for r in pr)
        for attr, style, width, label in (("max_ms", ":", 0.8, "max"), ("p99_ms", "-", 1.6, "p99"),
                                          ("p95_ms", "-", 0.9, "p95"), ("p50_ms", "--", 1.0, "p50")):  # fmt: skip
            y = [getattr(r, attr) or 0.0 for r in pr]
            ax.plot(x, y, linestyle=style, linewidth=width, color=colour(path), label=f"{path} {label}",
                    alpha=0.6 if attr == "max_ms" else 1.0)  # fmt: skip
            positive = [v for v in y if v > 0]
            if positive:
                lo, hi = min(lo, min(positive)), max(hi, max(positive))
    if hi > 0 and hi / lo > 50:
        ax.set_yscale("log")
    else:
        ax.set_ylim(bottom=0)
    ax.set_ylabel("end-to-end latency, ms")
    _shade_faults(ax, run, clock)
    ax.set_xlabel(clock.label)
    fig.suptitle("End-to-end latency per second (exact, HDR)", fontweight="bold", fontsize=10)
    fig.legend(loc="outside lower center", ncols=4)
    return fig


def _buckets(h: Histogram) -> tuple[np.ndarray, np.ndarray]:
    """Recorded buckets of ``h``: highest equivalent value (µs) and count, in value order."""
    lowest, width, counts = buckets(h)
    return (lowest + width - 1).astype(float), counts.astype(float)


_NINES = [0, 1, 2, 3, 4, 5, 6]
_NINE_LABELS = ["0 %", "90 %", "99 %", "99.9 %", "99.99 %", "99.999 %", "99.9999 %"]


def _distribution(run: Run, paths: list[PathTables], colour: _Colour) -> Figure | None:
    series = [
        (p.path, run.hist[(p.path, "total")]) for p in paths if run.hist.get((p.path, "total"))
    ]
    series = [(name, h) for name, h in series if h.count]
    if not series:
        return None
    fig = Figure(figsize=(_WIDTH_IN, 3.6), layout="constrained")
    left, right = fig.subplots(1, 2)
    all_values = np.concatenate([_buckets(h)[0] for _, h in series]) / 1000
    lo, hi = max(all_values.min(), 0.001), max(all_values.max(), 0.002)
    edges = np.logspace(math.log10(lo) - 0.02, math.log10(hi) + 0.02, 60)
    extra = [("schedule lag", run.schedule_lag)] if run.schedule_lag.count else []
    most = 1
    for name, h in series:
        values, counts = _buckets(h)
        hist, _ = np.histogram(values / 1000, bins=edges, weights=counts)
        left.stairs(100 * hist / counts.sum(), edges, color=colour(name), label=name, linewidth=1.3)
        most = max(most, h.count)
    for name, h in [*series, *extra]:
        values, counts = _buckets(h)
        done = np.cumsum(counts) / counts.sum()
        x = -np.log10(np.clip(1 - np.concatenate([[0.0], done[:-1]]), 1e-9, 1))
        if name == "schedule lag":
            right.step(x, values / 1000, where="post", color="#777", linestyle="--", label=name)
        else:
            right.step(x, values / 1000, where="post", color=colour(name), label=name)
    left.set_xscale("log")
    left.set_xlabel("end-to-end latency, ms (log)")
    left.set_ylabel("% of messages")
    left.set_title("Histogram")
    left.legend(loc="upper right")
    top = min(6, max(2, math.ceil(math.log10(most))))
    right.set_xticks(_NINES[: top + 1], _NINE_LABELS[: top + 1])
    right.set_xlim(0, top)
    right.set_yscale("log")
    right.set_xlabel("percentile")
    right.set_ylabel("latency, ms (log)")
    right.set_title("Latency by percentile")
    right.legend(loc="upper left")
    return fig


def _hops(paths: list[PathTables]) -> Figure | None:
    rows = [p for p in paths if p.legs]
    if not rows:
        return None
    fig = Figure(figsize=(_WIDTH_IN, 1.0 + 0.55 * len(rows)), layout="constrained")
    ax = fig.subplots()
    seen: set[str] = set()
    for y, p in enumerate(rows):
        start = 0.0
        for leg in sorted(p.legs, key=lambda h: hop_key(h.label)):
            first = leg.label.split("+")[0]
            # a combined hop (kafka+redis: a stage left no stamp) takes its first leg's colour
            colour = LEG_COLOUR.get(first, "#bbb")
            ax.barh(y, leg.mean_ms, left=start, color=colour, edgecolor="white", height=0.6,
                    label=leg.label if leg.label not in seen else None)  # fmt: skip
            if leg.mean_ms > 0:
                ax.text(
                    start + leg.mean_ms / 2,
                    y,
                    f"{leg.mean_ms:.3g}",
                    ha="center",
                    va="center",
                    fontsize=7,
                )
            seen.add(leg.label)
            start += leg.mean_ms
        service = next((h for h in p.hops if h.label == "service"), None)
        if service is not None:
            ax.plot([service.mean_ms], [y], marker="|", markersize=18, color="#222")
            ax.text(
                service.mean_ms,
                y + 0.38,
                f"service mean {service.mean_ms:.3g} ms",
                fontsize=7,
                ha="right",
            )
    ax.set_yticks(range(len(rows)), [p.path for p in rows])
    ax.set_xlabel("mean time per leg, ms (means add up; percentiles do not)")
    fig.suptitle("Where the time goes: per-hop breakdown", fontweight="bold", fontsize=10)
    fig.legend(loc="outside lower center", ncols=len(seen))
    ax.set_ylim(-0.6, len(rows) - 0.2)
    ax.invert_yaxis()
    return fig


def _cpu(run: Run, clock: _Clock, labels: dict[str, str]) -> Figure | None:
    seconds = _per_second(run.timeseries)
    keys = list(dict.fromkeys(k for r in seconds for k in r.cpu_by_worker))
    if not keys:
        return None
    fig = Figure(figsize=(_WIDTH_IN, 2.8), layout="constrained")
    ax = fig.subplots()
    for i, key in enumerate(keys):
        pts = [(r.elapsed_s, r.cpu_by_worker[key]) for r in seconds if key in r.cpu_by_worker]
        ax.plot(
            clock.x(p[0] for p in pts),
            [p[1] for p in pts],
            color=_colour(i),
            label=labels.get(key, key),
        )
    ax.axhline(
        HOT_CPU_PERCENT,
        color="#d62728",
        linestyle=":",
        linewidth=1.0,
        label=f"hot ({HOT_CPU_PERCENT:.0f} %)",
    )
    ax.set_ylim(0, max(105.0, max(v for r in seconds for v in r.cpu_by_worker.values()) + 5))
    ax.set_ylabel("CPU, % of one core")
    ax.set_xlabel(clock.label)
    fig.suptitle("Generator CPU per worker", fontweight="bold", fontsize=10)
    fig.legend(loc="outside lower center", ncols=min(6, len(keys) + 1))
    return fig


def render_charts(
    run: Run, paths: list[PathTables], worker_labels: dict[str, str], out_dir: Path | None
) -> dict[str, Chart]:
    """Render every chart that has data; write ``out_dir/<name>.svg`` when given."""
    clock = _Clock(run)
    ts_paths = sorted(_paths(run.timeseries))
    colour = _path_colours([*ts_paths, *(p.path for p in paths)])
    specs: list[tuple[str, str, str, Callable[[], Figure | None]]] = [
        ("throughput", "Throughput and users over time",
         "Messages published and delivered per second (timeseries.csv; every subscription "
         "counts its own copy), running users below.",
         lambda: _throughput(run, clock, ts_paths, colour)),
        ("latency_over_time", "End-to-end latency over time",
         "p50, p95, p99 and max of the messages received in each second, per path.",
         lambda: _latency_over_time(run, clock, ts_paths, colour)),
        ("latency_distribution", "Latency distribution",
         "Whole-run histogram and percentile spectrum from the exact HDR data (e2e.json).",
         lambda: _distribution(run, paths, colour)),
        ("hops", "Per-hop breakdown",
         "Mean time spent in each leg of the pipeline, stacked, per path.",
         lambda: _hops(paths)),
        ("generator_cpu", "Generator CPU",
         "Process CPU of each load generator, per second.",
         lambda: _cpu(run, clock, worker_labels)),
    ]  # fmt: skip
    charts: dict[str, Chart] = {}
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    for name, title, caption, build in specs:
        rc: Any = {**_STYLE, "svg.hashsalt": f"pipeswarm-{name}"}
        with matplotlib.rc_context(rc):
            fig = build()
            if fig is None:
                continue
            full, inline = _svg(fig, name)
        file = f"charts/{name}.svg"
        if out_dir is not None:
            (out_dir / f"{name}.svg").write_text(full, encoding="utf-8")
        charts[name] = Chart(name, title, caption, inline, file)
    return charts
