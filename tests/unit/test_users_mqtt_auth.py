"""Each device's MQTT login: the URL's, a credentials file, or derived from a stack secret."""

from __future__ import annotations

import argparse
import json

import pytest
from locust.env import Environment

from pipeline.auth import mqtt_password
from tests.unit.test_users_mqtt import FakeClient
from users import _config, _mqtt_auth
from users.exceptions import ConfigError
from users.mqtt import MqttDevice


def test_a_secret_gives_each_device_its_id_and_the_brokers_password(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    login = _mqtt_auth.from_secret(str(secret))
    assert login("robot-0007") == ("robot-0007", mqtt_password("s3cret", "robot-0007"))
    assert login("robot-0007")[1] != login("robot-0008")[1]


def test_the_load_side_derives_exactly_what_the_stack_derives():
    for secret, user in (("s3cret", "robot-0001"), ("x" * 43, "pipeswarm-bridge"), ("é", "ü-1")):
        assert _mqtt_auth.mqtt_password(secret, user) == mqtt_password(secret, user)


def test_a_credentials_file_csv_or_json(tmp_path):
    csv_file = tmp_path / "creds.csv"
    csv_file.write_text("# device,password\nrobot-0001,pw1\n\nrobot-0002, pw2\n")
    login = _mqtt_auth.from_file(str(csv_file))
    assert login("robot-0002") == ("robot-0002", "pw2")
    with pytest.raises(ConfigError, match="no password for device 'robot-0003'"):
        login("robot-0003")
    json_file = tmp_path / "creds.json"
    json_file.write_text(json.dumps({"robot-0001": "pw1"}))
    assert _mqtt_auth.from_file(str(json_file))("robot-0001") == ("robot-0001", "pw1")
    bad = tmp_path / "bad.csv"
    bad.write_text("robot-0001\n")
    with pytest.raises(ConfigError, match="'device_id,password'"):
        _mqtt_auth.from_file(str(bad))


def _stack(tmp_path, **doc):
    (tmp_path / "stack.json").write_text(
        json.dumps(
            {
                "urls": {
                    "mqtt": "mqtt://127.0.0.1:1999",
                    "mqtt_tls": "mqtts://127.0.0.1:2999?ca=/x",
                },
                "secret_file": "/state/secret",
                **doc,
            }
        )
    )


def test_the_stacks_secret_only_for_the_stacks_broker(tmp_path):
    _stack(tmp_path)
    url = _config.parse_mqtt_url
    assert _config.stack_secret_file(url("mqtt://127.0.0.1:1999"), tmp_path) == "/state/secret"
    assert _config.stack_secret_file(url("mqtts://127.0.0.1:2999"), tmp_path) == "/state/secret"
    assert _config.stack_secret_file(url("mqtt://broker.example:1999"), tmp_path) == ""
    assert _config.stack_secret_file(url("mqtt://127.0.0.1:1883"), tmp_path) == ""
    _stack(tmp_path, mqtt_auth=False)
    assert _config.stack_secret_file(url("mqtt://127.0.0.1:1999"), tmp_path) == ""


def _devices(tmp_path, monkeypatch, *args: str, url: str | None = None) -> list[MqttDevice]:
    monkeypatch.setenv("PIPESWARM_STATE_DIR", str(tmp_path))
    values = {o.dest: None for o in _config.OPTIONS.options}
    values.update(dict(zip(args[::2], args[1::2], strict=True)))
    env = Environment(parsed_options=argparse.Namespace(**values))
    cls = type("Dev", (MqttDevice,), {"client_cls": FakeClient, "url": url})
    return [cls(env), cls(env)]


def test_each_device_logs_in_as_itself_from_the_running_stack(tmp_path, monkeypatch):
    secret = tmp_path / "secret"
    secret.write_text("s3cret" * 8)  # a JWT key of 32 bytes or more, as the stack's
    _stack(tmp_path, secret_file=str(secret))
    a, b = _devices(tmp_path, monkeypatch, "mqtt_url", "mqtt://127.0.0.1:1999")
    assert (a.client.cfg.username, a.client.cfg.password) == (
        a.device_id,
        mqtt_password("s3cret" * 8, a.device_id),
    )
    assert b.client.cfg.username == b.device_id != a.device_id
    # another broker: the stack's secret is not sent there
    (c, _) = _devices(tmp_path, monkeypatch, "mqtt_url", "mqtt://127.0.0.1:1883")
    assert c.client.cfg.username is None
    # the URL's user:pw is everybody's
    (d, _) = _devices(tmp_path, monkeypatch, url="mqtt://all:pw@127.0.0.1:1999")
    assert (d.client.cfg.username, d.client.cfg.password) == ("all", "pw")
    # a credentials file wins over the stack's secret
    creds = tmp_path / "creds.csv"
    creds.write_text("robot-0001,pw1\nrobot-0002,pw2\n")
    (e, f) = _devices(
        tmp_path, monkeypatch, "mqtt_url", "mqtt://127.0.0.1:1999", "mqtt_credentials", str(creds)
    )
    assert (e.client.cfg.username, e.client.cfg.password) == ("robot-0001", "pw1")
    assert f.client.cfg.password == "pw2"


def test_the_tool_account_is_the_stacks(tmp_path):
    from pipeline._mqtt_plugin import TOOL_USER
    from users._mqtt_auth import tool_login

    (tmp_path / "secret").write_text("s" * 43 + "\n")
    assert tool_login(str(tmp_path / "secret")) == (TOOL_USER, mqtt_password("s" * 43, TOOL_USER))
