"""users._config: URL parsing, option registration and precedence, stack.json defaults."""

from __future__ import annotations

import argparse
import json

import pytest
from locust.argument_parser import get_parser
from locust.env import Environment

from users import _config
from users._config import MqttUrl, parse_mqtt_url, settings
from users.exceptions import ConfigError


def _one_sentence(err: ConfigError) -> str:
    text = str(err)
    assert "\n" not in text and text.endswith("."), text
    return text


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mqtt://127.0.0.1", MqttUrl("127.0.0.1", 1883)),
        ("mqtt://broker:1884", MqttUrl("broker", 1884)),
        ("mqtts://broker", MqttUrl("broker", 8883, tls=True)),
        ("mqtt://dev:s%40cret@h:1", MqttUrl("h", 1, "dev", "s@cret")),
        ("mqtt://dev@h", MqttUrl("h", 1883, "dev", None)),
        (
            "mqtts://h?ca=/tmp/ca.pem&insecure=1",
            MqttUrl("h", 8883, tls=True, ca_file="/tmp/ca.pem", insecure=True),
        ),
    ],
)
def test_mqtt_url_parses(url, expected):
    assert parse_mqtt_url(url) == expected


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("http://h:1883", "scheme must be mqtt:// or mqtts://"),
        ("mqtt://:1883", "host is missing"),
        ("mqtt://h:99999", "not a valid URL"),
        ("mqtt://h:port", "not a valid URL"),
        ("mqtt://h/sensors", "no path"),
        ("mqtt://h?ca=x", "only apply to mqtts://"),
        ("mqtts://h?verify=0", "unknown parameter 'verify'"),
    ],
)
def test_bad_mqtt_url_is_one_sentence(url, words):
    with pytest.raises(ConfigError) as info:
        parse_mqtt_url(url)
    text = _one_sentence(info.value)
    assert text.startswith(f"--mqtt-url {url!r}:") and words in text


def test_password_never_printed():
    assert str(parse_mqtt_url("mqtt://dev:secret@h")) == "mqtt://dev:***@h:1883"


def test_other_backend_urls_are_validated():
    assert _config.parse_kafka_bootstrap("kafka://a:9092,b:9093/") == "a:9092,b:9093"
    assert _config.parse_http_url("http://h:8081/") == "http://h:8081"
    assert _config.parse_redis_url("redis://h:6379/0") == "redis://h:6379/0"
    for fn, bad in [
        (_config.parse_kafka_bootstrap, "h"),
        (_config.parse_kafka_bootstrap, "h:x"),
        (_config.parse_http_url, "ws://h"),
        (_config.parse_redis_url, "http://h"),
    ]:
        with pytest.raises(ConfigError) as info:
            fn(bad)
        _one_sentence(info.value)


def _parse(args, tmp_path, monkeypatch, config: str | None = None, stack: dict | None = None):
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    monkeypatch.setenv("PIPESWARM_STATE_DIR", str(state))
    if stack is not None:
        (state / "stack.json").write_text(json.dumps({"urls": stack}))
    files = []
    if config is not None:
        conf = tmp_path / "locust.conf"
        conf.write_text(config)
        files = [str(conf)]
    return get_parser(default_config_files=files).parse_args(["-f", "x.py", *args])


def test_options_defaults(tmp_path, monkeypatch):
    opts = _parse([], tmp_path, monkeypatch)
    assert opts.mqtt_url == "mqtt://127.0.0.1:1883"
    assert opts.gateway_url == "http://127.0.0.1:8081"
    assert opts.kafka_bootstrap == "127.0.0.1:9092"
    assert opts.redis_url == "redis://127.0.0.1:6379/0"
    assert (opts.device_interval, opts.mqtt_qos, opts.mqtt_version, opts.mqtt_keepalive) == (
        0.1,
        1,
        "3.1.1",
        60,
    )
    assert opts.payload_template == ""


