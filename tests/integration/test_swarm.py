"""The full loop scenario as a user runs it: headless, distributed, and with a stalled bridge.

``locustfiles/pipeline.py`` with 50 devices at 10 msg/s (QoS1), 3 STOMP and
1 WebSocket subscribers and 1 REST commander, against the real embedded stack.
"""

from __future__ import annotations

import csv
import subprocess
import time

import pytest

from telemetry.hdr import Histogram
from tests.helpers import scraped, wait_for
from tests.swarm import (
    ROOT,
    e2e,
    locust_command,
    locust_env,
    locust_stats,
    private_master,
    run_locust,
)

pytestmark = pytest.mark.integration

SCENARIO = ("locustfiles/pipeline.py", "-u", "55", "-r", "55", "--device-interval", "0.1",
            "--mqtt-qos", "1")  # fmt: skip
PATHS = ("mqtt→stomp", "mqtt→ws")
HOPS = ("mqtt", "kafka", "redis", "push", "service")


def _assert_every_message_accounted(result: dict) -> None:
    assert result["complete"] is True
    assert result["published"]["devices"] == 50
    for path in PATHS:
        t = result["paths"][path]["totals"]
        assert t["lost"] == 0 and t["duplicated"] == 0 and t["reordered"] == 0, (path, t)
        assert t["delivered"] == t["expected"] > 0, (path, t)
        assert t["devices_complete"] == t["devices_expected"] == 50 * result["paths"][path][
            "subscribers"], (path, t)  # fmt: skip


def test_headless_run_delivers_every_message_and_agrees_with_locust_stats(stack, tmp_path):
    out = tmp_path / "run"
    # --e2e-in-stats: the deliveries are Locust entries of type E2E again, as many as measured
    run_locust(stack, out, *SCENARIO, "-t", "20s", "--e2e-in-stats", "true")
    result = e2e(out)
    _assert_every_message_accounted(result)
    assert result["published"]["messages"] > 50 * 10 * 15  # ~10 msg/s each for ~20 s

    stats = locust_stats(out)
    for path in PATHS:
        latency = result["paths"][path]["latency"]
        for hop in HOPS:
            assert ("E2E", f"{path}:{hop}") in stats
            assert latency[hop]["count"] == latency["total"]["count"]
        # Locust's E2E entry and our exact histogram saw the same messages.
        assert int(stats[("E2E", path)]["Request Count"]) == latency["total"]["count"]
        assert Histogram.decode(latency["total"]["hdr"]).count == latency["total"]["count"]
    assert int(stats[("MQTT", "publish:1:sensors/+/coordinates")]["Failure Count"]) == 0


def _near(value: float, reference: float, tolerance: float = 0.05) -> bool:
    return abs(value - reference) <= tolerance * reference


