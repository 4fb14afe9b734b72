"""docker-compose.yml is valid and wired like the embedded stack (no engine here to run it)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
def test_docker_compose_config_is_valid():
    result = subprocess.run(
        ["docker-compose", "config", "-q"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def test_services_get_the_urls_the_pipeline_reads():
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = doc["services"]
    for name in ("bridge", "consumer", "gateway"):
        env = services[name]["environment"]
        assert env["MQTT_URL"] == "mqtt://mosquitto:1883"
        assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
        assert env["REDIS_URL"] == "redis://redis:6379/0"
        assert services[name]["command"] == ["python", "-m", f"pipeline.{name}"]
    assert "max_queued_messages 1000000" in (ROOT / "deploy/mosquitto.conf").read_text()


def test_compose_runs_the_kafka_release_the_embedded_stack_runs():
    from pipeline._kafka_server import KAFKA_VERSION

    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert doc["services"]["kafka"]["image"] == f"apache/kafka:{KAFKA_VERSION}"
