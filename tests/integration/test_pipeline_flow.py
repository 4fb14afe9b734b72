"""Messages through the real embedded stack: MQTT -> Kafka -> Redis -> WS/STOMP/REST."""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict

import httpx
import pytest
import stomp
import websocket
from stomp.adapter.ws import WSStompConnection

from tests.helpers import Collector, metric_value, mqtt_client, stack_token, traced, wait_for

pytestmark = pytest.mark.integration


class _StompCollector(stomp.ConnectionListener):
    def __init__(self) -> None:
        self.messages = Collector()
        self.receipts: set[str] = set()

    def on_message(self, frame) -> None:
        self.messages.add(frame.body)

    def on_receipt(self, frame) -> None:
        self.receipts.add(frame.headers["receipt-id"])


def stomp_subscriber(stack, destination: str) -> tuple[WSStompConnection, _StompCollector]:
    conn = WSStompConnection([("127.0.0.1", stack.ports["gateway"])], ws_path="/ws")
    listener = _StompCollector()
    conn.set_listener("collector", listener)
    conn.connect(wait=True, passcode=stack_token(stack))
    conn.subscribe(destination, id="sub-1", receipt="subscribed")
    wait_for(lambda: "subscribed" in listener.receipts, 5, "SUBSCRIBE receipt")
    return conn, listener


def ws_subscriber(stack) -> tuple[websocket.WebSocket, Collector, threading.Thread]:
    ws = websocket.create_connection(
        f"ws://127.0.0.1:{stack.ports['gateway']}/coordinates",
        header=[f"Authorization: Bearer {stack_token(stack)}"],
    )
    got = Collector()

    def read() -> None:
        try:
            while frame := ws.recv():  # "" once the socket closes
                got.add(frame)
        except (websocket.WebSocketException, OSError):
            return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    return ws, got, reader


def test_one_message_reaches_every_client_with_hops_in_order(stack):
    device = "flow-one"
    conn_all, on_all = stomp_subscriber(stack, "/topic/coordinates")
    conn_dev, on_dev = stomp_subscriber(stack, f"/topic/devices/{device}")
    conn_other, on_other = stomp_subscriber(stack, "/topic/devices/somebody-else")
    ws, on_ws, _ = ws_subscriber(stack)
    pub = mqtt_client(stack)
    try:
        pub.publish(f"sensors/{device}/coordinates", traced(device, 1), qos=1).wait_for_publish(5)
        mine = lambda m: m.get("device_id") == device  # noqa: E731
        for got in (on_all.messages, on_dev.messages, on_ws):
            (msg,) = wait_for(lambda got=got: got.where(mine), 20, "the message on a subscriber")
            trace = msg["trace"]
            hops = trace["hops"]
            assert trace["tp"] <= hops["bridge"] <= hops["consumer"] <= hops["gateway"]
            assert msg["x"] == 1.0 and trace["seq"] == 1
        assert on_other.messages.where(mine) == []
        rest = httpx.get(f"{stack.urls['gateway']}/api/coordinates/{device}").json()
        assert rest["device_id"] == device and rest["trace"]["seq"] == 1
        assert httpx.get(f"{stack.urls['gateway']}/api/coordinates/no-such").status_code == 404
    finally:
        pub.loop_stop()
        ws.shutdown()  # no close handshake: the reader greenlet holds the frame lock
        for c in (conn_all, conn_dev, conn_other):
            c.disconnect()


def test_thousand_qos1_messages_from_fifty_devices_arrive_in_order(stack):
    conn, listener = stomp_subscriber(stack, "/topic/coordinates")
    stats_before = httpx.get(f"{stack.urls['gateway']}/api/stats").json()
    pub = mqtt_client(stack)
    devices = [f"order-{i:02d}" for i in range(50)]
    try:
        infos = []
        for seq in range(1, 21):
            for d in devices:
                infos.append(pub.publish(f"sensors/{d}/coordinates", traced(d, seq), qos=1))
        for info in infos:
            info.wait_for_publish(10)
        ours = lambda m: m.get("device_id", "").startswith("order-")  # noqa: E731
        wait_for(lambda: len(listener.messages.where(ours)) >= 1000, 30, "1,000 messages")
        got = listener.messages.where(ours)
        assert len(got) == 1000
        seqs: dict[str, list[int]] = defaultdict(list)
        for m in got:
            seqs[m["device_id"]].append(m["trace"]["seq"])
        assert set(seqs) == set(devices)
        assert all(s == list(range(1, 21)) for s in seqs.values())

        stats = httpx.get(f"{stack.urls['gateway']}/api/stats").json()
        assert stats["total_messages"] - stats_before["total_messages"] == 1000
        per_device = stats["per_device"]
        assert all(int(per_device[d]) == 20 for d in devices)
    finally:
        pub.loop_stop()
        conn.disconnect()