def test_locusts_request_rate_is_what_the_devices_really_sent(stack, tmp_path):
    """20 devices at 10 msg/s and 3 STOMP subscribers: Locust counts ~200 requests/s, not
    the ~3,800 it did when every delivery and hop was an E2E request (20 x 10 x (1 + 3 x 6))."""
    out = tmp_path / "run"
    run_locust(stack, out, "locustfiles/pipeline.py", "Device", "Dashboard", "-u", "23",
               "-r", "23", "-t", "8s", "--device-interval", "0.1", "--mqtt-qos", "1",
               "--e2e-drain", "1")  # fmt: skip
    result = e2e(out)
    published = result["published"]["messages"]
    assert published > 20 * 10 * 6, published
    delivered = result["paths"]["mqtt→stomp"]["totals"]["delivered"]
    assert delivered > 2 * published  # three subscribers: every delivery still measured ...
    stats = locust_stats(out)
    assert not [key for key in stats if key[0] == "E2E"]  # ... but none is a Locust request
    aggregated = stats[("", "Aggregated")]
    requests = int(aggregated["Request Count"])
    assert requests == sum(
        int(r["Request Count"]) for k, r in stats.items() if k[1] != "Aggregated"
    )
    # real requests: one per publish (to PUBACK) plus 23 connects and 3 subscribes
    assert _near(requests, published), (requests, published)
    publishes = int(stats[("MQTT", "publish:1:sensors/+/coordinates")]["Request Count"])
    assert _near(publishes, published, 0.01), (publishes, published)
    # Locust's RPS against the rate the devices published at, second by second
    with open(out / "timeseries.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["path"] == "mqtt→stomp"]
    per_second = [int(r["published"]) for r in rows if int(r["published"])][1:-1]  # full seconds
    sent_per_s = sum(per_second) / len(per_second)
    # Locust divides its count by the whole run, start and stop included; the full seconds'
    # mean is what the devices kept up in the middle. On a busy box the two part both ways:
    # 176 vs 188/s with a CPU hog beside the suite, 203.7 vs 176.1/s with a hog and a disk
    # writer (the devices fell behind mid-run and caught up at the end). Within 25 %: the
    # ~3,800/s this guards against is 19x
    assert _near(float(aggregated["Requests/s"]), sent_per_s, 0.25), (aggregated, sent_per_s)


def test_master_and_two_workers_merge_one_exact_histogram(stack, tmp_path):
    out = tmp_path / "run"
    run_locust(stack, out, *SCENARIO, "-t", "20s", "--processes", "2", *private_master(),
               "--e2e-in-stats", "true", "--e2e-hop-events", "false")  # fmt: skip
    result = e2e(out)
    _assert_every_message_accounted(result)
    assert len(result["workers_reported"]) == 2
    stats = locust_stats(out)  # the option reached the workers: their E2E entries are back
    assert not [key for key in stats if key[0] == "E2E" and ":" in key[1]]  # no hop entries
    for path in PATHS:
        subs = [s for s in result["subscribers"] if path in s["counters"]]
        by_worker: dict[str, int] = {}
        for s in subs:
            by_worker[s["worker"]] = (
                by_worker.get(s["worker"], 0) + s["counters"][path]["delivered"]
            )
        merged = Histogram.decode(result["paths"][path]["latency"]["total"]["hdr"])
        assert merged.count == sum(by_worker.values()) > 0
        assert int(stats[("E2E", path)]["Request Count"]) == merged.count
    # The 3 STOMP subscribers were spread over both workers, and both halves were merged.
    stomp_workers = {s["worker"] for s in result["subscribers"] if s["kind"] == "stomp"}
    assert len(stomp_workers) == 2


def test_a_stalled_bridge_shows_up_as_loss(own_stack, tmp_path):
    s = own_stack
    out = tmp_path / "run"
    locust = subprocess.Popen(
        locust_command(s, out, *SCENARIO, "-t", "16s", "--e2e-grace", "2", "--e2e-drain", "2"),
        cwd=ROOT, env=locust_env(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        # Let traffic flow, then freeze the bridge for the rest of the run.
        produced = 'pipeline_bridge_produced_messages_total{topic="mqtt-messages"}'
        wait_for(
            lambda: scraped(s.urls["bridge_metrics"], produced) > 2000,
            30,
            "traffic through the bridge",
        )
        s.pause("bridge")
        paused_at = time.time()
        assert locust.wait(120) == 0
    finally:
        s.resume("bridge")
        if locust.poll() is None:
            locust.kill()
    result = e2e(out)
    published = result["published"]["messages"]
    with open(out / "timeseries.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for path in PATHS:
        t = result["paths"][path]["totals"]
        per_sub = t["lost"] / result["paths"][path]["subscribers"]
        # everything published in the seconds after the bridge froze is lost to every
        # subscriber (by the timeline, not the clock: a busy box is slower to stop)
        after = sum(
            int(r["published"]) for r in rows if r["path"] == path and int(r["epoch_s"]) > paused_at
        )
        assert after > 1000 and after <= per_sub <= published, (path, t, after)
        assert t["delivered"] + t["lost"] == t["expected"], (path, t)
        assert t["duplicated"] == 0
    assert published > 0