def test_cli_beats_env_beats_config_file(tmp_path, monkeypatch):
    conf = "mqtt-url = mqtt://from-conf:1\ndevice-interval = 0.5\nmqtt-qos = 2\n"
    opts = _parse([], tmp_path, monkeypatch, config=conf)
    assert (opts.mqtt_url, opts.device_interval, opts.mqtt_qos) == ("mqtt://from-conf:1", 0.5, 2)
    monkeypatch.setenv("PIPESWARM_MQTT_URL", "mqtt://from-env:2")
    monkeypatch.setenv("PIPESWARM_DEVICE_INTERVAL", "0.25")
    opts = _parse([], tmp_path, monkeypatch, config=conf)
    assert (opts.mqtt_url, opts.device_interval) == ("mqtt://from-env:2", 0.25)
    opts = _parse(["--mqtt-url", "mqtt://from-cli:3"], tmp_path, monkeypatch, config=conf)
    assert opts.mqtt_url == "mqtt://from-cli:3"


def test_stack_json_supplies_defaults_and_explicit_wins(tmp_path, monkeypatch):
    stack = {
        "mqtt": "mqtt://127.0.0.1:41883",
        "kafka": "127.0.0.1:49092",
        "gateway": "http://127.0.0.1:48081",
    }
    opts = _parse([], tmp_path, monkeypatch, stack=stack)
    assert (opts.mqtt_url, opts.kafka_bootstrap, opts.gateway_url) == (
        "mqtt://127.0.0.1:41883",
        "127.0.0.1:49092",
        "http://127.0.0.1:48081",
    )
    assert opts.redis_url == "redis://127.0.0.1:6379/0"  # not in the file: built-in default
    monkeypatch.setenv("PIPESWARM_KAFKA_BOOTSTRAP", "k:1")
    opts = _parse(["--mqtt-url", "mqtt://mine:1"], tmp_path, monkeypatch, stack=stack)
    assert (opts.mqtt_url, opts.kafka_bootstrap) == ("mqtt://mine:1", "k:1")


def test_unreadable_stack_json_means_no_stack(tmp_path):
    (tmp_path / "stack.json").write_text("{not json")
    assert _config.stack_urls(tmp_path) == {}
    assert _config.stack_urls(tmp_path / "missing") == {}


def _namespace(**over):
    values = {o.dest: None for o in _config.OPTIONS.options}
    values.update(over)
    return argparse.Namespace(**values)


def test_settings_parsed_once_and_again_on_change():
    env = Environment(
        parsed_options=_namespace(mqtt_url="mqtts://u:p@b:1", mqtt_version="5", mqtt_qos="2")
    )
    s = settings(env)
    assert s is settings(env)
    assert (s.mqtt.tls, s.mqtt.username, s.mqtt_version, s.mqtt_qos) == (True, "u", 5, 2)
    env.parsed_options.device_interval = "0.5"  # the web UI hands strings back
    s2 = settings(env)
    assert s2 is not s and s2.device_interval == 0.5


def test_bad_option_exits_2_with_one_sentence(capsys):
    env = Environment(parsed_options=_namespace(mqtt_qos=3))
    with pytest.raises(SystemExit) as info:
        _config.OPTIONS.validate(env)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err == "pipeswarm: --mqtt-qos 3: must be 0, 1 or 2.\n"


def test_bare_environment_gets_defaults():
    s = settings(Environment())
    assert s.mqtt_qos == 1 and s.device_interval == 0.1 and s.mqtt_version == 4


def test_bare_environment_takes_the_stack(tmp_path, monkeypatch):
    (tmp_path / "stack.json").write_text(json.dumps({"urls": {"mqtt": "mqtt://127.0.0.1:41883"}}))
    monkeypatch.setenv("PIPESWARM_STATE_DIR", str(tmp_path))
    assert settings(Environment()).mqtt.port == 41883


def test_bad_template_file_exits_2_at_start(tmp_path, capsys):
    path = tmp_path / "t.json"
    path.write_text("{not json")
    env = Environment(parsed_options=_namespace(payload_template=str(path)))
    with pytest.raises(SystemExit) as info:
        _config.OPTIONS.validate(env)
    assert info.value.code == 2
    assert "not valid JSON" in capsys.readouterr().err
