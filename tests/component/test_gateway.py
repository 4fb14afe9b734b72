"""The gateway as a real process against real Redis and Mosquitto.

The tests play the consumer: they XADD updates to the stream `pipeswarm:stream`
and write the Redis keys, then watch what raw WebSocket, STOMP (stomp.py) and MQTT
clients receive. Counters are compared before/after, because the gateways live for
the whole module. Resuming with ``since`` is in ``test_gateway_stream.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid

import paho.mqtt.client as mqtt
import pytest
import redis

from pipeline._procs import free_port
from pipeline.config import (
    COUNTS_KEY,
    DEVICES_KEY,
    LATEST_KEY,
    STREAM_FIELD,
    TOTAL_KEY,
    UPDATES_STREAM,
    MqttTarget,
    Settings,
)
from pipeline.gateway._hub import Hub, Outbox, beat, run_sender
from pipeline.gateway._metrics import GatewayStats
from pipeline.gateway._stomp_server import StompSession
from pipeline.gateway._stream import key_of
from pipeline.stack import Stack
from tests.component.gateway_clients import (
    assert_closed_by_server,
    device,
    publish,
    raw_stomp,
    recv_frame,
    recv_json,
    stomp_client,
    subscribe,
    update,
)
from tests.harness import REPO, Gateway, metric
from tests.helpers import taken_port, wait_for


# -- the gateways under test (one per push mode) -----------------------------------------
@pytest.fixture(scope="module")
def gateway(redis_url, mqtt_url, tmp_path_factory):
    with Gateway(
        tmp_path_factory.mktemp("gw") / "stream.log",
        REDIS_URL=redis_url,
        MQTT_URL=mqtt_url,
        PUSH_MODE="stream",
        CLIENT_QUEUE="100",
    ).start() as gw:
        yield gw


@pytest.fixture(scope="module")
def snapshot_gateway(redis_url, mqtt_url, tmp_path_factory):
    with Gateway(
        tmp_path_factory.mktemp("gw") / "snapshot.log",
        REDIS_URL=redis_url,
        MQTT_URL=mqtt_url,
        PUSH_MODE="snapshot",
        SNAPSHOT_INTERVAL_MS="200",
    ).start() as gw:
        yield gw


# -- stream mode --------------------------------------------------------------------------
def test_health_and_openapi(gateway):
    status, body = gateway.health()
    assert status == 200
    assert body["status"] == "ok"
    assert (body["redis"], body["updates"], body["mqtt"]) == ("ok", "subscribed", "ok")
    assert body["push_mode"] == "stream"
    spec = gateway.http.get("/openapi.json").json()
    assert spec["info"]["title"] == "pipeswarm gateway"
    for path in ("/api/health", "/api/stats", "/api/coordinates", "/api/commands/{device_id}"):
        assert path in spec["paths"]
    assert spec["paths"]["/api/commands/{device_id}"]["post"]["description"]
    assert gateway.http.get("/docs").status_code == 200


def test_raw_websocket_gets_update_with_gateway_hop(gateway, rds):
    dev = device()
    conn = gateway.ws()
    try:
        sent = update(dev, 1)
        stream_id = publish(rds, sent)
        got = recv_json(conn, lambda m: m.get("device_id") == dev)
    finally:
        conn.close()
    assert got.pop("stream_id") == stream_id
    hops = got["trace"]["hops"]
    assert hops["gateway"] >= hops["consumer"] == sent["trace"]["hops"]["consumer"]
    assert hops["gateway"] <= time.time_ns()
    # everything else passes through untouched
    del got["trace"]["hops"]["gateway"]
    assert got == sent


def test_update_without_trace_passes_through(gateway, rds):
    dev = device()
    conn = gateway.ws()
    try:
        sent = {"device_id": dev, "x": 1.0, "y": 2.0, "timestamp": 3.0}
        stream_id = publish(rds, sent)
        assert recv_json(conn, lambda m: m.get("device_id") == dev) == {
            **sent,
            "stream_id": stream_id,
        }
    finally:
        conn.close()


def test_stomp_topics_all_and_one_device(gateway, rds):
    dev_a, dev_b = device(), device()
    conn, listener = stomp_client(gateway)
    try:
        subscribe(conn, listener, "/topic/coordinates", "all")
        subscribe(conn, listener, f"/topic/devices/{dev_a}", "one")
        publish(rds, update(dev_a, 1))
        publish(rds, update(dev_b, 1))
        publish(rds, update(dev_a, 2))
        wait_for(lambda: len(listener.bodies("one")) == 2, 10, "two updates of device A")
        wait_for(
            lambda: len(listener.bodies("all", dev_a)) == 2 and listener.bodies("all", dev_b),
            10,
            "all three updates on /topic/coordinates",
        )
    finally:
        conn.disconnect()
    assert [m["trace"]["seq"] for m in listener.bodies("one")] == [1, 2]
    assert {m["device_id"] for m in listener.bodies("one")} == {dev_a}
    assert [m["trace"]["seq"] for m in listener.bodies("all", dev_a)] == [1, 2]
    for m in listener.bodies("all"):
        assert m["trace"]["hops"]["gateway"] >= m["trace"]["hops"]["consumer"]
    for h, body in listener.messages:
        want = "/topic/coordinates" if h["subscription"] == "all" else f"/topic/devices/{dev_a}"
        assert h["destination"] == want
        assert h["content-type"] == "application/json"
        assert int(h["content-length"]) == len(body.encode())
    ids = [h["message-id"] for h, _ in listener.messages]
    assert len(set(ids)) == len(ids)
    assert not listener.errors


def test_device_ids_with_colons_are_escaped_in_stomp_headers(gateway, rds):
    dev = f"robot:{uuid.uuid4().hex[:6]}"
    conn, listener = stomp_client(gateway)
    try:
        subscribe(conn, listener, f"/topic/devices/{dev}", "colon")
        publish(rds, update(dev, 1))
        wait_for(lambda: listener.bodies("colon"), 10, "update of a device with a colon")
    finally:
        conn.disconnect()
    assert listener.messages[0][0]["destination"] == f"/topic/devices/{dev}"


def test_stomp_connected_heartbeat_and_incoming_eols(gateway, rds):
    dev = device()
    conn = gateway.ws("/ws", subprotocols=["v10.stomp", "v12.stomp"])
    try:
        assert conn.getsubprotocol() == "v12.stomp"
        conn.send("\n")  # heart-beats before, between and inside frames are fine
        conn.send("STOMP\naccept-version:1.1,1.2\nhost:x\nheart-beat:5000,20000\n\n\x00")
        connected = recv_frame(conn)
        head = connected.split("\n\n")[0].split("\n")
        assert head[0] == "CONNECTED"
        assert "version:1.2" in head
        assert "heart-beat:10000,10000" in head
        conn.send("\r\n")
        conn.send(f"SUBSCRIBE\nid:7\ndestination:/topic/devices/{dev}\n")
        conn.send("receipt:r-7\n\n\x00\n")
        assert recv_frame(conn) == "RECEIPT\nreceipt-id:r-7\n\n\x00"
        publish(rds, update(dev, 1))
        frame = recv_frame(conn)
        head, _, body = frame.partition("\n\n")
        assert head.startswith("MESSAGE\n")
        assert "subscription:7" in head.split("\n")
        assert json.loads(body.rstrip("\x00"))["device_id"] == dev
        conn.send("UNSUBSCRIBE\nid:7\nreceipt:u\n\n\x00")
        assert recv_frame(conn) == "RECEIPT\nreceipt-id:u\n\n\x00"
        conn.send("DISCONNECT\nreceipt:bye\n\n\x00")
        assert recv_frame(conn) == "RECEIPT\nreceipt-id:bye\n\n\x00"
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("frames", "reason", "message"),
    [
        (["HELLO\n\n\x00"], "unknown_command", "malformed frame"),
        (["SUBSCRIBE\nid:1\ndestination:/a\\tb\n\n\x00"], "bad_escape", "malformed frame"),
        (["SEND\ncontent-length:1\n\nxy\x00"], "missing_nul", "malformed frame"),
        (
            ["SUBSCRIBE\nid:1\ndestination:/queue/x\nreceipt:77\n\n\x00"],
            "unknown_destination",
            "unknown destination /queue/x",
        ),
        (["SUBSCRIBE\ndestination:/topic/coordinates\n\n\x00"], "missing_header", None),
        (["SEND\ndestination:/topic/coordinates\n\nhi\x00"], "unsupported", "SEND not supported"),
        (
            [
                "SUBSCRIBE\nid:1\ndestination:/topic/coordinates\n\n\x00",
                "SUBSCRIBE\nid:1\ndestination:/topic/coordinates\n\n\x00",
            ],
            "duplicate_subscription",
            None,
        ),
    ],
)
def test_bad_stomp_frame_gets_error_then_close(gateway, frames, reason, message):
    before = gateway.metrics()
    conn = raw_stomp(gateway)
    try:
        for f in frames:
            conn.send(f)
        error = recv_frame(conn)
        head, _, _ = error.partition("\n\n")
        lines = head.split("\n")
        assert lines[0] == "ERROR", error
        if message:
            assert f"message:{message}" in lines
        if "receipt:77" in frames[0]:
            assert "receipt-id:77" in lines
        assert_closed_by_server(conn)
    finally:
        conn.close()
    after = gateway.metrics()
    name = "pipeline_gateway_stomp_errors_total"
    assert metric(after, name, reason=reason) - metric(before, name, reason=reason) == 1


def test_frame_before_connect_is_an_error(gateway):
    conn = raw_stomp(gateway, connect=False)
    try:
        conn.send("SUBSCRIBE\nid:1\ndestination:/topic/coordinates\n\n\x00")
        assert recv_frame(conn).startswith("ERROR\n")
    finally:
        conn.close()


def test_metrics_count_updates_pushes_and_connections(gateway, rds):
    dev = device()
    before = gateway.metrics()
    conn = gateway.ws()
    try:
        wait_for(
            lambda: (
                metric(gateway.metrics(), "pipeline_gateway_connections", protocol="websocket")
                == metric(before, "pipeline_gateway_connections", protocol="websocket") + 1
            ),
            10,
            "connection gauge +1",
        )
        publish(rds, "{not json")
        publish(rds, json.dumps(["a", "list"]))
        for seq in (1, 2, 3):
            publish(rds, update(dev, seq))
        recv_json(conn, lambda m: m.get("device_id") == dev and m["trace"]["seq"] == 3)

        def pushed_three() -> dict | None:
            # the counter moves right after the frame is written: read until it shows
            m = gateway.metrics()
            name = "pipeline_gateway_pushed_total"
            moved = metric(m, name, protocol="websocket") - metric(
                before, name, protocol="websocket"
            )
            return m if moved >= 3 else None

        after = wait_for(pushed_three, 10, "pushed counter")
    finally:
        conn.close()

    def delta(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert delta("pipeline_gateway_updates_total") == 3
    assert delta("pipeline_gateway_bad_updates_total") == 2
    assert delta("pipeline_gateway_pushed_total", protocol="websocket") == 3
    assert delta("pipeline_gateway_push_latency_seconds_count") == 3
    assert metric(after, "pipeline_gateway_push_latency_seconds_bucket", le="+Inf") == metric(
        after, "pipeline_gateway_push_latency_seconds_count"
    )
    assert metric(after, "pipeline_gateway_redis_up") == 1
    assert metric(after, "pipeline_gateway_mqtt_up") == 1
    assert metric(after, "pipeline_gateway_redis_reconnects_total") == 0
    wait_for(
        lambda: (
            metric(gateway.metrics(), "pipeline_gateway_connections", protocol="websocket")
            == metric(before, "pipeline_gateway_connections", protocol="websocket")
        ),
        10,
        "connection gauge back after close",
    )


def test_slow_client_is_dropped_without_stalling_others(gateway, rds):
    dev = device()
    n = 600
    # 12 MB in all: more than the slow client's socket buffers (~4 MB) and queue (100) hold
    pad = "x" * 20_000
    slow = gateway.ws()
    fast = gateway.ws()
    before = gateway.metrics()
    received = []

    def read_fast() -> None:
        while len(received) < n:
            msg = json.loads(fast.recv())
            if msg.get("device_id") == dev:
                received.append(msg["trace"]["seq"])

    reader = threading.Thread(target=read_fast, daemon=True)
    reader.start()
    try:
        pipe = rds.pipeline(transaction=False)
        for seq in range(1, n + 1):
            pipe.xadd(UPDATES_STREAM, {STREAM_FIELD: json.dumps(update(dev, seq, pad=pad))})
            if seq % 50 == 0:
                pipe.execute()
                # The fast client keeps up (never 100 behind); the slow one never reads.
                wait_for(lambda seq=seq: len(received) >= seq, 30, f"fast client at {seq}")
        reader.join(30)
        assert received == list(range(1, n + 1))
        after = gateway.metrics()
    finally:
        slow.close()
        fast.close()
    dropped = metric(
        after, "pipeline_gateway_dropped_total", protocol="websocket", reason="queue_full"
    )
    assert (
        dropped
        - metric(
            before, "pipeline_gateway_dropped_total", protocol="websocket", reason="queue_full"
        )
        > 0
    )
    assert gateway.healthy()


# -- REST ------------------------------------------------------------------------------
def test_rest_coordinates_and_stats_read_redis(gateway, rds):
    devs = [device(), device()]
    now_ms = int(time.time() * 1000)
    for i, dev in enumerate(devs):
        rds.set(LATEST_KEY.format(device_id=dev), json.dumps(update(dev, 5 + i)), ex=60)
        rds.zadd(DEVICES_KEY, {dev: now_ms + i})
        rds.hincrby(COUNTS_KEY, dev, 5 + i)
        rds.incrby(TOTAL_KEY, 5 + i)
    ghost = device()  # in the ZSET but its latest key expired
    rds.zadd(DEVICES_KEY, {ghost: now_ms})

    everything = gateway.http.get("/api/coordinates")
    assert everything.status_code == 200
    by_id = {m["device_id"]: m for m in everything.json()}
    assert by_id[devs[0]]["trace"]["seq"] == 5
    assert by_id[devs[1]]["trace"]["seq"] == 6
    assert ghost not in by_id

    one = gateway.http.get(f"/api/coordinates/{devs[1]}")
    assert one.status_code == 200
    assert one.json()["x"] == 6.0
    assert gateway.http.get(f"/api/coordinates/{ghost}").status_code == 404
    assert gateway.http.get("/api/coordinates/bad+id").status_code == 422

    stats = gateway.http.get("/api/stats").json()
    assert stats["per_device"][devs[0]] == 5
    assert stats["per_device"][devs[1]] == 6
    assert stats["total_messages"] == int(rds.get(TOTAL_KEY))
    assert stats["device_count"] == rds.zcard(DEVICES_KEY)
    assert stats["push_mode"] == "stream"
    assert set(stats["connections"]) == {"websocket", "stomp"}
    # the counters are the gateway's own: one more update read moves them by one
    stream_id = publish(rds, update(device(), 1))

    def read_it() -> dict | None:
        now = gateway.http.get("/api/stats").json()
        return now if now["stream_id"] == stream_id else None

    moved = wait_for(read_it, 10, "the update in /api/stats")
    assert moved["updates_received"] == stats["updates_received"] + 1
    assert moved["updates_received"] == metric(gateway.metrics(), "pipeline_gateway_updates_total")
    assert moved["bad_updates"] == stats["bad_updates"]


class CommandSink:
    """A paho subscriber on `orin/+/command`; ready once its SUBACK is in."""

    def __init__(self, mqtt_url: str) -> None:
        target = MqttTarget.from_url(mqtt_url)
        self.messages: list[tuple[str, dict]] = []
        self.subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.on_connect = lambda c, *_: c.subscribe("orin/+/command", qos=1)
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.on_message = lambda c, u, m: self.messages.append(
            (m.topic, json.loads(m.payload))
        )
        self.client.connect(target.host, target.port)
        self.client.loop_start()
        assert self.subscribed.wait(10), "SUBACK"

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def command_sink(mqtt_url):
    sink = CommandSink(mqtt_url)
    yield sink
    sink.close()


def seen(rds, *devices: str) -> None:
    """Play the consumer: the pipeline has stored a message of each device."""
    rds.zadd(DEVICES_KEY, {d: int(time.time() * 1000) for d in devices})


def test_command_is_published_to_the_device_topic(gateway, command_sink, rds):
    dev = device()
    seen(rds, dev)
    before = gateway.metrics()
    r = gateway.http.post(f"/api/commands/{dev}", json={"command": "tracking"})
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["topic"] == f"orin/{dev}/command"
    assert re.fullmatch(r"[0-9a-f]{32}", body["command_id"]), body["command_id"]
    assert abs(body["issued_at"] - time.time_ns()) < 60e9
    wait_for(lambda: command_sink.messages, 10, "command on MQTT")
    topic, payload = command_sink.messages[0]
    assert topic == f"orin/{dev}/command"
    assert payload == {
        "device_id": dev,
        "command": "tracking",
        "command_id": body["command_id"],
        "issued_at": body["issued_at"],
    }
    after = gateway.metrics()
    name = "pipeline_gateway_commands_total"
    assert metric(after, name, result="accepted") - metric(before, name, result="accepted") == 1


def test_invalid_commands_get_422_and_publish_nothing(gateway, command_sink, rds):
    dev = device()
    seen(rds, dev)
    before = gateway.metrics()
    bad = [
        (dev, {"command": "sl am"}),
        (dev, {"command": "x" * 65}),
        (dev, {"command": ""}),
        (dev, {"command": 7}),
        (dev, {"cmd": "slam"}),
        (dev, None),
        ("bad+id", {"command": "slam"}),
        ("x" * 129, {"command": "slam"}),
        ("%2E%2E", {"command": "slam"}),  # "..": never a device id
    ]
    for device_id, body in bad:
        r = gateway.http.post(f"/api/commands/{device_id}", json=body)
        assert r.status_code == 422, (device_id, body, r.text)
    # A valid command after them: MQTT keeps order, so anything invalid would be first.
    sentinel = device()
    seen(rds, sentinel)
    r = gateway.http.post(f"/api/commands/{sentinel}", json={"command": "custom_cmd-1.0"})
    assert r.status_code == 202
    wait_for(lambda: command_sink.messages, 10, "the sentinel command")
    assert [t for t, _ in command_sink.messages] == [f"orin/{sentinel}/command"]
    after = gateway.metrics()
    name = "pipeline_gateway_commands_total"
    assert metric(after, name, result="invalid") - metric(before, name, result="invalid") == len(
        bad
    )


# -- snapshot mode + token ---------------------------------------------------------------
def test_snapshot_mode_sends_batches_with_latest_of_every_device(snapshot_gateway, rds):
    devs = [device() for _ in range(3)]
    conn = snapshot_gateway.ws()
    try:
        publish(rds, update(devs[0], 1))
        publish(rds, update(devs[1], 1))
        publish(rds, update(devs[0], 2))  # conflated: batches then hold only seq 2
        last_id = publish(rds, update(devs[2], 1))

        def has_all(msg: dict) -> bool:
            latest = {d["device_id"]: d for d in msg["devices"] if d["device_id"] in devs}
            return len(latest) == 3 and latest[devs[0]]["trace"]["seq"] == 2

        first = recv_json(conn, has_all, limit=100)
        later = [recv_json(conn, has_all, limit=100) for _ in range(5)]
    finally:
        conn.close()
    assert first["type"] == "snapshot"
    # the stream position a batch reflects: at least the last update it holds
    assert key_of(first["stream_id"]) >= key_of(last_id)
    assert all(key_of(s["stream_id"]) >= key_of(first["stream_id"]) for s in later)
    # A late tick is followed by an early one (fixed schedule): judge the mean gap.
    mean_gap_ms = (later[-1]["sent_ns"] - first["sent_ns"]) / 5 / 1e6
    assert 150 <= mean_gap_ms <= 1000, mean_gap_ms
    for snap in (first, *later):
        ours = [d for d in snap["devices"] if d["device_id"] in devs]
        assert len(ours) == 3  # one entry per device, never two
        for d in ours:
            assert d["trace"]["hops"]["gateway"] >= d["trace"]["hops"]["consumer"]
            assert snap["sent_ns"] >= d["trace"]["hops"]["gateway"]


def test_snapshot_mode_over_stomp(snapshot_gateway, rds):
    dev_a, dev_b = device(), device()
    conn, listener = stomp_client(snapshot_gateway)
    try:
        subscribe(conn, listener, "/topic/coordinates", "all")
        subscribe(conn, listener, f"/topic/devices/{dev_a}", "one")
        publish(rds, update(dev_a, 1))
        publish(rds, update(dev_b, 1))
        wait_for(
            lambda: (
                len(listener.bodies("one")) >= 2
                and any(
                    {dev_a, dev_b} <= {d["device_id"] for d in s["devices"]}
                    for s in listener.bodies("all")
                )
            ),
            10,
            "snapshots on both topics",
        )
    finally:
        conn.disconnect()
    assert all(m["type"] == "snapshot" for m in listener.bodies("all"))
    for h, body in listener.messages:  # each frame: the stream position its batch reflects
        if h["subscription"] == "all":
            assert h["stream-id"] == json.loads(body)["stream_id"]
        assert key_of(h["stream-id"]) > (0, 0)
    # /topic/devices/{id}: that device's latest message each interval, nothing else
    assert {m["device_id"] for m in listener.bodies("one")} == {dev_a}
    assert {m["trace"]["seq"] for m in listener.bodies("one")} == {1}


def test_a_valid_token_is_required_in_connect(snapshot_gateway):
    TOKEN = snapshot_gateway.token
    before = snapshot_gateway.metrics()
    for connect in (
        "CONNECT\naccept-version:1.2\nhost:x\n\n\x00",
        "CONNECT\naccept-version:1.2\nhost:x\npasscode:wrong\n\n\x00",
        "CONNECT\naccept-version:1.2\nhost:x\nAuthorization:Bearer wrong\n\n\x00",
    ):
        conn = snapshot_gateway.ws("/ws", header=[])
        try:
            conn.send(connect)
            error = recv_frame(conn)
            assert error.startswith("ERROR\n")
            assert "message:authentication failed" in error
        finally:
            conn.close()
    for connect, headers in (
        (f"CONNECT\naccept-version:1.2\nhost:x\npasscode:{TOKEN}\n\n\x00", None),
        (f"CONNECT\naccept-version:1.2\nhost:x\nAuthorization:Bearer {TOKEN}\n\n\x00", None),
        ("CONNECT\naccept-version:1.2\nhost:x\n\n\x00", [f"Authorization: Bearer {TOKEN}"]),
        ("CONNECT\naccept-version:1.2\nhost:x\n\n\x00", []),  # ?token= on the upgrade
    ):
        path = "/ws" if headers != [] else f"/ws?token={TOKEN}"
        conn = snapshot_gateway.ws(path, header=headers or [])
        try:
            conn.send(connect)
            assert recv_frame(conn).startswith("CONNECTED\n")
        finally:
            conn.close()
    after = snapshot_gateway.metrics()
    name = "pipeline_gateway_stomp_errors_total"
    assert metric(after, name, reason="auth") - metric(before, name, reason="auth") == 3
    name = "pipeline_gateway_auth_failures_total"
    for reason, n in (("missing", 1), ("malformed", 2)):
        got = metric(after, name, protocol="stomp", reason=reason)
        assert got - metric(before, name, protocol="stomp", reason=reason) == n, reason


# -- outages and shutdown ------------------------------------------------------------------
def test_redis_loss_mqtt_down_and_sigterm(tmp_path):
    """A private Redis we may kill; MQTT pointed at a port nobody listens on."""
    servers = Stack.with_ports(auto=True, state_dir=tmp_path / "servers")
    gw = None
    try:
        servers.start_service("redis")
        rds = redis.Redis.from_url(servers.urls["redis"])
        # written before the gateway starts: it must read it from Redis (seeding)
        seeded = device()
        rds.set(LATEST_KEY.format(device_id=seeded), json.dumps(update(seeded, 9)), ex=60)
        rds.zadd(DEVICES_KEY, {seeded: int(time.time() * 1000)})
        gw = Gateway(
            tmp_path / "gw.log",
            REDIS_URL=servers.urls["redis"],
            MQTT_URL=f"mqtt://127.0.0.1:{free_port()}",
            PUSH_MODE="snapshot",
            SNAPSHOT_INTERVAL_MS="100",
        )
        gw.start(ready="serving")
        wait_for(lambda: gw.health()[1]["updates"] == "subscribed", 20, "update subscription")
        status, body = gw.health()
        assert (status, body["down"], body["status"]) == (503, ["mqtt"], "unavailable")

        r = gw.http.post(f"/api/commands/{seeded}", json={"command": "slam"})
        assert r.status_code == 503
        name = "pipeline_gateway_commands_total"
        assert metric(gw.metrics(), name, result="unavailable") == 1

        servers.stop_service("redis")
        wait_for(lambda: "redis" in gw.health()[1]["down"], 20, "health to report Redis down")
        assert gw.health()[1]["updates"] == "down"
        assert gw.http.get("/api/stats").status_code == 503
        assert gw.http.get("/metrics").status_code == 200  # still serving

        servers.start_service("redis")
        wait_for(lambda: gw.health()[1]["down"] == ["mqtt"], 30, "Redis back in health")
        values = gw.metrics()
        assert metric(values, "pipeline_gateway_redis_reconnects_total") == 1
        assert metric(values, "pipeline_gateway_redis_up") == 1

        dev = device()
        conn = gw.ws()
        try:
            publish(rds, update(dev, 1))
            snap = recv_json(conn, lambda m: dev in {d["device_id"] for d in m["devices"]})
            latest = {d["device_id"]: d["trace"]["seq"] for d in snap["devices"]}
            assert latest == {seeded: 9, dev: 1}
            gw.proc.send_signal(signal.SIGTERM)
            assert_closed_by_server(conn)  # then the process exits 0
        finally:
            conn.close()
        assert gw.proc.wait(15) == 0, gw.log()
        assert "event=gateway_stopped" in gw.log()
        rds.close()
    finally:
        if gw is not None:
            gw.stop()
        servers.stop()


def test_taken_port_is_one_sentence_and_exit_2(tmp_path):
    with taken_port() as port:
        result = subprocess.run(
            [sys.executable, "-m", "pipeline.gateway"],
            cwd=REPO,
            env={**os.environ, "GATEWAY_PORT": str(port)},
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


# -- in-process: the parts whose timing a real server would make slow to test -------------
@pytest.mark.parametrize(
    ("client_heartbeat", "send_every_s", "receive_timeout_s"),
    [
        ("0,0", 0, 0),
        ("1000,1000", 10, 20),  # the server's 10 s floor; 2x grace on receive
        ("20000,30000", 30, 40),
        ("0,5000", 10, 0),
        ("5000,0", 0, 20),
    ],
)
def test_heartbeat_negotiation(client_heartbeat, send_every_s, receive_timeout_s):
    stats = GatewayStats()
    outbox = Outbox("stomp", 10, stats)
    session = StompSession(Hub(Settings(), stats), outbox, stats)
    session.feed(f"CONNECT\naccept-version:1.2\nheart-beat:{client_heartbeat}\n\n\x00".encode())
    assert session.connected
    (connected, _), *_ = outbox.items
    assert "heart-beat:10000,10000\n" in connected
    assert outbox.heartbeat_s == send_every_s
    assert session.receive_timeout_s == receive_timeout_s


def test_stomp_10_session_negotiates_down_and_does_not_escape():
    stats = GatewayStats()
    hub = Hub(Settings(), stats)
    outbox = Outbox("stomp", 10, stats)
    session = StompSession(hub, outbox, stats)
    session.feed(b"CONNECT\naccept-version:1.0\n\n\x00")
    session.feed(b"SUBSCRIBE\nid:a\\cb\ndestination:/topic/devices/d:1\nreceipt:r:1\n\n\x00")
    frames = [text for text, _ in outbox.items]
    assert frames[0].startswith("CONNECTED\nversion:1.0\n")
    assert frames[1] == "RECEIPT\nreceipt-id:r:1\n\n\x00"
    (sub,) = hub.stomp_device["d:1"]
    assert sub.sub_id == "a\\cb"  # 1.0: taken literally
    assert "destination:/topic/devices/d:1\n" in sub.head


def test_unsupported_version_gets_error_with_versions():
    stats = GatewayStats()
    outbox = Outbox("stomp", 10, stats)
    session = StompSession(Hub(Settings(), stats), outbox, stats)
    session.feed(b"CONNECT\naccept-version:2.0\n\n\x00")
    assert session.closing
    error = outbox.items[0][0]
    assert error.startswith("ERROR\n") and "version:1.0,1.1,1.2\n" in error
    assert stats.stomp_errors["version"] == 1


def test_outbox_drops_beyond_its_limit_but_not_control_frames():
    stats = GatewayStats()
    outbox = Outbox("websocket", 2, stats)
    assert [outbox.push(str(i), 0.0) for i in range(5)] == [True, True, False, False, False]
    outbox.push_control("RECEIPT")
    assert [t for t, _ in outbox.items] == ["0", "1", "RECEIPT"]
    assert stats.dropped[("websocket", "queue_full")] == 3
    assert sum(stats.dropped.values()) == 3
    outbox.discard()  # the client went away with two data frames unsent
    assert stats.dropped[("websocket", "closed")] == 2


def test_heartbeats_go_only_to_connections_idle_for_their_interval():
    async def main() -> dict[str, list[str]]:
        stats = GatewayStats()
        names = ("idle", "busy", "off")
        boxes = {name: Outbox("stomp", 10, stats) for name in names}
        boxes["idle"].heartbeat_s = boxes["busy"].heartbeat_s = 10.0  # "off" negotiated 0
        sent: dict[str, list[str]] = {name: [] for name in names}

        def sender(name: str) -> asyncio.Task[None]:
            async def send(text: str) -> None:
                sent[name].append(text)

            async def close() -> None:
                sent[name].append("<close>")

            return asyncio.create_task(run_sender(boxes[name], send, close))

        tasks = [sender(name) for name in names]
        now = time.perf_counter()
        boxes["idle"].last_tx = now - 9.5  # due within the next tick
        boxes["busy"].last_tx = now - 1.0
        boxes["off"].last_tx = now - 100.0
        assert await beat(list(boxes.values()), 1.0) == 1
        for _ in range(100):
            if sent["idle"]:
                break
            await asyncio.sleep(0.01)
        # the EOL went out and restarted the idle connection's clock
        assert await beat(list(boxes.values()), 1.0) == 0
        boxes["busy"].push("MESSAGE", time.perf_counter())
        for box in boxes.values():
            box.close_after_drain()
        await asyncio.wait_for(asyncio.gather(*tasks), 5)
        assert stats.pushed["stomp"] == 1  # a heart-beat is not a pushed message
        return sent

    sent = asyncio.run(main())
    assert sent == {"idle": ["\n", "<close>"], "busy": ["MESSAGE", "<close>"], "off": ["<close>"]}


def test_closed_connections_leave_nothing_frozen_behind(gateway):
    """The gateway freezes what survived every second (``pipeline/_gc.py``): a closed
    connection must then be freed by reference counting alone, as a full collection
    waits for a quiet gateway. Each STOMP connection once left ~56 objects in reference
    cycles (the server's bound ``send`` kept in the ASGI scope, websockets' parser
    generator): 20 KB per connection churned, for good (``python -m bench gateway-churn``)."""

    def frozen() -> float:
        return metric(gateway.metrics(), "pipeline_gateway_gc_frozen_objects")

    for _ in range(3):  # anything made once per process (caches, imports) exists by now
        raw_stomp(gateway).close()
    # the baseline: the freezer runs on its own 1 s clock, with no event to wait on, so
    # this waits for two of its ticks to have frozen the warm-up's survivors
    time.sleep(2.5)
    before = frozen()
    n = 120
    conns = [raw_stomp(gateway) for _ in range(n)]
    # open, they are frozen (~177 objects each)
    wait_for(lambda: frozen() - before > 20 * n, 10, "the open connections frozen")
    for i, conn in enumerate(conns):
        if i % 2:
            conn.close()  # a close frame and its answer
        else:
            conn.shutdown()  # the TCP connection dropped, no close frame
    wait_for(
        lambda: metric(gateway.metrics(), "pipeline_gateway_connections", protocol="stomp") == 0,
        10,
        "every connection gone",
    )
    # freed as each connection's teardown ends (a closing handshake takes a moment)
    wait_for(lambda: frozen() - before < 5 * n, 20, f"frozen objects back near {before:.0f}")
