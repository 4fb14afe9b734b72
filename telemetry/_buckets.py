"""Cumulative Prometheus buckets from the two distributions the exporter reads.

- An HDR histogram (``telemetry.hdr``, microseconds): exact counts per HDR
  sub-bucket. A Prometheus bucket ``le=b`` counts every HDR sub-bucket whose
  lowest equivalent value is ``<= b``, so it may include values up to 0.1 %
  above ``b`` (the HDR resolution: 3 significant digits) — never fewer.
- Locust's ``StatsEntry.response_times`` (``{rounded ms: count}``): Locust
  rounds a response time to 1 ms below 100 ms, to 10 ms below 1 s and to 100 ms
  above (``locust.stats.StatsEntry._log_response_time``); the buckets are as
  exact as that rounding.

Both return ``[(le, cumulative count), ..., ("+Inf", total)]`` and the sum in
seconds, the shape ``HistogramMetricFamily.add_metric`` takes.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from hdrh.histogram import HdrHistogram

__all__ = ["E2E_BUCKETS_S", "LOCUST_BUCKETS_S", "hdr_buckets", "locust_buckets", "le"]

#: End-to-end and hop latencies: 1 ms … 30 s (a pipeline slower than 30 s end to end
#: is broken, not slow; the +Inf bucket still counts it), plus three
#: sub-millisecond bounds because single hops on one host (gateway → socket,
#: MQTT → bridge) take 0.1–0.5 ms and would all fall into the first bucket.
E2E_BUCKETS_S: tuple[float, ...] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)

#: Locust response times: whole milliseconds at best, so nothing below 1 ms.
LOCUST_BUCKETS_S: tuple[float, ...] = tuple(b for b in E2E_BUCKETS_S if b >= 0.001)

Buckets = list[tuple[str, float]]


def le(bound_s: float) -> str:
    """The ``le`` label of a bound, formatted as prometheus_client formats its own."""
    return repr(float(bound_s))


def _cumulate(per_bucket: Sequence[int], bounds_s: Sequence[float]) -> Buckets:
    out: Buckets = []
    total = 0
    for bound, n in zip(bounds_s, per_bucket, strict=False):
        total += n
        out.append((le(bound), total))
    out.append(("+Inf", total + per_bucket[-1]))
    return out


def hdr_buckets(
    h: HdrHistogram, bounds_s: Sequence[float] = E2E_BUCKETS_S
) -> tuple[Buckets, float]:
    """Cumulative buckets and the sum (seconds) of an HDR histogram of microseconds.

    Vectorised over hdrh's counts array (hdrh's own iterators walk every
    sub-bucket in Python: ~10 ms per histogram, on the master's event loop at
    every scrape). The arithmetic is hdrh's (``get_value_from_index``,
    ``_hdr_median_equiv_value``): the sum puts each sub-bucket at its median
    equivalent value, as ``get_mean_value`` does.
    """
    per_bucket = [0] * (len(bounds_s) + 1)
    total_us = 0.0
    if h.get_total_count():
        counts = np.ctypeslib.as_array(h.counts)
        idx = np.nonzero(counts)[0]
        half = h.sub_bucket_half_count
        bucket = (idx >> h.sub_bucket_half_count_magnitude) - 1
        sub = (idx & (half - 1)) + half
        first = bucket < 0
        sub = np.where(first, sub - half, sub).astype(np.int64)
        shift = np.where(first, 0, bucket).astype(np.int64) + h.unit_magnitude
        low = sub << shift
        n = counts[idx].astype(np.int64)
        where = np.searchsorted(np.asarray(bounds_s) * 1e6, low, side="left")
        per_bucket = [int(c) for c in np.bincount(where, weights=n, minlength=len(per_bucket))]
        total_us = float(((low + ((np.int64(1) << shift) >> 1)) * n).sum())
    return _cumulate(per_bucket, bounds_s), total_us / 1e6


def locust_buckets(
    response_times: Iterable[Mapping[int, int]],
    bounds_s: Sequence[float] = LOCUST_BUCKETS_S,
) -> Buckets:
    """Cumulative buckets of one or more Locust ``response_times`` dicts (ms keys)."""
    bounds_ms = [b * 1000 for b in bounds_s]
    per_bucket = [0] * (len(bounds_ms) + 1)
    for times in response_times:
        for ms, n in times.items():
            per_bucket[bisect_left(bounds_ms, ms)] += n
    return _cumulate(per_bucket, bounds_s)