def test_command_reaches_device_and_invalid_body_publishes_nothing(stack):
    device = "cmd-dev-1"
    received = Collector()
    sub = mqtt_client(stack)
    sub.on_message = lambda c, u, msg: received.add(msg.payload)
    sub.subscribe(f"orin/{device}/command", qos=1)
    url = f"{stack.urls['gateway']}/api/commands/{device}"
    http = httpx.Client(headers={"Authorization": f"Bearer {stack_token(stack)}"}, timeout=10)
    # commands go only to devices the pipeline has seen: this one says hello first
    hello = mqtt_client(stack)
    hello.publish(f"sensors/{device}/coordinates", traced(device, 1), qos=1).wait_for_publish(5)
    hello.loop_stop()
    wait_for(
        lambda: httpx.get(f"{stack.urls['gateway']}/api/coordinates/{device}").status_code == 200,
        20,
        "the device stored",
    )
    try:
        # Wait until our subscription is live by sending until one arrives.
        resp = http.post(url, json={"command": "tracking"})
        assert resp.status_code == 202
        command_id = resp.json()["command_id"]
        (cmd,) = wait_for(
            lambda: received.where(lambda m: m["command_id"] == command_id),
            10,
            "the command on MQTT",
        )
        assert cmd["command"] == "tracking" and cmd["device_id"] == device
        assert cmd["issued_at"] > 1e18  # epoch ns

        for bad in ({"command": ""}, {"command": "rm -rf /"}, {"nope": 1}, []):
            assert http.post(url, json=bad).status_code == 422
        assert (
            http.post(
                url, content=b"{not json", headers={"content-type": "application/json"}
            ).status_code
            == 422
        )
        # A valid command sent after the bad ones is the next thing the device sees.
        marker = http.post(url, json={"command": "slam"}).json()["command_id"]
        wait_for(lambda: received.where(lambda m: m["command_id"] == marker), 10, "marker")
        assert [m["command"] for m in received.items] == ["tracking", "slam"]
    finally:
        sub.loop_stop()
        http.close()


def test_bad_payloads_go_to_the_dlq_and_the_bridge_keeps_serving(stack):
    from kafka import KafkaConsumer, TopicPartition

    pub = mqtt_client(stack)
    bad = {
        "malformed_json": b"{this is not json",
        "oversize": json.dumps({"device_id": "big", "blob": "x" * 70_000}).encode(),
        "schema": json.dumps({"x": 1, "y": 2}).encode(),  # no timestamp
        "device_mismatch": json.dumps({"device_id": "x", "x": 1, "y": 2, "timestamp": 3}).encode(),
        "too_deep": b'{"x": 1, "y": 2, "timestamp": 3, "e": ' + b"[" * 40 + b"]" * 40 + b"}",
    }
    for payload in bad.values():
        pub.publish("sensors/dlq-dev/coordinates", payload, qos=1).wait_for_publish(5)
    pub.publish("sensors/dlq-ok/coordinates", traced("dlq-ok", 1), qos=1).wait_for_publish(5)
    try:
        wait_for(
            lambda: httpx.get(f"{stack.urls['gateway']}/api/coordinates/dlq-ok").status_code == 200,
            20,
            "the good message after bad ones",
        )
        dlq = KafkaConsumer(bootstrap_servers=stack.urls["kafka"], consumer_timeout_ms=3000)
        tp = TopicPartition("mqtt-messages-dlq", 0)
        dlq.assign([tp])
        dlq.seek_to_beginning(tp)
        reasons = set()
        deadline = time.monotonic() + 15
        while set(bad) - reasons and time.monotonic() < deadline:
            for rec in dlq.poll(timeout_ms=500).get(tp, []):
                doc = json.loads(rec.value)
                if doc["topic"] == "sensors/dlq-dev/coordinates":
                    reasons.add(doc["reason"])
        dlq.close()
        assert reasons == set(bad)

        metrics = httpx.get(stack.urls["bridge_metrics"]).text
        for reason in bad:
            line = f'pipeline_bridge_dlq_messages_total{{reason="{reason}"}}'
            assert metric_value(metrics, line) >= 1.0
    finally:
        pub.loop_stop()
