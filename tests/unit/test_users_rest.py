"""RestCommander without a gateway: its host and how it picks target devices."""

from __future__ import annotations

from locust.env import Environment
from locust.event import Events

import telemetry
from tests.harness import parse_options
from users.rest import RestCommander


class Commander(RestCommander):
    pass


class Fixed(RestCommander):
    host = "http://fixed:1"
    device_ids = ("robot-0001",)


def msg(device_id: str, run: str | None, src: str | None = None) -> dict:
    body: dict = {"device_id": device_id, "x": 1.0, "y": 2.0}
    if run is not None:
        body["trace"] = {"run": run, "seq": 1, "t0": 1, "tp": 1, "hops": {}}
        if src:
            body["trace"]["src"] = src
    return body


def env() -> Environment:
    return Environment(
        events=Events(), parsed_options=parse_options("--gateway-url", "http://gw:8")
    )


def test_host_is_the_gateway_url_unless_the_class_or_host_option_sets_one():
    assert Commander(env()).host == "http://gw:8"
    assert Fixed(env()).host == "http://fixed:1"


def test_targets_are_this_runs_mqtt_devices():
    e = env()
    plugin = telemetry.install(e)
    plugin.start_run("run-1")
    try:
        user = Commander(e)
        user._ledger = telemetry.get_ledger(e)
        user._ledger.published("robot-local", 1, 1, 1)  # publishing in this process
        user._learn(
            [
                msg("robot-0001", "run-1"),
                msg("robot-0002", "run-1", "mqtt"),
                msg("robot-old", "run-0"),  # an earlier run: nobody listens any more
                msg("kafka-0001", "run-1", "kafka"),  # entered through Kafka: no MQTT device
                "junk",
            ]
        )
        # only what Redis listed: robot-local may not be stored yet (the gateway: 404)
        assert user.targets == user.stored == ["robot-0001", "robot-0002"]
        assert user.pick_device() in user.targets
        assert user.pick_device(stored=True) in user.stored
    finally:
        plugin.probe.stop()


def test_untraced_devices_are_targets_only_when_no_traced_device_is_live():
    user = Commander(env())
    user._learn([msg("plain-1", None), msg("plain-2", None), msg("robot-old", "run-0")])
    assert user.targets == ["plain-1", "plain-2"]


def test_fixed_device_ids_are_never_replaced():
    user = Fixed(env())
    user._learn([msg("robot-0009", None)])
    assert user.targets == ["robot-0001"]
    assert user.pick_device() == "robot-0001"
