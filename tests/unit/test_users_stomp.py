"""StompSubscriber without a server: names, destinations, endpoint, options."""

from __future__ import annotations

import argparse

import pytest
from locust.env import Environment
from locust.event import Events

import telemetry
from tests.harness import parse_options
from users import stomp as stomp_users
from users.exceptions import ConfigError
from users.stomp import StompSubscriber, subscribe_name


class AllDevices(StompSubscriber):
    pass


class OneDevice(StompSubscriber):
    destination = "/topic/devices/{device_id}"


class Listed(StompSubscriber):
    destination = "/topic/devices/{device_id}"
    device_ids = ("cam-a", "cam-b")


def env(*args: str) -> Environment:
    return Environment(events=Events(), parsed_options=parse_options(*args))


def test_subscribe_names_are_templates_never_raw_ids():
    assert subscribe_name("/topic/coordinates") == "subscribe:/topic/coordinates"
    assert subscribe_name("/topic/devices/robot-0007") == "subscribe:/topic/devices/{id}"
    assert subscribe_name("/topic/devices/{device_id}") == "subscribe:/topic/devices/{id}"


def test_destination_and_endpoint_come_from_the_options(tmp_path, monkeypatch):
    monkeypatch.setenv("PIPESWARM_STATE_DIR", str(tmp_path))  # no running stack: no token
    user = AllDevices(env("--gateway-url", "http://10.1.2.3:9000/"))
    assert user.endpoint.url == "ws://10.1.2.3:9000/ws"
    assert user.topic == "/topic/coordinates"
    assert user.device_id is None
    assert user.subscribe_name == "subscribe:/topic/coordinates"
    assert user.client.token == ""
    assert user.client.heartbeats == (10_000, 10_000)

    user = AllDevices(env("--gateway-url", "https://gw.example", "--token", "jwt"))
    assert user.endpoint.url == "wss://gw.example:443/ws" and user.client.tls
    assert user.client.token == "jwt"

    fixed = AllDevices(env("--stomp-destination", "/topic/devices/robot-0042"))
    assert fixed.device_id == "robot-0042"
    assert fixed.subscribe_name == "subscribe:/topic/devices/{id}"


def test_device_destinations_follow_the_device_numbering_or_a_given_list():
    e = env()
    a, b = OneDevice(e), OneDevice(e)
    # the n-th subscriber watches the n-th MqttDevice (numbered per Environment)
    assert (a.device_id, b.device_id) == ("robot-0001", "robot-0002")
    assert a.topic == f"/topic/devices/{a.device_id}"
    assert a.subscribe_name == b.subscribe_name == "subscribe:/topic/devices/{id}"
    listed = {Listed(e).device_id for _ in range(4)}
    assert listed == {"cam-a", "cam-b"}


def test_a_device_count_spreads_many_subscribers_over_few_devices():
    e = env("--stomp-destination", "/topic/devices/{device_id}", "--stomp-device-count", "3")
    ids = [AllDevices(e).device_id for _ in range(7)]
    assert len(set(ids)) == 3 and set(ids) <= {f"robot-{i:04d}" for i in (1, 2, 3)}
    assert ids[:3] == ids[3:6]  # round robin


def test_a_negative_device_count_is_one_sentence():
    with pytest.raises(ConfigError, match="--stomp-device-count"):
        OneDevice(env("--stomp-device-count", "-1"))


def test_the_ledger_subscription_is_scoped_to_the_watched_device():
    e = env()
    plugin = telemetry.install(e)
    plugin.start_run("unit-run")
    try:
        one, every = OneDevice(e), AllDevices(e)
        for user in (one, every):
            user._ledger = telemetry.get_ledger(e)
            user.subscribed()
            user.subscribed()  # a re-subscribe after a reconnect keeps the same subscription
        assert one.sub is not None and every.sub is not None
        assert one.sub.devices == frozenset({one.device_id}) and one.sub.kind == "stomp"
        assert every.sub.devices is None
        assert len(telemetry.get_ledger(e).subscribers) == 2
    finally:
        plugin.probe.stop()


@pytest.mark.parametrize("bad", ["/queue/x", "/topic/devices/", "topic/coordinates"])
def test_unknown_destinations_are_one_sentence(bad):
    with pytest.raises(ConfigError, match="--stomp-destination"):
        stomp_users.DESTINATION.read(argparse.Namespace(stomp_destination=bad))


def test_a_bad_destination_option_exits_2_at_init(capsys):
    e = Environment(events=Events(), parsed_options=argparse.Namespace(stomp_destination="/x"))
    with pytest.raises(SystemExit) as exit_info:
        stomp_users.OPTIONS.validate(e)
    assert exit_info.value.code == 2
    assert "--stomp-destination '/x'" in capsys.readouterr().err
