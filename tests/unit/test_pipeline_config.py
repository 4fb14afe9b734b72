"""The pipeline's settings: one declaration, one reader, one error tree, one way to exit."""

from __future__ import annotations

import ast
import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest

import pipeline.exceptions as exc
from pipeline import __main__ as cli
from pipeline import _schema
from pipeline.config import (
    DEFAULTS,
    SETTINGS,
    ConfigError,
    MqttTarget,
    Settings,
    markdown,
    service_environ,
)
from pipeline.gateway import stomp

REPO = Path(__file__).resolve().parents[2]

#: Every variable and default the services read (README, docker-compose.yml and the
#: tests rely on these names and values: changing one is a breaking change).
EXPECTED = {
    "MQTT_URL": "mqtt://127.0.0.1:1883",
    "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092",
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    "GATEWAY_PORT": 8081,
    "GATEWAY_HOST": "127.0.0.1",
    "METRICS_HOST": "127.0.0.1",
    "BRIDGE_METRICS_PORT": 9101,
    "CONSUMER_METRICS_PORT": 9102,
    "KAFKA_TOPIC": "mqtt-messages",
    "KAFKA_DLQ_TOPIC": "mqtt-messages-dlq",
    "KAFKA_PARTITIONS": 8,
    "CONSUMER_GROUP": "pipeswarm-consumer",
    "CONSUMER_INSTANCE": 0,
    "CONSUMER_COMMIT_DELAY_MS": 2000,
    "REDIS_TTL_S": 3600,
    "STREAM_MAXLEN": 100_000,
    "MAX_PAYLOAD_BYTES": 65536,
    "BRIDGE_BUFFER": 10_000,
    "BRIDGE_CLIENT_ID": "pipeswarm-bridge",
    "BRIDGE_DELIVERY_TIMEOUT_MS": 300_000,
    "BRIDGE_LINGER_MS": 10,
    "INGEST_LINGER_MS": 10,
    "PUSH_MODE": "stream",
    "SNAPSHOT_INTERVAL_MS": 1000,
    "CLIENT_QUEUE": 10_000,
    "GC_FREEZE_S": 1,
    "GC_FULL_S": 600,
    "GATEWAY_AUTH": "on",
    "GATEWAY_JWT_SECRET_FILE": "",
    "GATEWAY_JWT_SECRET": "",
    "GATEWAY_READS": "public",
    "GATEWAY_MAX_BODY_BYTES": 65536,
    "GATEWAY_MAX_FRAME_BYTES": 65536,
    "GATEWAY_CONNECT_TIMEOUT_MS": 10000,
    "GATEWAY_MAX_SUBSCRIPTIONS": 100,
}


def test_every_setting_keeps_its_variable_and_default():
    assert {s.env: s.default for s in SETTINGS.values()} == EXPECTED
    assert Settings.from_env({}) == DEFAULTS == Settings()


def test_the_docs_table_is_current():
    path = REPO / "docs" / "pipeline-settings.md"
    assert path.read_text(encoding="utf-8") == markdown(), (
        "docs/pipeline-settings.md is stale: "
        "python -m pipeline.settings_doc > docs/pipeline-settings.md"
    )
    for env in EXPECTED:
        assert f"| `{env}` |" in markdown()


def test_values_are_read_and_converted():
    s = Settings.from_env(
        {"KAFKA_PARTITIONS": " 12 ", "PUSH_MODE": "snapshot", "GATEWAY_JWT_SECRET": "t0k"}
    )
    assert (s.kafka_partitions, s.push_mode, s.gateway_jwt_secret) == (12, "snapshot", "t0k")


def test_an_empty_variable_is_the_default_for_numbers_and_the_bridge_client_id():
    s = Settings.from_env({"KAFKA_PARTITIONS": "", "BRIDGE_CLIENT_ID": "", "KAFKA_TOPIC": ""})
    assert s.kafka_partitions == 8 and s.bridge_client_id == "pipeswarm-bridge"
    assert s.kafka_topic == ""  # as before: another string is taken as given


@pytest.mark.parametrize(
    ("env", "raw", "why"),
    [
        ("KAFKA_PARTITIONS", "abc", "must be an integer"),
        ("KAFKA_PARTITIONS", "0", "must be 1 or more"),
        ("REDIS_TTL_S", "-5", "must be 1 or more"),
        ("CONSUMER_INSTANCE", "two", "must be an integer"),
        ("GATEWAY_PORT", "70000", "must be a port number from 0 to 65535"),
        ("PUSH_MODE", "sideways", "must be 'stream' or 'snapshot'"),
        ("GATEWAY_AUTH", "maybe", "must be 'on' or 'off'"),
        ("GATEWAY_MAX_BODY_BYTES", "0", "must be 1 or more"),
        ("MQTT_URL", "http://broker:1883", "must start with mqtt:// or mqtts://"),
        ("MQTT_URL", "mqtt://broker:port", "must be an MQTT URL"),
    ],
)
def test_a_bad_value_is_one_sentence_naming_the_variable(env, raw, why):
    with pytest.raises(ConfigError) as err:
        Settings.from_env({env: raw})
    message = str(err.value)
    assert message.startswith(f"{env}={raw!r} {why}") and message.endswith(".")
    assert "\n" not in message
    assert isinstance(err.value, ValueError)  # callers that caught ValueError still do


