"""The master's side: merge every process's ledger payloads, decide loss, build ``e2e.json``.

Sources are Locust worker client ids (or ``"local"`` for a single process).
Histograms and windows arrive as deltas and are added exactly; subscriber
summaries are cumulative and replace the previous copy; the final payload of a
source carries its full per-device state (``Ledger.final``).

Loss is decided here, because the publisher of a device and a subscriber may
run on different workers. For each subscriber and each device in its scope that
was published:

- expected seqs start at the device's first published seq when the subscriber
  was already subscribed then (``since_ns <= first_tp``), else at the first seq
  the subscriber received (a later subscriber cannot expect older messages);
- lost = missing before its first received seq (first case only) + gaps still
  open + published seqs above the highest it received (not counted when the
  subscriber closed before the end);
- a device it never received at all: everything published after it subscribed;
  when it subscribed after the device's first publish, the seq at ``since_ns``
  is interpolated from the first and last publish times and the result counted in
  ``lost_estimated`` as well.

Cross-host comparisons of ``since_ns`` with publish times assume synchronised clocks.
"""

from __future__ import annotations

import heapq
import itertools
import math
from typing import Any

from telemetry._windows import Windows
from telemetry._wire import PublisherWire, SnapshotWire, StreamWire
from telemetry.hdr import HIGHEST_US, LOWEST_US, SIGNIFICANT_DIGITS, Histogram, HistogramSet
from telemetry.ledger import COUNTERS, add_live
from telemetry.stages import PATH_SEP, path_name, split_path

__all__ = ["Collector", "E2E_FORMAT", "WORST_N"]

E2E_FORMAT = "pipeswarm-e2e/1"
WORST_N = 10


def _hist_entry(h: Histogram) -> dict[str, Any]:
    entry = h.summary()
    entry["hdr"] = h.encode()
    return entry


