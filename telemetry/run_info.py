"""``run.json``: how a run ran (config, versions, hosts, workers, start/end; docs/results.md).

Built by the plugin (``telemetry.plugin``) on the master or the local process
when a test stops, from the environment and what the workers reported.
"""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from locust.runners import MasterRunner

from telemetry import results

if TYPE_CHECKING:
    from locust.env import Environment

__all__ = ["build"]


def _clock_entry(wire: dict[str, Any] | None) -> dict[str, Any] | None:
    """A worker's ``telemetry.clock`` report in ms (None: it never measured)."""
    if not wire or not wire.get("samples"):
        return None
    return {
        "offset_ms": round(wire["offset_ns"] / 1e6, 3),
        "uncertainty_ms": round(wire["uncertainty_ns"] / 1e6, 3),
        "samples": int(wire["samples"]),
        "enabled": bool(wire.get("enabled", True)),
        "applied_ms": round(wire.get("applied_ns", 0) / 1e6, 3),
    }


def _clock_summary(workers: list[dict[str, Any]]) -> dict[str, Any]:
    """The run's clock: the master's; the worst uncertainty of any worker's offset."""
    measured = [w["clock"] for w in workers if w.get("clock")]
    return {
        "reference": "master",
        "enabled": bool(measured) and all(c["enabled"] for c in measured),
        "max_uncertainty_ms": max((c["uncertainty_ms"] for c in measured), default=None),
        "max_abs_offset_ms": max((abs(c["offset_ms"]) for c in measured), default=None),
    }


def build(
    environment: Environment,
    *,
    run_id: str,
    started_s: float,
    ended_s: float,
    e2e: dict[str, Any],
    worker_hosts: dict[str, str],
    worker_users: dict[str, dict[str, int]],
    peak_users: int,
    worker_clocks: dict[str, dict[str, Any]] | None = None,
    worker_addresses: dict[str, str] | None = None,
    finals: set[str] | None = None,
) -> dict[str, Any]:
    """The ``run.json`` document of ``run_id`` (its ``e2e`` section from ``e2e.json``)."""
    runner = environment.runner
    options = environment.parsed_options
    workers: list[dict[str, Any]] = []
    user_classes: dict[str, int] = {}
    if runner is not None:
        user_classes = dict(
            getattr(runner, "final_user_classes_count", None)
            or getattr(runner, "user_classes_count", {})
            or {}
        )
    if isinstance(runner, MasterRunner):
        ids = set(worker_hosts) | set(runner.clients.keys())
        clocks = worker_clocks or {}
        for wid in sorted(ids, key=runner.get_worker_index):
            node = runner.clients.get(wid)
            workers.append(
                {
                    "index": runner.get_worker_index(wid),
                    "id": wid,
                    "host": worker_hosts.get(wid, wid.rsplit("_", 1)[0]),
                    "address": (worker_addresses or {}).get(wid, ""),
                    "user_classes_count": worker_users.get(
                        wid, dict(node.user_classes_count) if node else {}
                    ),
                    # Locust's view at the end ("missing": heartbeats stopped, e.g. killed)
                    "state": node.state if node else "gone",
                    "final": finals is None or wid in finals,
                    "clock": _clock_entry(clocks.get(wid)),
                }
            )
    hosts = sorted({w["host"] for w in workers} | {socket.gethostname()})
    locustfile = getattr(options, "locustfile", None) if options is not None else None
    scenario = None
    if isinstance(locustfile, str) and locustfile:
        scenario = locustfile.rsplit("/", 1)[-1].removesuffix(".py")
    iso = lambda s: datetime.fromtimestamp(s, UTC).isoformat()  # noqa: E731
    return {
        "format": results.RUN_FORMAT,
        "run_id": run_id,
        "mode": "distributed" if isinstance(runner, MasterRunner) else "local",
        "started_at": iso(started_s),
        "ended_at": iso(ended_s),
        "started_epoch_s": round(started_s, 3),
        "ended_epoch_s": round(ended_s, 3),
        "duration_s": round(ended_s - started_s, 3),
        "locustfile": locustfile,
        "scenario": scenario,
        "host": environment.host,
        "user_classes": sorted(c.__name__ for c in environment.user_classes),
        "user_classes_count": user_classes,
        "user_count": sum(user_classes.values()),
        "peak_users": peak_users,
        "worker_count": len(workers),
        "workers": workers,
        "hosts": hosts,
        "master": results.host_info(),
        "cross_host_timing": len(hosts) > 1,
        "clock": _clock_summary(workers),
        "versions": results.versions(),
        "options": results.safe_options(options),
        "e2e": {
            "grace_s": e2e["grace_s"],
            "drain_s": e2e["drain_s"],
            "complete": e2e["complete"],
            "paths": sorted(e2e["paths"]),
        },
        "files": {"e2e": "e2e.json", "timeseries": "timeseries.csv"},
    }
