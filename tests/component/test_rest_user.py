"""RestCommander against a real gateway process on real Redis and Mosquitto.

The test plays the consumer (it writes the latest coordinates into Redis as the
consumer does) and the devices (a paho client subscribed to every command topic).
"""

from __future__ import annotations

import time

import pytest
import redis
from locust import constant

from pipeline.config import DEVICES_KEY, LATEST_KEY
from telemetry import envelope
from tests.harness import Gateway, LocustRun
from tests.helpers import Collector, mqtt_client
from users.rest import RestCommander

NAMES = (
    ("/api/health", "GET"),
    ("/api/stats", "GET"),
    ("/api/coordinates", "GET"),
    ("/api/coordinates/{id}", "GET"),
    ("/api/commands/{id}", "POST"),
)


@pytest.fixture(scope="module")
def gateway(redis_url, mqtt_url, tmp_path_factory):
    log = tmp_path_factory.mktemp("gw") / "gateway.log"
    with Gateway(log, REDIS_URL=redis_url, MQTT_URL=mqtt_url).start() as gw:
        yield gw


def store(rds: redis.Redis, device: str, run: str, src: str = "mqtt") -> None:
    """Write a device's latest message into Redis the way the consumer does."""
    now = time.time_ns()
    body = envelope.build(device, 1.0, 2.0, run=run, seq=1, t0=now, tp=now, src=src)
    rds.set(LATEST_KEY.format(device_id=device), body, ex=600)
    rds.zadd(DEVICES_KEY, {device: now // 1_000_000})


def test_commands_go_to_this_runs_devices_and_reach_mqtt(gateway, redis_url, mqtt_url, tmp_path):
    accepted: list[tuple[str, dict]] = []

    class Operator(RestCommander):
        wait_time = constant(0.02)
        refresh_interval = 0.2

        def on_command_accepted(self, device_id, body):
            accepted.append((device_id, body))

    rds = redis.Redis.from_url(redis_url)
    commands = Collector()
    sub = mqtt_client(int(mqtt_url.rsplit(":", 1)[1]))
    sub.on_message = lambda _c, _u, m: commands.add(m.payload)
    sub.subscribe("orin/+/command", qos=1)
    live = {"cmp-rest-1", "cmp-rest-2"}
    try:
        with LocustRun(
            [Operator], "--gateway-url", gateway.url, "--token", gateway.token, results=tmp_path
        ) as run:
            run.start(2)
            for device in live:
                store(rds, device, run.ledger.run_id)
            store(rds, "cmp-rest-old", "an-earlier-run")  # nobody listens any more
            store(rds, "cmp-rest-kafka", run.ledger.run_id, src="kafka")  # not an MQTT device
            run.wait(lambda: len(accepted) >= 20, 20, "20 accepted commands")
            ids = {body["command_id"] for _d, body in accepted}
            run.wait(
                lambda: ids <= {c["command_id"] for c in commands.where(lambda _m: True)},
                10,
                "every accepted command on MQTT",
            )
            for name, method in NAMES:
                entry = run.entry(name, method)
                assert entry.num_requests > 0, name
            assert run.env.stats.total.num_failures == 0, run.errors()
            # low cardinality: no entry carries a raw device id
            assert not [k for k in run.env.stats.entries if "cmp-rest" in k[0]]
    finally:
        sub.loop_stop()
        sub.disconnect()
        rds.close()
    assert {device for device, _b in accepted} == live
    for device, body in accepted:
        assert body["topic"] == f"orin/{device}/command"
        assert body["command"] in ("tracking", "slam", "none")
        assert isinstance(body["issued_at"], int)
    on_mqtt = {c["command_id"]: c for c in commands.where(lambda _m: True)}
    for device, body in accepted:
        got = on_mqtt[body["command_id"]]
        assert (got["device_id"], got["issued_at"]) == (device, body["issued_at"])


def test_an_unreachable_gateway_is_failures_not_a_crash(tmp_path):
    class Lost(RestCommander):
        host = "http://127.0.0.1:9"  # discard port: nothing listens
        wait_time = constant(0.05)

    with LocustRun([Lost], results=tmp_path) as run:
        run.start(1)
        run.wait(lambda: run.entry("/api/coordinates", "GET").num_failures >= 1, 10, "failures")
        assert run.env.stats.total.num_requests == run.env.stats.total.num_failures
        # without targets no command is sent at all
        assert run.count("/api/commands/{id}", "POST") == 0


def test_json_bodies_are_what_the_gateway_documents(gateway):
    """The 202 fields the commander checks are in the gateway's OpenAPI contract."""
    import httpx

    spec = httpx.get(f"{gateway.url}/openapi.json").json()
    accepted = spec["components"]["schemas"]["CommandAccepted"]["properties"]
    assert {"command_id", "issued_at", "topic", "device_id", "command"} <= set(accepted)
    assert accepted["issued_at"]["type"] == "integer"


def test_commands_without_a_token_are_failures_saying_401(gateway, rds, tmp_path):
    class Anonymous(RestCommander):
        token = ""
        device_ids = ("cmp-rest-anon",)
        wait_time = constant(0.02)

    store(rds, "cmp-rest-anon", "any-run")
    with LocustRun([Anonymous], "--gateway-url", gateway.url, results=tmp_path) as run:
        run.start(1)
        entry = ("/api/commands/{id}", "POST")
        run.wait(lambda: run.entry(*entry).num_failures >= 3, 10, "refused commands")
        assert run.entry(*entry).num_requests == run.entry(*entry).num_failures
        assert run.entry("/api/stats", "GET").num_failures == 0  # reads are public
        (reason,) = {e for (m, n), e in run.errors().items() if (n, m) == entry}
        assert "HTTP 401" in reason and "no bearer token" in reason, reason
