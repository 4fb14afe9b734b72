"""Clock-skew correction across processes: the publishing worker runs 50 ms ahead.

A real distributed run (``bench/split_hosts_locustfile.py``: a master and two
worker processes against the embedded stack); the publishing worker is under
libfaketime (``FAKETIME=+0.05``), so every wall-clock time it takes is 50 ms
ahead. Its measured offset must be +50 ms, and the latency a subscriber on the
other worker computes (two clocks, ``mqtt→far``) must agree with the one a
subscriber next to the publishers computes (one clock, ``mqtt→near``) for the
same messages — uncorrected, it would be 50 ms short (negative, recorded as 0).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.clock_skew import LIBFAKETIME, figures, split_run
from pipeline._procs import free_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not Path(LIBFAKETIME).exists(), reason="libfaketime is not installed (make setup)"
    ),
]


def test_a_worker_50_ms_ahead_is_measured_and_corrected(stack, tmp_path):
    result = split_run(stack.urls, tmp_path / "run", master_port=free_port(), seconds=6,
                       shift_s=0.05)  # fmt: skip
    run = result["run"]
    clocks = sorted((w["clock"] for w in run["workers"]), key=lambda c: c["offset_ms"])
    unshifted, shifted = clocks
    for c in clocks:
        assert c["enabled"] and c["samples"] >= 8, c
        assert c["uncertainty_ms"] < 1.0, c
    assert abs(unshifted["offset_ms"]) <= 1.0, clocks
    assert abs(shifted["offset_ms"] - 50.0) <= 1.0, clocks
    assert shifted["applied_ms"] != 0  # last value applied (refreshed during the run)
    assert run["clock"]["max_abs_offset_ms"] == shifted["offset_ms"]

    f = figures(result)
    near, far = f["near"], f["far"]
    assert near["count"] > 500 and far["count"] > 500, f
    assert near["lost"] == 0 and far["lost"] == 0, f  # subscription vs publish times agree too
    # the same messages, seen from the publishers' host and from the other one
    assert abs(far["p50_ms"] - near["p50_ms"]) < 1.0, f
    assert far["p50_ms"] > 0.5, f  # not clamped at 0: 50 ms would have been subtracted
