"""Latency histograms on ``hdrhistogram``: record µs, ship encoded, merge exactly.

Every histogram has the same layout — 1 µs to 1 h, 3 significant digits — so
two of them add bucket by bucket and a merged histogram is *exactly* the one a
single process would have recorded (counts and percentiles). Workers ship the
base64 "HdrHistogram V2 compressed" encoding (``HdrHistogram.encode()``), the
format every HdrHistogram implementation (Java, Go, C, JS) can decode.

Values outside the range are clamped, never dropped: a negative delta (clocks of
two hosts disagree) is recorded as 0 and counted in ``negative``; anything above
1 h is recorded as 1 h and counted in ``clamped_high``.

    >>> h = Histogram()
    >>> h.record_ns(1_500_000)      # 1.5 ms
    >>> h.count, h.percentile(50)
    (1, 1500)
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Iterator
from typing import Any

from hdrh.histogram import HdrHistogram

__all__ = ["LOWEST_US", "HIGHEST_US", "SIGNIFICANT_DIGITS", "Histogram", "HistogramSet"]

LOWEST_US = 1
HIGHEST_US = 3_600_000_000  # 1 h
SIGNIFICANT_DIGITS = 3

#: Headline percentiles written next to every encoded histogram.
HEADLINE = (50.0, 90.0, 95.0, 99.0, 99.9)


def _new() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)


def _acyclic(hdr: HdrHistogram) -> HdrHistogram:
    """Break hdrh's reference cycle (histogram -> encoder -> histogram).

    Within that cycle a histogram (~190 KB of counts) is freed only by a cyclic
    collection, and the load side freezes what lives past a second
    (``telemetry._gc``): each per-second window histogram (``telemetry._windows``)
    stayed to the end of the run, ~190 KB a path a second (``bench load-soak``,
    ``tests/unit/test_telemetry_hdr.py``). The encoder only reads the histogram
    while it is alive, so a weak proxy serves.
    """
    encoder = hdr.encoder
    if not isinstance(encoder.histogram, weakref.ProxyType):
        encoder.histogram = weakref.proxy(hdr)
    return hdr


class Histogram:
    """One HDR histogram of microseconds plus the clamp counters."""

    __slots__ = ("_h", "negative", "clamped_high")

    def __init__(self, hdr: HdrHistogram | None = None) -> None:
        self._h = _acyclic(hdr if hdr is not None else _new())
        self.negative = 0
        self.clamped_high = 0

    # --- recording -------------------------------------------------------
    def record_us(self, value_us: int) -> None:
        if value_us < 0:
            self.negative += 1
            value_us = 0
        elif value_us > HIGHEST_US:
            self.clamped_high += 1
            value_us = HIGHEST_US
        self._h.record_value(value_us)

    def record_ns(self, value_ns: int) -> None:
        value_us = value_ns // 1000
        if 0 <= value_us <= HIGHEST_US:  # the hot path: one call into hdrh
            self._h.record_value(value_us)
        else:
            self.record_us(value_us)

    # --- reading ---------------------------------------------------------
    @property
    def count(self) -> int:
        return int(self._h.get_total_count())

    @property
    def hdr(self) -> HdrHistogram:
        return self._h

    def percentile(self, p: float) -> int:
        """Value in µs at percentile ``p`` (0-100); 0 when empty."""
        if not self.count:
            return 0
        return int(self._h.get_value_at_percentile(p))

    def percentiles(self, ps: Iterable[float] = HEADLINE) -> dict[float, int]:
        if not self.count:
            return {p: 0 for p in ps}
        return {p: int(v) for p, v in self._h.get_percentile_to_value_dict(list(ps)).items()}

    def summary(self) -> dict[str, Any]:
        """Headline figures in µs, as written to ``e2e.json`` (docs/results.md)."""
        n = self.count
        pct = self.percentiles()
        return {
            "count": n,
            "min_us": int(self._h.get_min_value()) if n else 0,
            "mean_us": round(float(self._h.get_mean_value()), 1) if n else 0.0,
            "p50_us": pct[50.0],
            "p90_us": pct[90.0],
            "p95_us": pct[95.0],
            "p99_us": pct[99.0],
            "p999_us": pct[99.9],
            "max_us": int(self._h.get_max_value()) if n else 0,
            "negative": self.negative,
            "clamped_high": self.clamped_high,
        }

    # --- shipping and merging -------------------------------------------
    def encode(self) -> str:
        """Base64 HdrHistogram V2 compressed encoding (ASCII text)."""
        blob = self._h.encode()
        return blob.decode("ascii") if isinstance(blob, bytes) else str(blob)

    def to_wire(self) -> dict[str, Any]:
        return {"hdr": self.encode(), "negative": self.negative, "clamped_high": self.clamped_high}

    @classmethod
    def decode(cls, encoded: str | bytes) -> Histogram:
        data = encoded.encode("ascii") if isinstance(encoded, str) else encoded
        return cls(HdrHistogram.decode(data))

    @classmethod
    def from_wire(cls, wire: dict[str, Any]) -> Histogram:
        h = cls.decode(wire["hdr"])
        h.negative = int(wire.get("negative", 0))
        h.clamped_high = int(wire.get("clamped_high", 0))
        return h

    def add(self, other: Histogram) -> None:
        """Add ``other`` bucket by bucket (exact: same layout everywhere)."""
        if other.count:
            self._h.add(other._h)
        self.negative += other.negative
        self.clamped_high += other.clamped_high

    def reset(self) -> None:
        self._h.reset()
        self.negative = 0
        self.clamped_high = 0


Key = tuple[str, str]


class HistogramSet:
    """Histograms keyed by ``(path, hop)``, e.g. ``("mqtt→stomp", "total")``.

    ``to_wire`` encodes the non-empty ones as ``[[path, hop, wire], ...]`` (the
    Locust report payload must be msgpack-able: no tuple keys).
    """

    __slots__ = ("_by_key",)

    def __init__(self) -> None:
        self._by_key: dict[Key, Histogram] = {}

    def get(self, path: str, hop: str) -> Histogram:
        key = (path, hop)
        h = self._by_key.get(key)
        if h is None:
            h = self._by_key[key] = Histogram()
        return h

    def record_ns(self, path: str, hop: str, value_ns: int) -> None:
        h = self._by_key.get((path, hop))
        if h is None:
            h = self.get(path, hop)
        h.record_ns(value_ns)

    def __iter__(self) -> Iterator[tuple[Key, Histogram]]:
        return iter(sorted(self._by_key.items()))

    def __len__(self) -> int:
        return len(self._by_key)

    def __contains__(self, key: object) -> bool:
        return key in self._by_key

    def total_count(self) -> int:
        return sum(h.count for h in self._by_key.values())

    def to_wire(self) -> list[list[Any]]:
        return [
            [path, hop, h.to_wire()]
            for (path, hop), h in self
            if h.count or h.negative or h.clamped_high
        ]

    def merge_wire(self, wire: list[list[Any]]) -> None:
        for path, hop, data in wire:
            self.get(path, hop).add(Histogram.from_wire(data))

    def merge(self, other: HistogramSet) -> None:
        for (path, hop), h in other:
            self.get(path, hop).add(h)

    def take_wire(self) -> list[list[Any]]:
        """Encode and reset (a worker ships deltas; the master accumulates)."""
        wire = self.to_wire()
        for h in self._by_key.values():
            h.reset()
        return wire

    def clear(self) -> None:
        self._by_key.clear()