class Collector:
    """Merged state of one run, fed by :meth:`merge`."""

    def __init__(self, run_id: str, *, grace_s: float, drain_s: float) -> None:
        self.run_id = run_id
        self.grace_s = grace_s
        self.drain_s = drain_s
        self.histograms = HistogramSet()
        self.schedule_lag = Histogram()
        self.windows = Windows()
        self.loop_lag: dict[str, Histogram] = {}
        self.subs: dict[str, dict[str, Any]] = {}
        #: per source: its subscriptions summed per kind (``telemetry.ledger.add_live``)
        self.live: dict[str, dict[str, Any]] = {}
        self.published: dict[str, dict[str, int]] = {}
        self.finals: dict[str, dict[str, Any]] = {}
        self.reports: dict[str, int] = {}
        self.ignored_reports = 0

    # --- merging -------------------------------------------------------------
    def merge(self, source: str, payload: dict[str, Any]) -> bool:
        """Add one payload of ``source``; False (and ignored) when it is of another run."""
        if payload.get("run") != self.run_id:
            self.ignored_reports += 1
            return False
        self.reports[source] = self.reports.get(source, 0) + 1
        self.histograms.merge_wire(payload.get("hist", []))
        if "sched" in payload:
            self.schedule_lag.add(Histogram.from_wire(payload["sched"]))
        self.windows.merge_wire(payload.get("windows", []))
        if "looplag" in payload:
            lag = self.loop_lag.setdefault(source, Histogram())
            lag.add(Histogram.from_wire(payload["looplag"]))
        if "published" in payload:
            self.published[source] = dict(payload["published"])
        for sid, summary in payload.get("subs", {}).items():
            self.subs[sid] = dict(summary, source=source, id=sid)
        if "live" in payload:
            self.live[source] = payload["live"]
        elif "subs" in payload:  # a payload of every subscription (and no sums)
            live: dict[str, Any] = {}
            for summary in payload["subs"].values():
                add_live(
                    live,
                    str(summary.get("kind", "")),
                    int(summary.get("untraced", 0)),
                    summary.get("counters", {}),
                    summary.get("overdue", {}),
                )
            self.live[source] = live
        if payload.get("final"):
            self.finals[source] = {
                "streams": payload.get("streams", {}),
                "snapshots": payload.get("snapshots", {}),
                "publishers": payload.get("publishers", {}),
            }
        return True

    # --- live figures ----------------------------------------------------------
    def published_total(self) -> int:
        return sum(p.get("messages", 0) for p in self.published.values())

    def lost_so_far(self) -> dict[str, int]:
        """Per path: gaps older than the grace window, as last reported.

        Tail loss (never arrived after the last received seq) is only known at the end.
        """
        out: dict[str, int] = {}
        for entry in self.live_entries():
            for path, n in entry["overdue"].items():
                out[path] = out.get(path, 0) + int(n)
        return out

    def delivered_total(self) -> int:
        i = COUNTERS.index("delivered")
        return sum(c[i] for e in self.live_entries() for c in e["counters"].values())

    def live_entries(self) -> list[dict[str, Any]]:
        """Every source's sums per subscriber kind, as last reported, with their ``kind``."""
        return [
            dict(entry, kind=kind)
            for live in list(self.live.values())
            for kind, entry in live.items()
        ]

    # --- the result -------------------------------------------------------------
    def _merged_publishers(self) -> dict[str, PublisherWire]:
        merged: dict[str, PublisherWire] = {}
        for final in self.finals.values():
            for device, row in final["publishers"].items():
                pub = PublisherWire(*row)
                cur = merged.get(device)
                if cur is None:
                    merged[device] = pub
                    continue
                if pub.first < cur.first:
                    cur = cur._replace(first=pub.first, first_tp=pub.first_tp)
                if pub.hi > cur.hi:
                    cur = cur._replace(hi=pub.hi, hi_tp=pub.hi_tp)
                merged[device] = cur._replace(messages=cur.messages + pub.messages)
        return merged

    def e2e(self) -> dict[str, Any]:
        """The ``e2e.json`` document (format in docs/results.md)."""
        publishers = self._merged_publishers()
        paths: dict[str, dict[str, Any]] = {}

        def path_entry(path: str) -> dict[str, Any]:
            entry = paths.get(path)
            if entry is None:
                src, kind = split_path(path)
                entry = paths[path] = {
                    "src": src,
                    "subscriber": kind,
                    "subscribers": 0,
                    "modes": [],
                    "totals": dict.fromkeys(
                        (
                            "published",
                            "expected",
                            *COUNTERS,
                            "lost",
                            "lost_estimated",
                            "devices_expected",
                            "devices_seen",
                            "devices_complete",
                            "devices_incomplete",
                            "devices_never_seen",
                        ),
                        0,
                    ),
                    "snapshot": dict.fromkeys(
                        ("batches", "updates", "repeats", "conflated", "regressions"), 0
                    ),
                    "latency": {},
                    "_worst": {"lost": [], "max_total_us": [], "max_staleness_us": []},
                }
            return entry

        published_by_src: dict[str, int] = {}
        for pub in publishers.values():
            published_by_src[pub.src] = published_by_src.get(pub.src, 0) + pub.messages

        streams_by_sub: dict[str, dict[str, list[Any]]] = {}
        snaps_by_sub: dict[str, dict[str, list[Any]]] = {}
        for final in self.finals.values():
            streams_by_sub.update(final["streams"])
            snaps_by_sub.update(final["snapshots"])

        subscribers_out = []
        ignored_foreign = 0
        ignored_untraced = 0
        for sid, sub in sorted(self.subs.items()):
            kind = sub["kind"]
            seen_paths: set[str] = set()
            for path, counters in sub.get("counters", {}).items():
                entry = path_entry(path)
                seen_paths.add(path)
                for name, value in zip(COUNTERS, counters, strict=False):
                    entry["totals"][name] += value
                ignored_foreign += counters[COUNTERS.index("foreign_run")]
            ignored_untraced += int(sub.get("untraced", 0))
            lost_sub = lost_est_sub = 0
            if sub.get("mode") != "snapshot":
                lost_sub, lost_est_sub = self._stream_loss(
                    sub, streams_by_sub.get(sid, {}), publishers, path_entry, seen_paths
                )
            snaps = snaps_by_sub.get(sid, {})
            if snaps:
                self._snapshot_totals(sub, snaps, publishers, path_entry, seen_paths)
            for path in seen_paths:
                entry = path_entry(path)
                entry["subscribers"] += 1
                if sub.get("mode") not in entry["modes"]:
                    entry["modes"].append(sub.get("mode"))
            subscribers_out.append(
                {
                    "id": sid,
                    "worker": sub["source"],
                    "kind": kind,
                    "mode": sub.get("mode"),
                    "devices": sub.get("devices"),
                    "srcs": sub.get("srcs"),
                    "since_ns": sub.get("since_ns", 0),
                    "closed_ns": sub.get("closed_ns", 0),
                    "untraced": int(sub.get("untraced", 0)),
                    "batches": int(sub.get("batches", 0)),
                    "counters": {
                        path: dict(zip(COUNTERS, values, strict=False))
                        for path, values in sub.get("counters", {}).items()
                    },
                    "lost": lost_sub,
                    "lost_estimated": lost_est_sub,
                    "final_state": sid in streams_by_sub or sid in snaps_by_sub,
                }
            )

        for (path, hop), h in self.histograms:
            if PATH_SEP in path and not path.startswith("*"):
                path_entry(path)["latency"][hop] = _hist_entry(h)

        for entry in paths.values():
            totals = entry["totals"]
            totals["published"] = published_by_src.get(entry["src"], 0)
            totals["expected"] = totals["delivered"] + totals["lost"]
            worst = entry.pop("_worst")
            entry["worst_devices"] = {
                key: [
                    {"device_id": d, "subscriber": s, key: v}
                    for v, d, s in heapq.nlargest(WORST_N, rows)
                    if v > 0
                ]
                for key, rows in worst.items()
            }

        return {
            "format": E2E_FORMAT,
            "run_id": self.run_id,
            "grace_s": self.grace_s,
            "drain_s": self.drain_s,
            "histogram": {
                "unit": "us",
                "lowest_us": LOWEST_US,
                "highest_us": HIGHEST_US,
                "significant_digits": SIGNIFICANT_DIGITS,
                "encoding": "HdrHistogram V2 compressed, base64",
            },
            "complete": self.missing_finals() == [],
            "workers_reported": sorted(self.reports),
            "published": {
                "messages": sum(p.messages for p in publishers.values()),
                "devices": len(publishers),
                "by_src": published_by_src,
            },
            "ignored": {
                "foreign_run": ignored_foreign,
                "untraced": ignored_untraced,
                "reports_of_other_runs": self.ignored_reports,
            },
            "paths": dict(sorted(paths.items())),
            "batch_push": {
                path: _hist_entry(h) for (path, hop), h in self.histograms if hop == "batch"
            },
            "subscribers": subscribers_out,
            "schedule_lag": _hist_entry(self.schedule_lag),
            "loop_lag": {src: _hist_entry(h) for src, h in sorted(self.loop_lag.items())},
        }

    def missing_finals(self, expected: list[str] | None = None) -> list[str]:
        sources = expected if expected is not None else list(self.reports)
        return sorted(s for s in sources if s not in self.finals)

    def _stream_loss(
        self,
        sub: dict[str, Any],
        streams: dict[str, list[Any]],
        publishers: dict[str, PublisherWire],
        path_entry: Any,
        seen_paths: set[str],
    ) -> tuple[int, int]:
        kind = sub["kind"]
        since = int(sub.get("since_ns", 0))
        closed_early = bool(sub.get("closed_ns"))
        scope = sub.get("devices")
        if scope is None:
            # seen devices first, then the published ones it never saw (a C-speed set difference)
            devices: Any = itertools.chain(streams.keys(), publishers.keys() - streams.keys())
        else:
            devices = scope
        sid = sub.get("id", "")
        srcs = sub.get("srcs")
        lost_total = est_total = 0
        for device in devices:
            pub = publishers.get(device)
            st = streams.get(device)
            if pub is None or (srcs is not None and pub.src not in srcs):
                continue
            first, first_tp, hi, hi_tp = pub.first, pub.first_tp, pub.hi, pub.hi_tp
            path = path_name(pub.src, kind)
            entry = path_entry(path)
            seen_paths.add(path)
            totals = entry["totals"]
            worst = entry["_worst"]
            totals["devices_expected"] += 1
            from_start = since <= first_tp
            estimated = 0
            if st is None:
                totals["devices_never_seen"] += 1
                if closed_early:
                    continue
                if from_start:
                    lost = hi - first + 1
                else:
                    # interpolate the seq published at `since` from the first/last publish times
                    span = hi_tp - first_tp
                    at = first + (since - first_tp) * (hi - first) / span if span > 0 else hi + 1
                    lost = max(0, hi - max(first, math.ceil(at)) + 1)
                    estimated = lost
            else:
                seen = StreamWire(*st)
                totals["devices_seen"] += 1
                lost = seen.evicted + sum(g_hi - g_lo + 1 for g_lo, g_hi in seen.gaps)
                if from_start and seen.first > first:
                    lost += seen.first - first
                if not closed_early and hi > seen.hi:
                    lost += hi - seen.hi
                worst["max_total_us"].append((seen.max_total_us, device, sid))
            if lost:
                totals["devices_incomplete"] += 1
                worst["lost"].append((lost, device, sid))
            elif st is not None:
                totals["devices_complete"] += 1
            totals["lost"] += lost
            totals["lost_estimated"] += estimated
            lost_total += lost
            est_total += estimated
        return lost_total, est_total

    def _snapshot_totals(
        self,
        sub: dict[str, Any],
        snaps: dict[str, list[Any]],
        publishers: dict[str, PublisherWire],
        path_entry: Any,
        seen_paths: set[str],
    ) -> None:
        kind = sub["kind"]
        sid = sub.get("id", "")
        for device, row in snaps.items():
            shown = SnapshotWire(*row)
            path = path_name(shown.src, kind)
            entry = path_entry(path)
            seen_paths.add(path)
            snap = entry["snapshot"]
            snap["updates"] += shown.updates
            snap["repeats"] += shown.repeats
            snap["conflated"] += shown.conflated
            snap["regressions"] += shown.regressions
            entry["totals"]["devices_seen"] += 1
            entry["_worst"]["max_staleness_us"].append((shown.max_stale_us, device, sid))
        scope = sub.get("devices")
        devices = scope if scope is not None else publishers.keys()
        srcs = sub.get("srcs")
        for device in devices:
            pub = publishers.get(device)
            if pub is None or device in snaps or (srcs is not None and pub.src not in srcs):
                continue
            entry = path_entry(path_name(pub.src, kind))
            entry["totals"]["devices_never_seen"] += 1
        for path in seen_paths:
            path_entry(path)["snapshot"]["batches"] += int(sub.get("batches", 0))
