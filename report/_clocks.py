"""What the report says about hosts and clocks: who took part, how far each clock was off.

A latency between a publisher on one host and a subscriber on another is only as
good as the two clocks; ``run.json`` records each worker's measured offset to
the master and its uncertainty (``telemetry.clock``), and whether a worker
disappeared before it could send its final state.
"""

from __future__ import annotations

from typing import Any

from report._load import Run

__all__ = ["UNCERTAIN_MS", "clock_warnings"]

#: An offset known less precisely than this makes sub-millisecond cross-host figures doubtful.
UNCERTAIN_MS = 1.0


def _name(w: dict[str, Any]) -> str:
    where = ", ".join(x for x in (str(w.get("host") or ""), str(w.get("address") or "")) if x)
    return f"worker {w.get('index')}" + (f" ({where})" if where else "")


def clock_warnings(run: Run) -> list[str]:
    """Plain sentences: lost workers, cross-host timing, offsets too uncertain or uncorrected."""
    info = run.run
    workers: list[dict[str, Any]] = list(info.get("workers", []))
    out: list[str] = []
    for w in workers:
        if w.get("state") == "missing" or w.get("final") is False:
            state = w.get("state")
            out.append(
                f"{_name(w)} stopped during the run (Locust state: {state}) and its final "
                "state never reached the master: its own figures end with its last report."
            )
    cross = bool(info.get("cross_host_timing"))
    clocks = [(w, w["clock"]) for w in workers if isinstance(w.get("clock"), dict)]
    if cross:
        hosts = ", ".join(info.get("hosts", []))
        if clocks and all(c.get("enabled", True) for _w, c in clocks):
            worst = max(c.get("uncertainty_ms", 0.0) for _w, c in clocks)
            out.append(
                f"Publishers and subscribers ran on different hosts ({hosts}): latencies were "
                "corrected to the master's clock by each worker's measured offset (where larger "
                f"than its uncertainty; the largest was ±{worst:.3f} ms); per-hop latencies use "
                "the pipeline host's clock as it is."
            )
        else:
            out.append(
                f"Publishers and subscribers ran on different hosts ({hosts}): latencies compare "
                "two clocks and are only as good as their synchronisation."
            )
    for w, c in clocks:
        uncertainty = float(c.get("uncertainty_ms", 0.0))
        offset = float(c.get("offset_ms", 0.0))
        if uncertainty > UNCERTAIN_MS:
            out.append(
                f"{_name(w)}: clock offset {offset:+.3f} ms known only to ±{uncertainty:.3f} ms "
                f"(> {UNCERTAIN_MS:g} ms: its round trips to the master were slow); latencies "
                "between it and other hosts are uncertain by as much."
            )
        if not c.get("enabled", True) and abs(offset) > max(uncertainty, UNCERTAIN_MS):
            out.append(
                f"{_name(w)}: clock {offset:+.3f} ms off the master's and not corrected "
                "(--clock-sync false): latencies between it and other hosts are off by as much."
            )
    return out
