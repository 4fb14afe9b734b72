"""Live end-to-end figures of the master (or local process), shared by the exporter and web UI.

Both read the plugin's merged :class:`~telemetry.collector.Collector` at request
time; nothing here keeps state.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from telemetry.ledger import COUNTERS

if TYPE_CHECKING:
    from telemetry.collector import Collector
    from telemetry.plugin import E2EPlugin

__all__ = ["path_counters", "ignored_counters", "lost_by_path"]


def path_counters(collector: Collector) -> dict[str, dict[str, int]]:
    """Per path: every counter of :data:`~telemetry.ledger.COUNTERS`, summed over subscriptions
    (from each source's reported sums, ``Collector.live``)."""
    out: dict[str, dict[str, int]] = {}
    for entry in collector.live_entries():
        for path, values in entry["counters"].items():
            acc = out.setdefault(path, dict.fromkeys(COUNTERS, 0))
            for name, value in zip(COUNTERS, values, strict=False):
                acc[name] += int(value)
    return out


def ignored_counters(collector: Collector) -> dict[tuple[str, str], int]:
    """``(subscriber kind, reason) -> messages`` not measured: foreign_run, out_of_scope, untraced."""
    out: dict[tuple[str, str], int] = {}
    for entry in collector.live_entries():
        kind = str(entry["kind"])
        for values in entry["counters"].values():
            for reason in ("foreign_run", "out_of_scope"):
                n = int(values[COUNTERS.index(reason)])
                out[(kind, reason)] = out.get((kind, reason), 0) + n
        out[(kind, "untraced")] = out.get((kind, "untraced"), 0) + int(entry["untraced"])
    return out


def lost_by_path(plugin: E2EPlugin) -> dict[str, int]:
    """Lost messages per path: the final figure once the run's ``e2e.json`` is written,
    else the gaps older than the grace window so far; 0 for every path with traffic."""
    collector = plugin.collector
    if collector is None:
        return {}
    out = dict.fromkeys(path_counters(collector), 0)
    final = plugin.final_e2e
    if final is not None and final.get("run_id") == collector.run_id:
        for path, entry in final.get("paths", {}).items():
            out[path] = int(entry.get("totals", {}).get("lost", 0))
        return out
    out.update(collector.lost_so_far())
    return out
