"""A synthetic results folder written by telemetry's own code, for the report tests.

The ledger, collector, time series and writers of ``telemetry`` produce
``e2e.json`` (real encoded HDR histograms), ``timeseries.csv`` and the loss
accounting; Locust's own ``StatsCSVFileWriter`` writes the ``--csv`` files. Only
the traffic is made up — deterministically, so the tests know every answer:

- 5 devices x 200 messages (10/s for 20 s), every leg stamped (bridge, consumer, gateway);
- ``mqtt→stomp`` (all devices): robot-0002 seqs 50-54 never arrive, robot-0005's
  last 3 never arrive (8 lost), robot-0001 seq 10 twice (1 duplicated),
  robot-0003 seq 20 after 21 (1 reordered), robot-0004 seq 100 after the grace
  window (1 late);
- ``mqtt→ws`` (robot-0001..3): everything arrives once.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from locust.env import Environment
from locust.event import Events
from locust.stats import PERCENTILES_TO_REPORT, StatsCSVFileWriter

from telemetry import results
from telemetry.collector import Collector
from telemetry.hdr import Histogram
from telemetry.ledger import Ledger
from telemetry.timeseries import Sample, Timeseries

DEVICES = [f"robot-{i:04d}" for i in range(1, 6)]
WS_DEVICES = DEVICES[:3]
SEQS = 200
INTERVAL_NS = 100_000_000  # 10 msg/s per device
GRACE_S = 1.0
LOST_STOMP = 8
PUBLISH_NAME = "publish:1:sensors/+/coordinates"


@dataclass
class Synthetic:
    """What was built, and the raw samples to check the report against."""

    folder: Path
    run_id: str
    total_us: dict[str, list[int]] = field(default_factory=dict)  # path -> every total sample (µs)
    legs_us: dict[tuple[str, str], list[int]] = field(default_factory=dict)


def _legs_ns(device: int, seq: int, scale: float) -> tuple[int, int, int, int, int]:
    """schedule lag, mqtt, kafka, redis, push (ns): deterministic, with a tail."""
    wobble = (seq * 7 + device * 13) % 100  # 0..99
    tail = 15.0 if seq % 97 == 0 else 1.0  # ~1 % slow messages (still < 100 ms: in order)
    return (
        int(50_000 + 1_000 * wobble),
        int(scale * (400_000 + 10_000 * wobble)),
        int(scale * tail * (1_500_000 + 20_000 * wobble)),
        int(scale * (200_000 + 3_000 * wobble)),
        int(scale * (300_000 + 5_000 * (99 - wobble))),
    )


def build_run(
    folder: Path,
    *,
    run_id: str = "20260101-000000-abcd",
    scale: float = 1.0,
    hot: bool = False,
    locust_csv: bool = True,
    snapshot: bool = False,
) -> Synthetic:
    """Write a complete results folder into ``folder`` (created) and return what it holds."""
    folder.mkdir(parents=True, exist_ok=True)
    env = Environment(events=Events())
    stats = env.stats

    def fire(name: str, ms: float, length: int) -> None:  # a run with --e2e-in-stats true
        stats.log_request("E2E", name, ms, length)

    ledger = Ledger(run_id, grace_s=GRACE_S, fire=fire, source="local")
    base_s = math.floor(time.time()) - 60
    base_ns = base_s * 1_000_000_000
    stomp = ledger.subscriber("stomp")
    ws = ledger.subscriber("ws", WS_DEVICES)
    stomp.since_ns = ws.since_ns = base_ns - 1  # subscribed before the first publish
    out = Synthetic(folder, run_id)

    deliveries: list[tuple[int, str, object, dict]] = []  # (recv_ns, order key, sub, message)
    for d, device in enumerate(DEVICES):
        for seq in range(1, SEQS + 1):
            t0 = base_ns + d * 1_000_000 + seq * INTERVAL_NS
            lag, mqtt, kafka, redis, push = _legs_ns(d, seq, scale)
            tp = t0 + lag
            bridge, consumer = tp + mqtt, tp + mqtt + kafka
            gateway = consumer + redis
            recv = gateway + push
            ledger.published(device, seq, t0, tp)
            stats.log_request("MQTT", PUBLISH_NAME, 1 + (seq % 20) * scale, 120)
            msg = {
                "device_id": device, "x": float(seq), "y": 1.0, "timestamp": t0 / 1e9,
                "trace": {"run": run_id, "seq": seq, "t0": t0, "tp": tp,
                          "hops": {"bridge": bridge, "consumer": consumer, "gateway": gateway}},
            }  # fmt: skip
            for sub in (stomp, ws):
                if sub is ws and device not in WS_DEVICES:
                    continue
                if sub is stomp and (
                    (device == "robot-0002" and 50 <= seq <= 54)
                    or (device == "robot-0005" and seq > SEQS - 3)
                ):
                    continue
                when = recv
                if sub is stomp and device == "robot-0003" and seq == 20:
                    when = recv + 150_000_000  # after seq 21: reordered
                if sub is stomp and device == "robot-0004" and seq == 100:
                    when = recv + int(3 * GRACE_S * 1e9)  # after the grace window: late
                deliveries.append((when, f"{d}-{seq}", sub, msg))
                if sub is stomp and device == "robot-0001" and seq == 10:
                    deliveries.append((when + 1_000, f"{d}-{seq}-dup", sub, msg))
                path = f"mqtt→{sub.kind}"
                out.total_us.setdefault(path, []).append((when - t0) // 1000)
                for hop, value in (
                    ("mqtt", mqtt),
                    ("kafka", kafka),
                    ("redis", redis),
                    ("push", when - gateway),
                ):
                    out.legs_us.setdefault((path, hop), []).append(value // 1000)
    if snapshot:  # a snapshot-mode subscriber: the latest value of every device once a second
        snap = ledger.subscriber("snap")
        snap.since_ns = base_ns - 1
        for sec in range(1, SEQS // 10 + 1):
            sent = base_ns + sec * 10 * INTERVAL_NS + 50_000_000
            latest = [
                {"device_id": device, "x": 1.0, "y": 1.0, "timestamp": 0.0,
                 "trace": {"run": run_id, "seq": sec * 10, "t0": base_ns + d * 1_000_000 + sec * 10 * INTERVAL_NS,
                           "tp": base_ns + d * 1_000_000 + sec * 10 * INTERVAL_NS + 50_000, "hops": {}}}
                for d, device in enumerate(DEVICES)
            ]  # fmt: skip
            batch = {"type": "snapshot", "sent_ns": sent, "devices": latest}
            deliveries.append((sent + 2_000_000, f"snap-{sec}", snap, batch))
    deliveries.sort(key=lambda x: (x[0], x[1]))
    for when, _key, sub, msg in deliveries:
        sub.received(json.dumps(msg).encode(), when)  # type: ignore[attr-defined]
    end_ns = base_ns + (SEQS + 40) * INTERVAL_NS

    # two command entries and a REST round trip with failures, as the users fire them
    for i in range(20):
        stats.log_request("MQTT", "command:orin/+/command", 5 + i * scale, 40)
        stats.log_request("HTTP", "POST /api/commands/{id}", 10 + i * scale, 60)
    for _ in range(2):
        stats.log_error("HTTP", "POST /api/commands/{id}", "HTTPError('503 Service Unavailable')")
        stats.log_request("HTTP", "POST /api/commands/{id}", 30, 0)

    for entry in [*stats.entries.values(), stats.total]:  # a 20 s run, whatever the build took
        entry.start_time, entry.last_request_timestamp = base_s, base_s + SEQS // 10

    collector = Collector(run_id, grace_s=GRACE_S, drain_s=3.0)
    payload = ledger.final(end_ns)
    lag = Histogram()
    for i in range(1000):
        lag.record_us((30_000 if hot and i % 50 == 0 else 200) + i)
    payload["looplag"] = lag.to_wire()
    collector.merge("local", payload)

    def sample_for(sec: int) -> Sample:
        cpu = 95.0 if hot and sec % 2 else 40.0 + (sec % 10)
        return Sample(users=8, workers=1, cpu={"local": cpu}, lost=collector.lost_so_far())

    current = {"sec": base_s}
    series = Timeseries(
        collector, lambda: sample_for(current["sec"]), started_s=base_s, close_delay_s=0
    )
    for sec in range(base_s, base_s + SEQS // 10 + 6):
        current["sec"] = sec
        series.tick(sec + 0.5)
    series.flush()

    e2e = collector.e2e()
    results.write_json(folder / "e2e.json", e2e)
    results.write_timeseries(folder / "timeseries.csv", series.rows)
    started, ended = float(base_s), end_ns / 1e9
    results.write_json(
        folder / "run.json",
        {
            "format": results.RUN_FORMAT, "run_id": run_id, "mode": "local",
            "started_at": "2026-01-01T00:00:00+00:00", "ended_at": "2026-01-01T00:00:24+00:00",
            "started_epoch_s": started, "ended_epoch_s": round(ended, 3),
            "duration_s": round(ended - started, 3), "locustfile": "locustfiles/pipeline.py",
            "scenario": "pipeline", "host": None, "user_classes": ["MqttDevice", "StompSubscriber"],
            "user_classes_count": {"MqttDevice": 5, "StompSubscriber": 3}, "user_count": 8,
            "peak_users": 8, "worker_count": 0, "workers": [], "hosts": ["testhost"],
            "master": {"hostname": "testhost", "platform": "Linux", "cpu_count": 2, "argv": ["locust"]},
            "cross_host_timing": False, "versions": results.versions(),
            "options": {"run_time": 20, "num_users": 8, "csv_prefix": str(folder / "locust")},
            "e2e": {"grace_s": GRACE_S, "drain_s": 3.0, "complete": True, "paths": sorted(e2e["paths"])},
            "files": {"e2e": "e2e.json", "timeseries": "timeseries.csv"},
        },
    )  # fmt: skip
    if locust_csv:
        writer = StatsCSVFileWriter(
            env, PERCENTILES_TO_REPORT, str(folder / "locust"), full_history=True
        )
        writer.requests_csv(writer.requests_csv_writer)
        writer.failures_csv(writer.failures_csv_writer)
        writer.exceptions_csv(writer.exceptions_csv_writer)
        writer.stats_history_csv_writer.writerow(writer.stats_history_csv_columns)
        writer._stats_history_data_rows(writer.stats_history_csv_writer, base_s + 10)
        writer.close_files()
    return out


def test_the_synthetic_folder_is_what_telemetry_documents(tmp_path):
    built = build_run(tmp_path / "run")
    e2e = json.loads((built.folder / "e2e.json").read_text())
    stomp = e2e["paths"]["mqtt→stomp"]["totals"]
    assert stomp["published"] == len(DEVICES) * SEQS
    assert stomp["lost"] == LOST_STOMP
    assert (stomp["duplicated"], stomp["reordered"], stomp["late"]) == (1, 1, 1)
    assert stomp["delivered"] == len(DEVICES) * SEQS - LOST_STOMP
    ws = e2e["paths"]["mqtt→ws"]["totals"]
    assert (ws["delivered"], ws["lost"]) == (len(WS_DEVICES) * SEQS, 0)
    assert set(e2e["paths"]["mqtt→stomp"]["latency"]) == {
        "total",
        "service",
        "mqtt",
        "kafka",
        "redis",
        "push",
    }
    assert (built.folder / "locust_stats.csv").is_file()
