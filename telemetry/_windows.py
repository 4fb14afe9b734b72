"""Per-second windows: published/delivered/duplicated counts and the e2e histogram of each second.

Every process buckets by the epoch second of the event (publish time ``tp`` for
published, receive time for delivered), ships the buckets as deltas, and the
master adds them up; a second is *closed* once no worker can still report into
it, and only then turned into a ``timeseries.csv`` row.
"""

from __future__ import annotations

from typing import Any

from telemetry.hdr import Histogram

__all__ = ["Windows"]


class Windows:
    """``second -> [{src: published}, {path: [delivered, Histogram of total latency, duplicated]}]``."""

    __slots__ = ("_by_sec",)

    def __init__(self) -> None:
        self._by_sec: dict[int, list[Any]] = {}

    def _slot(self, sec: int) -> list[Any]:
        slot = self._by_sec.get(sec)
        if slot is None:
            slot = self._by_sec[sec] = [{}, {}]
        return slot

    def published(self, src: str, tp_ns: int) -> None:
        by_src = self._slot(tp_ns // 1_000_000_000)[0]
        by_src[src] = by_src.get(src, 0) + 1

    def _entry(self, path: str, recv_ns: int) -> list[Any]:
        paths = self._slot(recv_ns // 1_000_000_000)[1]
        entry = paths.get(path)
        if entry is None:
            entry = paths[path] = [0, Histogram(), 0]
        return entry

    def delivered(self, path: str, recv_ns: int, total_ns: int) -> None:
        entry = self._entry(path, recv_ns)
        entry[0] += 1
        entry[1].record_ns(total_ns)

    def duplicated(self, path: str, recv_ns: int) -> None:
        self._entry(path, recv_ns)[2] += 1

    def take_wire(self) -> list[list[Any]]:
        """``[[sec, {src: published}, {path: [delivered, histogram wire, duplicated]}], ...]``
        and reset."""
        wire = [
            [sec, dict(slot[0]), {p: [e[0], e[1].to_wire(), e[2]] for p, e in slot[1].items()}]
            for sec, slot in sorted(self._by_sec.items())
        ]
        self._by_sec.clear()
        return wire

    def merge_wire(self, wire: list[list[Any]]) -> None:
        for sec, published, paths in wire:
            slot = self._slot(int(sec))
            for src, n in published.items():
                slot[0][src] = slot[0].get(src, 0) + int(n)
            for path, (delivered, hist, *more) in paths.items():
                entry = slot[1].get(path)
                if entry is None:
                    entry = slot[1][path] = [0, Histogram(), 0]
                entry[0] += int(delivered)
                entry[1].add(Histogram.from_wire(hist))
                entry[2] += int(more[0]) if more else 0  # (a worker of an older version)

    def pop_until(
        self, sec: int
    ) -> list[tuple[int, dict[str, int], dict[str, tuple[int, Histogram, int]]]]:
        """Remove and return the seconds ``<= sec``, oldest first."""
        done = sorted(s for s in self._by_sec if s <= sec)
        out = []
        for s in done:
            published, paths = self._by_sec.pop(s)
            out.append((s, published, {p: (e[0], e[1], e[2]) for p, e in paths.items()}))
        return out

    def __len__(self) -> int:
        return len(self._by_sec)
