"""The per-second time series of a run (``timeseries.csv``), built on the master.

Each :meth:`Timeseries.tick` (once a second) notes the instantaneous figures of
that wall-clock second — users, workers, generator CPU per worker, loss so far —
and closes the seconds old enough that no worker can still report into them:
their merged window (published, delivered, e2e histogram of that second) becomes
one row per path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from telemetry.collector import Collector
from telemetry.stages import split_path

__all__ = ["Sample", "Timeseries"]


@dataclass(slots=True)
class Sample:
    """Instantaneous figures of one wall-clock second."""

    users: int = 0
    workers: int = 0
    #: generator CPU percent by worker index (``"local"``/``"0"``, ``"1"``, …)
    cpu: dict[str, float] = field(default_factory=dict)
    lost: dict[str, int] = field(default_factory=dict)


class Timeseries:
    """Rows of ``timeseries.csv`` (columns: ``telemetry.results.TIMESERIES_COLUMNS``)."""

    def __init__(
        self,
        collector: Collector,
        sample: Callable[[], Sample],
        *,
        started_s: float,
        close_delay_s: float,
    ) -> None:
        self.collector = collector
        self._sample = sample
        self.started_s = started_s
        self.close_delay_s = close_delay_s
        self.rows: list[dict[str, Any]] = []
        self._samples: dict[int, Sample] = {}
        self._last: Sample = Sample()
        self._paths: list[str] = []
        self.peak_users = 0

    def tick(self, now_s: float) -> None:
        sample = self._sample()
        self.peak_users = max(self.peak_users, sample.users)
        self._samples[int(now_s)] = sample
        self._close(int(now_s - self.close_delay_s) - 1)

    def flush(self) -> None:
        """Close every second still open (at the end of the run)."""
        self._close(1 << 62)

    def _close(self, until_sec: int) -> None:
        windows = {
            sec: (published, paths)
            for sec, published, paths in self.collector.windows.pop_until(until_sec)
        }
        # every second that had data or a sample gets its rows: the timeline has no holes
        for sec in sorted(set(windows) | {s for s in self._samples if s <= until_sec}):
            sample = self._samples.pop(sec, None) or self._nearest(sec)
            self._last = sample
            published, paths = windows.get(sec, ({}, {}))
            for p in paths:
                if p not in self._paths and not p.startswith("*"):
                    self._paths.append(p)
            self._rows(sec, published, paths, sample)

    def _nearest(self, sec: int) -> Sample:
        """The sample of the closest earlier second, else of the closest later one."""
        earlier = [s for s in self._samples if s <= sec]
        if earlier:
            return self._samples[max(earlier)]
        if self._last.users or self._last.workers or not self._samples:
            return self._last
        return self._samples[min(self._samples)]

    def _rows(self, sec: int, published: dict[str, int], paths: dict[str, Any], s: Sample) -> None:
        cpu = list(s.cpu.values())
        common = {
            "epoch_s": sec,
            "elapsed_s": max(0, sec - int(self.started_s)),
            "users": s.users,
            "workers": s.workers,
            "cpu_max_percent": round(max(cpu), 1) if cpu else "",
            "cpu_mean_percent": round(sum(cpu) / len(cpu), 1) if cpu else "",
            "cpu_by_worker": ";".join(f"{k}:{v:.1f}" for k, v in sorted(s.cpu.items())),
        }
        if not self._paths:
            row = dict(
                common, path="", published=sum(published.values()), delivered=0, duplicated=0
            )
            row["lost_so_far"] = sum(s.lost.values())
            self.rows.append(row)
            return
        for path in self._paths:
            src = split_path(path)[0]
            delivered, hist, duplicated = paths.get(path, (0, None, 0))
            row = dict(
                common,
                path=path,
                published=published.get(src, 0),
                delivered=delivered,
                duplicated=duplicated,
                lost_so_far=s.lost.get(path, 0),
            )
            if hist is not None and hist.count:
                pct = hist.percentiles((50.0, 95.0, 99.0))
                row["e2e_p50_ms"] = pct[50.0] / 1000
                row["e2e_p95_ms"] = pct[95.0] / 1000
                row["e2e_p99_ms"] = pct[99.0] / 1000
                row["e2e_max_ms"] = hist.hdr.get_max_value() / 1000
            self.rows.append(row)
