"""HDR histograms: encode → decode → merge is exact."""

from __future__ import annotations

import gc
import random

from telemetry.hdr import HIGHEST_US, Histogram, HistogramSet


def _values(seed: int, n: int) -> list[int]:
    rnd = random.Random(seed)
    return [int(rnd.lognormvariate(7, 1.5)) for _ in range(n)]


def test_merged_decoded_parts_equal_one_histogram_of_all_values():
    parts = [_values(seed, 5_000) for seed in range(3)]
    whole = Histogram()
    merged = Histogram()
    for values in parts:
        part = Histogram()
        for v in values:
            part.record_us(v)
            whole.record_us(v)
        merged.add(Histogram.decode(part.encode()))
    assert merged.count == sum(len(p) for p in parts) == whole.count
    for p in (1, 50, 90, 95, 99, 99.9, 100):
        assert merged.percentile(p) == whole.percentile(p)
    assert merged.summary()["p99_us"] == whole.summary()["p99_us"]


def test_out_of_range_values_are_clamped_and_counted():
    h = Histogram()
    h.record_ns(-5_000)
    h.record_us(HIGHEST_US * 2)
    h.record_ns(2_500_000)
    assert h.count == 3
    assert (h.negative, h.clamped_high) == (1, 1)
    assert h.percentile(0) == 0
    back = Histogram.from_wire(h.to_wire())
    assert (back.count, back.negative, back.clamped_high) == (3, 1, 1)


def test_empty_histogram_summary_is_zeros():
    s = Histogram().summary()
    assert s["count"] == 0 and s["p99_us"] == 0 and s["max_us"] == 0


def test_histogram_set_ships_deltas_and_merges_by_key():
    worker = HistogramSet()
    master = HistogramSet()
    worker.record_ns("mqtt→stomp", "total", 1_000_000)
    worker.record_ns("mqtt→stomp", "kafka", 200_000)
    master.merge_wire(worker.take_wire())
    worker.record_ns("mqtt→stomp", "total", 3_000_000)
    master.merge_wire(worker.take_wire())
    assert worker.total_count() == 0  # reset after each shipment
    assert master.get("mqtt→stomp", "total").count == 2
    assert master.get("mqtt→stomp", "kafka").count == 1
    total = master.get("mqtt→stomp", "total")
    assert total.hdr.values_are_equivalent(total.percentile(100), 3_000)
    assert worker.take_wire() == []  # nothing new: nothing shipped


def test_a_histogram_is_freed_without_a_cyclic_collection():
    """hdrh's histogram and its encoder refer to each other. The load side freezes
    what lives past a second (``telemetry._gc``), so each per-second window
    histogram, ~190 KB of counts, stayed until the end of the run."""
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for _ in range(5):
            h = Histogram()
            h.record_us(random.randint(1, 10**6))
            merged = Histogram()
            merged.add(Histogram.from_wire(h.to_wire()))
            assert merged.percentile(50) == h.percentile(50) and merged.encode()
            del h, merged
        gc.collect()
        kept = {type(o).__name__ for o in gc.garbage}
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert not kept & {"HdrHistogram", "HdrHistogramEncoder", "HdrPayload"}, kept
