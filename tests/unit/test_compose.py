"""docker-compose.yml is valid and wired like the embedded stack (no engine here to run it)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def compose_config(**env: str) -> subprocess.CompletedProcess[str]:
    """``docker-compose config`` with only ``env`` set (not a developer's own .env)."""
    secrets = ("GRAFANA_ADMIN_PASSWORD", "PIPESWARM_SECRET")
    clean = {k: v for k, v in os.environ.items() if k not in secrets}
    with tempfile.NamedTemporaryFile("w", suffix=".env") as empty:
        return subprocess.run(
            ["docker-compose", "--project-directory", str(ROOT), "-f", str(ROOT / "docker-compose.yml"),
             "--env-file", empty.name, "config", "-q"],
            capture_output=True, text=True, timeout=60, env={**clean, **env},
        )  # fmt: skip


needs_compose = pytest.mark.skipif(
    shutil.which("docker-compose") is None, reason="docker-compose not installed"
)


@needs_compose
def test_docker_compose_config_is_valid():
    result = compose_config(GRAFANA_ADMIN_PASSWORD="s3cret", PIPESWARM_SECRET="x" * 32)
    assert result.returncode == 0, result.stderr


@needs_compose
def test_compose_refuses_to_start_grafana_without_a_password_in_one_sentence():
    result = compose_config(PIPESWARM_SECRET="x" * 32)
    assert result.returncode != 0
    assert "set GRAFANA_ADMIN_PASSWORD in .env" in result.stderr


@needs_compose
def test_compose_refuses_to_start_the_gateway_without_a_token_secret():
    result = compose_config(GRAFANA_ADMIN_PASSWORD="s3cret")
    assert result.returncode != 0
    assert "set PIPESWARM_SECRET in .env" in result.stderr


def services() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]


def test_every_service_is_in_a_profile_and_the_example_env_starts_them_all():
    profiles = {name: svc.get("profiles", []) for name, svc in services().items()}
    assert all(len(p) == 1 for p in profiles.values()), profiles
    assert {name for name, p in profiles.items() if p == ["sut"]} == {
        "mosquitto", "redis", "kafka", "bridge", "consumer", "gateway"
    }  # fmt: skip
    assert {name for name, p in profiles.items() if p == ["load"]} == {
        "locust-master", "locust-worker"
    }  # fmt: skip
    example = (ROOT / ".env.example").read_text()
    assert "COMPOSE_PROFILES=sut,load,monitoring" in example.splitlines()


def test_dependencies_wait_for_healthchecks_within_a_profile():
    svcs = services()
    for name, svc in svcs.items():
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert cond == {"condition": "service_healthy"}, (name, dep)
            assert "healthcheck" in svcs[dep], dep
            assert svcs[dep]["profiles"] == svc["profiles"], (name, dep)
    assert {"bridge", "consumer", "gateway"} <= {n for n, s in svcs.items() if "depends_on" in s}


def test_published_ports_are_loopback_only_and_nothing_is_open_by_default():
    for name, svc in services().items():
        for port in svc.get("ports", []):
            assert port.startswith("127.0.0.1:"), (name, port)
    svcs = services()
    assert "--web.enable-lifecycle" not in svcs["prometheus"]["command"]
    grafana = svcs["grafana"]["environment"]
    assert grafana["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert "admin" not in grafana["GF_SECURITY_ADMIN_PASSWORD"].split(":")[0]


def test_the_gateway_and_locust_share_the_token_secret():
    svcs = services()
    secret = "${PIPESWARM_SECRET:?set PIPESWARM_SECRET in .env (see .env.example)}"
    assert svcs["gateway"]["environment"]["GATEWAY_JWT_SECRET"] == secret
    for name in ("locust-master", "locust-worker"):
        assert svcs[name]["environment"]["PIPESWARM_JWT_SECRET"] == secret


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
