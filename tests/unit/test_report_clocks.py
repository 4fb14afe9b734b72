"""The report's sentences about hosts and clocks, from run.json's workers."""

from __future__ import annotations

import json
import shutil

import pytest

from report import build_report, load_run
from report._clocks import clock_warnings
from tests.unit.test_report_synthetic import build_run


def _worker(index: int, host: str, offset_ms: float, uncertainty_ms: float, **more) -> dict:
    clock = {"offset_ms": offset_ms, "uncertainty_ms": uncertainty_ms, "samples": 16,
             "enabled": more.pop("enabled", True), "applied_ms": offset_ms}  # fmt: skip
    return {"index": index, "id": f"{host}_{index}", "host": host, "address": f"10.0.0.{index + 2}",
            "user_classes_count": {}, "state": "running", "final": True, "clock": clock,
            **more}  # fmt: skip


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return build_run(tmp_path_factory.mktemp("runs") / "run").folder


def _with_workers(base, tmp_path, workers: list[dict]):
    folder = tmp_path / "run"
    shutil.copytree(base, folder)
    run = json.loads((folder / "run.json").read_text())
    hosts = sorted({w["host"] for w in workers} | {"testhost"})
    run.update(mode="distributed", workers=workers, worker_count=len(workers), hosts=hosts,
               cross_host_timing=len(hosts) > 1)  # fmt: skip
    (folder / "run.json").write_text(json.dumps(run))
    return build_report(load_run(folder), charts=False).warnings


def test_corrected_hosts_with_precise_offsets_say_so_and_warn_of_nothing_else(base, tmp_path):
    warnings = _with_workers(base, tmp_path, [_worker(0, "pub", 50.02, 0.2),
                                              _worker(1, "sub", -0.1, 0.3)])  # fmt: skip
    (pub, _sub) = build_report(load_run(tmp_path / "run"), charts=False).meta["workers"]
    assert (pub["address"], pub["clock"], pub["state"]) == ("10.0.0.2", "+50.020 ± 0.200 ms",
                                                            "running")  # fmt: skip
    (cross,) = [w for w in warnings if "different hosts" in w]
    assert "corrected to the master's clock" in cross and "±0.300 ms" in cross
    assert not any("known only to" in w or "stopped during" in w for w in warnings)


def test_an_offset_known_to_worse_than_1_ms_is_a_warning(base, tmp_path):
    warnings = _with_workers(base, tmp_path, [_worker(0, "pub", 12.5, 3.25),
                                              _worker(1, "sub", 0.0, 0.2)])  # fmt: skip
    (w,) = [w for w in warnings if "known only to" in w]
    assert w.startswith("worker 0 (pub, 10.0.0.2): clock offset +12.500 ms known only to ±3.250 ms")


def test_a_worker_killed_mid_run_is_named(base, tmp_path):
    warnings = _with_workers(base, tmp_path, [
        _worker(0, "pub", 0.0, 0.2), _worker(2, "idle", 0.0, 0.2, state="missing", final=False),
    ])  # fmt: skip
    (w,) = [w for w in warnings if "stopped during the run" in w]
    assert w.startswith("worker 2 (idle, 10.0.0.4) stopped during the run (Locust state: missing)")


def test_an_uncorrected_skew_is_a_warning():
    class _Run:
        run = {"workers": [_worker(0, "pub", 50.0, 0.2, enabled=False)], "hosts": ["a", "b"],
               "cross_host_timing": True}  # fmt: skip

    warnings = clock_warnings(_Run())  # type: ignore[arg-type]
    assert any("only as good as their synchronisation" in w for w in warnings)
    assert any("+50.000 ms off the master's and not corrected" in w for w in warnings)