def test_mqtt_target_parses_the_url_and_rejects_another_scheme():
    t = MqttTarget.from_url("mqtts://u%40x:p@h:8884")
    assert (t.host, t.port, t.username, t.password, t.tls) == ("h", 8884, "u@x", "p", True)
    with pytest.raises(ConfigError, match="must start with mqtt://"):
        MqttTarget.from_url("ws://h")


def test_service_environ_round_trips_through_the_reader():
    env = service_environ(kafka_partitions=4, push_mode="snapshot", redis_ttl_s=60)
    assert env == {"KAFKA_PARTITIONS": "4", "PUSH_MODE": "snapshot", "REDIS_TTL_S": "60"}
    s = Settings.from_env(env)
    assert (s.kafka_partitions, s.push_mode, s.redis_ttl_s) == (4, "snapshot", 60)


def test_up_mirrors_exactly_four_settings_with_their_checks():
    assert {s.flag: s.env for s in cli.MIRRORED} == {
        "--partitions": "KAFKA_PARTITIONS",
        "--redis-ttl": "REDIS_TTL_S",
        "--push-mode": "PUSH_MODE",
        "--snapshot-interval-ms": "SNAPSHOT_INTERVAL_MS",
    }
    args = cli._parser().parse_args(["up", "--partitions", "3", "--push-mode", "snapshot"])
    assert (args.kafka_partitions, args.push_mode, args.redis_ttl_s) == (3, "snapshot", None)
    for bad in (["--partitions", "0"], ["--redis-ttl", "x"], ["--push-mode", "sideways"]):
        with pytest.raises(SystemExit) as err:
            cli._parser().parse_args(["up", *bad])
        assert err.value.code == 2


# -- one error tree ----------------------------------------------------------------------------
def test_every_pipeline_error_is_defined_in_exceptions_and_drawn_in_its_docstring():
    tree = exc.__doc__ or ""
    classes = [obj for name in exc.__all__ if inspect.isclass(obj := getattr(exc, name))]
    assert {"ConfigError", "CommandUnavailable", "CommandNotConfirmed", "StompProtocolError"} <= {
        cls.__name__ for cls in classes
    }
    for cls in classes:
        assert issubclass(cls, exc.PipelineError) and cls.__module__ == "pipeline.exceptions"
        assert f" {cls.__name__} " in tree, cls.__name__
    # the gateway's and the schema's names are the same classes
    assert stomp.StompProtocolError is exc.StompProtocolError
    assert _schema.Rejected is exc.Rejected


def test_no_other_pipeline_module_defines_an_exception():
    for path in (REPO / "pipeline").rglob("*.py"):
        if path.name == "exceptions.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                bases = {ast.unparse(b) for b in node.bases}
                assert not any(b.endswith(("Error", "Exception")) for b in bases), (
                    f"{path.relative_to(REPO)}: {node.name} belongs in pipeline/exceptions.py"
                )


def test_exit_codes():
    assert exc.exit_code(exc.ConfigError("x")) == exc.EXIT_USAGE == 2
    assert exc.exit_code(exc.PortTaken("x")) == 2
    assert exc.exit_code(exc.CommandUnavailable("x")) == 1
    assert exc.exit_code(exc.StompProtocolError("bad", "x")) == 1
    assert exc.exit_code(RuntimeError("x")) == 1


# -- one way to exit: every service, a bad setting -----------------------------------------------
@pytest.mark.parametrize(
    ("argv", "env", "line"),
    [
        (["-m", "pipeline.bridge"], {"KAFKA_PARTITIONS": "abc"}, "KAFKA_PARTITIONS='abc'"),
        (["-m", "pipeline.consumer"], {"KAFKA_PARTITIONS": "abc"}, "KAFKA_PARTITIONS='abc'"),
        (["-m", "pipeline.gateway"], {"PUSH_MODE": "sideways"}, "PUSH_MODE='sideways'"),
        (["-m", "pipeline.bridge"], {"MQTT_URL": "http://x"}, "MQTT_URL='http://x'"),
        (["-m", "pipeline", "up", "--ports", "auto"], {"PUSH_MODE": "sideways"}, "PUSH_MODE="),
        (["-m", "pipeline", "up", "--ports", "auto"], {"REDIS_TTL_S": "0"}, "REDIS_TTL_S='0'"),
    ],
)
def test_a_bad_setting_ends_every_service_with_one_line_and_exit_2(tmp_path, argv, env, line):
    if argv[1] == "pipeline":  # the launcher: its own state dir, nothing started
        argv = [*argv[:2], "--state-dir", str(tmp_path), *argv[2:]]
    result = subprocess.run(
        [sys.executable, *argv],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith(f"pipeline: {line}"), lines[0]
    assert not (tmp_path / "stack.json").exists() and not (tmp_path / "logs").exists()
