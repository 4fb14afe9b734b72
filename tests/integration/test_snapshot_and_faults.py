"""Snapshot push mode, a Redis outage under load, and a taken port."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time

import httpx
import pytest
import redis
import websocket

from pipeline._mqtt_plugin import GATEWAY_USER
from pipeline._procs import free_port, http_ok, spawn, wait_until
from tests.helpers import (
    closed_port,
    mqtt_client,
    scraped,
    stack_token,
    taken_port,
    traced,
    wait_for,
)

pytestmark = pytest.mark.integration


def test_snapshot_mode_sends_one_batch_per_interval_with_every_device(stack, tmp_path):
    port = free_port()
    env = {
        **stack.service_env(),
        "MQTT_URL": stack.mqtt_url_for(GATEWAY_USER),
        "GATEWAY_PORT": str(port),
        "PUSH_MODE": "snapshot",
        "SNAPSHOT_INTERVAL_MS": "200",
    }
    proc, popen = spawn(
        "gateway-snapshot", [sys.executable, "-m", "pipeline.gateway"], tmp_path, env=env
    )
    try:
        wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/api/health"), 30, "gateway", popen)
        pub = mqtt_client(stack)
        devices = [f"snap-{i}" for i in range(5)]
        for seq in (1, 2, 3):
            for d in devices:
                pub.publish(f"sensors/{d}/coordinates", traced(d, seq), qos=1).wait_for_publish(5)
        pub.loop_stop()
        ws = websocket.create_connection(
            f"ws://127.0.0.1:{port}/coordinates?token={stack_token(stack)}", timeout=5
        )

        def latest_seqs(batch: dict) -> dict[str, int]:
            return {
                m["device_id"]: m["trace"]["seq"]
                for m in batch["devices"]
                if m["device_id"] in devices
            }

        # Wait for a batch that has everything, then time the next few.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            batch = json.loads(ws.recv())
            if latest_seqs(batch) == {d: 3 for d in devices}:
                break
        else:
            raise AssertionError("no snapshot ever held the latest value of every device")
        assert batch["type"] == "snapshot"
        arrivals = []
        for _ in range(11):
            batch = json.loads(ws.recv())
            arrivals.append(time.monotonic())
            assert latest_seqs(batch) == {d: 3 for d in devices}
        gaps = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]
        # one batch per 200 ms interval: over 10 intervals, and for most of them. A
        # single gap holds this process's read time too: with a CPU hog beside the
        # suite, four gaps were 0.42, 0.08, 0.14 and 0.10 s.
        assert 0.15 < (arrivals[-1] - arrivals[0]) / 10 < 0.3, gaps
        assert 0.1 < statistics.median(gaps) < 0.4 and max(gaps) < 1.5, gaps
        ws.close()
    finally:
        proc.stop()


def test_redis_outage_under_load_loses_nothing_and_the_breaker_recovers(own_stack):
    s = own_stack
    devices = [f"outage-{i}" for i in range(20)]
    per_device = 100  # 2,000 messages at 200 msg/s: 10 s, Redis away from 2 s to 7 s
    published = 0
    pub = mqtt_client(s)

    def publish() -> None:
        nonlocal published
        start = time.monotonic()
        for seq in range(1, per_device + 1):
            for d in devices:
                pub.publish(f"sensors/{d}/coordinates", traced(d, seq), qos=1)
                published += 1
                # open-loop schedule: message n is due at start + n / 200
                delay = start + published / 200 - time.monotonic()
                if delay > 0:
                    time.sleep(delay)

    publisher = threading.Thread(target=publish)
    publisher.start()
    try:
        wait_for(lambda: published >= 400, 10, "2 s of traffic")
        s.stop_service("redis")
        outage_started = time.monotonic()
        wait_for(
            lambda: scraped(s.urls["consumer_metrics"], "pipeline_consumer_breaker_state") == 1.0,
            10,
            "the breaker to open",
        )
        time.sleep(max(0.0, 5 - (time.monotonic() - outage_started)))  # the outage itself
        s.start_service("redis")
        publisher.join(30)
        assert published == len(devices) * per_device

        r = redis.Redis.from_url(s.urls["redis"])
        wait_for(
            lambda: int(r.get("pipeswarm:total") or 0) >= published, 60, "every message in Redis"
        )
        assert int(r.get("pipeswarm:total")) == published
        counts = {k.decode(): int(v) for k, v in r.hgetall("pipeswarm:counts").items()}
        assert all(counts[d] == per_device for d in devices), counts
        for d in devices:
            latest = json.loads(r.get(f"pipeswarm:latest:{d}"))
            assert latest["trace"]["seq"] == per_device

        m = s.urls["consumer_metrics"]
        assert scraped(m, "pipeline_consumer_breaker_state") == 0.0
        text = httpx.get(m).text
        assert 'pipeline_consumer_breaker_transitions_total{state="open"}' in text
        opened = scraped(m, 'pipeline_consumer_breaker_transitions_total{state="open"}')
        closed = scraped(m, 'pipeline_consumer_breaker_transitions_total{state="closed"}')
        assert opened >= 1 and closed >= 1
        assert scraped(m, "pipeline_consumer_redis_errors_total") >= 1
        wait_for(
            lambda: httpx.get(s.urls["gateway"] + "/api/health").status_code == 200,
            20,
            "the gateway to be healthy again",
        )
    finally:
        pub.loop_stop()
        publisher.join(5)


def _up(state_dir, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pipeline", "--state-dir", str(state_dir), "up",
           "--ports", "auto", *args]  # fmt: skip
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})}
    )


def _one_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_taken_port_exits_2_naming_the_port_and_the_option(tmp_path):
    with taken_port() as port:
        line = _one_line(_up(tmp_path, "--mqtt-port", str(port)))
    assert str(port) in line and "--mqtt-port" in line
    assert not (tmp_path / "stack.json").exists()


def test_unreachable_external_kafka_exits_2_naming_the_fix(tmp_path):
    line = _one_line(_up(tmp_path, "--kafka-bootstrap", f"127.0.0.1:{closed_port()}"))
    assert "Kafka at 127.0.0.1:" in line and "--kafka-bootstrap" in line
    assert not (tmp_path / "stack.json").exists()


def test_missing_kafka_jars_exit_2_naming_the_fix(tmp_path):
    line = _one_line(_up(tmp_path, env={"PIPESWARM_KAFKA_HOME": str(tmp_path / "no-kafka")}))
    assert "Apache Kafka" in line and "is not installed" in line and "make setup" in line
    assert not (tmp_path / "stack.json").exists() and not (tmp_path / "logs").exists()
