"""MqttDevice and its client: Locust entries, protocol flows, the open-model timetable.

The client is fed broker bytes directly (no network): a fresh ``Environment``
per test, assertions on ``environment.stats.entries[(name, "MQTT")]``.
"""

from __future__ import annotations

import json
import time

import pytest
from locust.env import Environment

import telemetry
from telemetry import envelope
from users import ClientConfig, DeviceClient, MqttDevice
from users._mqtt_client import CONNECTED, IDLE, WAIT_CONNACK
from users._mqtt_codec import MQTT5, MQTT311, utf8, varint
from users._mqtt_payload import Template

PUB1 = "publish:1:sensors/+/coordinates"


class FakeSock:
    def __init__(self) -> None:
        self.sent = bytearray()

    def send(self, data: bytes) -> int:
        self.sent += data
        return len(data)

    def close(self) -> None:
        pass

    def take(self) -> bytes:
        data = bytes(self.sent)
        self.sent.clear()
        return data


def new_env() -> Environment:
    """A fresh Environment whose stats listen (the runner registers Locust's own listener)."""
    environment = Environment()
    environment.create_local_runner()
    return environment


def make_client(
    env: Environment, version: int = MQTT311, state: int = CONNECTED, **cfg
) -> DeviceClient:
    client = DeviceClient(env, ClientConfig("127.0.0.1", 1883, version=version, **cfg), "dev-1")
    client._sock = FakeSock()
    client.state = state
    client._t_attempt = time.perf_counter()
    return client


def entry(env: Environment, name: str):
    return env.stats.entries[(name, "MQTT")]


def test_connack_is_a_measured_connect():
    env = new_env()
    client = make_client(env, state=WAIT_CONNACK)
    client._t_attempt -= 0.005  # the attempt began 5 ms ago
    client._feed(b"\x20\x02\x00\x00")
    assert client.connected and client.connects == 1
    e = entry(env, "connect")
    assert (e.num_requests, e.num_failures, e.num_none_requests) == (1, 0, 0)
    assert 5 <= e.total_response_time < 1000  # from the attempt's start to the CONNACK


def test_refused_connack_is_a_failure_and_reconnects_later():
    env = new_env()
    client = make_client(env, state=WAIT_CONNACK)
    client._feed(b"\x20\x02\x00\x05")
    assert client.state == IDLE and client._timer is not None  # backoff timer armed
    client.close()
    e = entry(env, "connect")
    assert (e.num_requests, e.num_failures) == (1, 1)
    [error] = env.stats.errors.values()
    assert "not authorized" in str(error.error)


def test_qos1_publish_is_timed_to_puback():
    env = new_env()
    client = make_client(env)
    assert client.publish("sensors/d/coordinates", b"x" * 10, 1, name=PUB1)
    assert PUB1 not in {n for n, _ in env.stats.entries}  # nothing before the ack
    sent = client._sock.take()
    assert sent[0] == 0x32 and sent.endswith(b"x" * 10)
    time.sleep(0.002)
    client._feed(b"\x40\x02\x00\x01")
    e = entry(env, PUB1)
    assert (e.num_requests, e.num_failures, e.num_none_requests) == (1, 0, 0)
    assert e.total_response_time >= 2 and e.total_content_length == 10
    client._feed(b"\x40\x02\x00\x01")  # a duplicate ack changes nothing
    assert entry(env, PUB1).num_requests == 1 and client.inflight == 0


def test_qos2_is_timed_to_pubcomp_after_pubrel():
    env = new_env()
    client = make_client(env)
    client.publish("t", b"x", 2, name="publish:2:t")
    client._sock.take()
    client._feed(b"\x50\x02\x00\x01")  # PUBREC
    assert client._sock.take() == b"\x62\x02\x00\x01"  # PUBREL
    assert ("publish:2:t", "MQTT") not in env.stats.entries
    client._feed(b"\x70\x02\x00\x01")  # PUBCOMP
    assert entry(env, "publish:2:t").num_requests == 1


def test_qos0_is_counted_without_a_latency():
    env = new_env()
    client = make_client(env)
    for _ in range(3):
        client.publish("t", b"abc", 0, name="publish:0:t")
    e = entry(env, "publish:0:t")
    assert (e.num_requests, e.num_none_requests, e.total_response_time) == (3, 3, 0)
    assert e.total_content_length == 9


def test_v5_refusal_reason_is_a_failure():
    env = new_env()
    client = make_client(env, version=MQTT5)
    client.publish("t", b"x", 1, name=PUB1)
    client._feed(b"\x40\x03\x00\x01\x87")  # PUBACK, reason 0x87 not authorized
    e = entry(env, PUB1)
    assert (e.num_requests, e.num_failures) == (1, 1)
    client.publish("t", b"x", 1, name=PUB1)
    client._feed(b"\x40\x03\x00\x02\x10")  # 0x10 no matching subscribers: a success
    assert entry(env, PUB1).num_failures == 1


def test_v5_connack_receive_maximum_caps_the_window():
    env = new_env()
    client = make_client(env, version=MQTT5, state=WAIT_CONNACK, max_inflight=20)
    client._feed(b"\x20\x06\x00\x00\x03\x21\x00\x02")  # Receive Maximum 2
    assert client.window == 2
    assert client.publish("t", b"1", 1) and client.publish("t", b"2", 1)
    assert not client.can_publish(1) and not client.publish("t", b"3", 1)


def test_subscribe_refused():
    env = new_env()
    client = make_client(env)
    client.subscribe("orin/d/command", 1, name="subscribe:1:orin/+/command")
    client._feed(b"\x90\x03\x00\x01\x80")
    e = entry(env, "subscribe:1:orin/+/command")
    assert (e.num_requests, e.num_failures) == (1, 1)


def test_packets_split_across_reads():
    env = new_env()
    client = make_client(env)
    for _ in range(3):
        client.publish("t", b"x", 1, name=PUB1)
    acks = b"\x40\x02\x00\x01\x40\x02\x00\x02\x40\x02\x00\x03"
    for i in range(len(acks)):
        client._feed(acks[i : i + 1])
    assert entry(env, PUB1).num_requests == 3


class Recorder:
    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []

    def mqtt_connected(self, session_present):
        pass

    def mqtt_disconnected(self, reason):
        pass

    def mqtt_window(self):
        pass

    def mqtt_message(self, topic, payload, recv_ns):
        self.messages.append((topic, payload))


def _inbound(qos: int, mid: int, payload: bytes, topic: str = "orin/d/command") -> bytes:
    body = utf8(topic) + (mid.to_bytes(2, "big") if qos else b"") + payload
    return bytes((0x30 | qos << 1,)) + varint(len(body)) + body


def test_inbound_qos1_and_qos2_are_acknowledged_once():
    env = new_env()
    client = make_client(env)
    client.owner = rec = Recorder()
    client._feed(_inbound(1, 5, b"a"))
    assert client._sock.take() == b"\x40\x02\x00\x05"
    client._feed(_inbound(2, 6, b"b") + _inbound(2, 6, b"b"))  # a resend before PUBREL
    assert client._sock.take() == b"\x50\x02\x00\x06" * 2
    client._feed(b"\x62\x02\x00\x06")
    assert client._sock.take() == b"\x70\x02\x00\x06"
    assert rec.messages == [("orin/d/command", b"a"), ("orin/d/command", b"b")]


def test_keepalive_ping_and_timeout():
    env = new_env()
    client = make_client(env, keepalive=10)
    now = time.monotonic()
    client._last_tx = now - 9
    client._tick(now)
    assert client._sock.take() == b"\xc0\x00"
    client._feed(b"\xd0\x00")
    assert client._ping_sent == 0.0
    client._last_tx = now - 9
    client._tick(now)
    client._tick(now + 11)  # no PINGRESP within the keepalive
    assert client.state == IDLE and client.losses == 1
    client.close()
    e = entry(env, "connection lost")
    assert (e.num_requests, e.num_failures, e.num_none_requests) == (1, 1, 1)


def test_reconnect_is_counted_and_resends_in_flight():
    env = new_env()
    client = make_client(env)
    client.publish("t", b"x", 1, name=PUB1)
    client._sock.take()
    client._lost("test")
    client._cancel_timer()
    client._sock = FakeSock()
    client.state = WAIT_CONNACK
    client._feed(b"\x20\x02\x01\x00")  # session present
    assert client.reconnects == 1
    assert client._sock.take()[0] == 0x3A  # PUBLISH QoS1 with DUP
    client._feed(b"\x40\x02\x00\x01")
    assert entry(env, "reconnect").num_requests == 1
    assert entry(env, PUB1).num_requests == 1
    client.close()


# --- the device ---------------------------------------------------------------------


class FakeClient:
    """Stands in for DeviceClient (``MqttDevice.client_cls`` is overridable)."""

    def __init__(self, environment, cfg, client_id, *, will=None, source_address=None, owner=None):
        self.cfg, self.client_id, self.will, self.owner = cfg, client_id, will, owner
        self.sent: list[tuple[str, bytes, int, str | None]] = []
        self.room = 10**9
        self.flushes = 0
        self.connected = True
        self.inflight = 0

    def can_publish(self, qos):
        return self.room > 0

    def publish(self, topic, payload, qos=0, *, name=None, flush=True):
        if self.room <= 0:
            return False
        self.room -= 1
        self.sent.append((topic, payload, qos, name))
        return True

    def flush(self):
        self.flushes += 1

    def subscribe(self, topic, qos=1, *, name=None):
        self.subscribed = (topic, qos, name)

    def connect(self):
        pass

    def close(self, wait=0.0):
        self.connected = False


def _device(env, **attrs) -> MqttDevice:
    cls = type("Dev", (MqttDevice,), {"client_cls": FakeClient, "interval": 0.1, "qos": 1, **attrs})
    device = cls(env)
    device.on_start()
    return device


@pytest.fixture
def env():
    environment = new_env()
    telemetry.install(environment).start_run("unit-run")
    return environment


def test_device_topics_names_and_subscription(env):
    d = _device(env)
    assert d.device_id == "robot-0001"  # numbered per Environment: a fresh one starts at 1
    assert d.topic == "sensors/robot-0001/coordinates"
    assert d.client.subscribed == (f"orin/{d.device_id}/command", 1, "subscribe:1:orin/+/command")
    assert d.client.client_id == d.device_id and d.publish_name == PUB1


def test_open_model_timetable_and_envelope(env):
    d = _device(env)
    ledger = telemetry.get_ledger(env)
    start = time.time_ns() - 950_000_000  # 0.95 s behind: 10 messages are due
    nxt = d.publish_due(start, time.time_ns())
    assert len(d.client.sent) == 10 and d.client.flushes == 1  # one write for the backlog
    assert nxt == start + 10 * 100_000_000
    traces = [envelope.parse(p) for _, p, _, _ in d.client.sent]
    assert [t.seq for t in traces] == list(range(1, 11))
    assert [t.t0 for t in traces] == [
        start + k * 100_000_000 for k in range(10)
    ]  # intended, not actual
    assert all(t.tp >= t.t0 and t.run == "unit-run" and t.device_id == d.device_id for t in traces)
    assert ledger.published_total == 10
    assert (
        ledger.schedule_lag.count == 10 and ledger.schedule_lag.percentile(100) >= 100_000
    )  # ≥ 0.1 s late
    assert {t for t, _, _, _ in d.client.sent} == {d.topic}


def test_backlog_is_sent_in_bounded_batches(env):
    d = _device(env, max_batch=4)
    start = time.time_ns() - 2_000_000_000
    nxt = d.publish_due(start, time.time_ns())
    assert len(d.client.sent) == 4 and nxt == start + 4 * 100_000_000


def test_full_window_pauses_and_keeps_the_timetable(env):
    d = _device(env)
    d.client.room = 2
    start = time.time_ns() - 500_000_000
    assert d.publish_due(start, time.time_ns()) == 0  # off the timetable until there is room
    assert d.seq == 2 and d._due == start + 2 * 100_000_000
    d.client.room = 100
    d._started = True  # as after mqtt_connected()
    d.mqtt_window()  # the client says there is room: back on, at the same due time
    assert d._sched_token != 0
    d.on_stop()  # off the process timetable again
    assert d._sched_token == 0 and not d.client.connected


def test_draining_stops_publishing(env):
    d = _device(env)
    telemetry.get_ledger(env).draining = True
    assert d.publish_due(time.time_ns(), time.time_ns()) == 0
    assert d.client.sent == []


def test_interval_zero_only_listens(env):
    d = _device(env, interval=0)
    d.mqtt_connected(False)
    assert d._sched_token == 0


def test_command_receipt_latency(env):
    d = _device(env)
    issued = time.time_ns() - 5_000_000
    body = json.dumps(
        {"device_id": d.device_id, "command": "slam", "command_id": "c1", "issued_at": issued}
    )
    got = []
    d.on_command = got.append
    d.mqtt_message(d.command_topic_name, body.encode(), time.time_ns())
    e = entry(env, "command:orin/+/command")
    assert (e.num_requests, e.num_failures) == (1, 0) and e.total_response_time >= 5
    assert got and got[0]["command"] == "slam"
    d.mqtt_message(d.command_topic_name, b'{"command": "none"}', time.time_ns())  # no issued_at
    assert entry(env, "command:orin/+/command").num_none_requests == 1
    d.mqtt_message(d.command_topic_name, b"tracking", time.time_ns())
    assert entry(env, "command:orin/+/command").num_failures == 1
    d.mqtt_message("orin/other/command", body.encode(), time.time_ns())  # not ours: ignored
    assert entry(env, "command:orin/+/command").num_requests == 3


def test_payload_template(env, tmp_path):
    path = tmp_path / "t.json"
    path.write_text(
        json.dumps({"x": "{x}", "y": "{y}", "seq": "{seq}", "battery": 87, "id": "{device_id}"})
    )
    d = _device(env, payload_template=str(path))
    d.publish_due(time.time_ns(), time.time_ns())
    msg = json.loads(d.client.sent[0][1])
    assert msg["battery"] == 87 and msg["seq"] == 1 and msg["id"] == d.device_id
    assert msg["device_id"] == d.device_id and isinstance(msg["x"], float)
    assert envelope.parse(d.client.sent[0][1]).seq == 1
    assert Template({"a": "{nope}"}).render("d", 1, 2, 3, 4)["a"] == "{nope}"


def test_bad_template_is_one_sentence(env, tmp_path):
    from users import ConfigError

    path = tmp_path / "t.json"
    path.write_text("[1, 2]")
    with pytest.raises(ConfigError, match=r"must hold one JSON object, not list\.$"):
        _device(env, payload_template=str(path))


def test_trajectory_is_smooth(env):
    d = _device(env)
    t = time.time()
    points = [d.trajectory.at(t + k * 0.1) for k in range(50)]
    steps = [abs(a[0] - b[0]) + abs(a[1] - b[1]) for a, b in zip(points, points[1:], strict=False)]
    assert max(steps) < 5 and len(set(points)) > 40


def test_will_topic_gets_the_device_id(env):
    from users import Will

    d = _device(env, will=Will("devices/{device_id}/status", b"offline", 1, True))
    assert d.client.will == Will(f"devices/{d.device_id}/status", b"offline", 1, True)


def test_malformed_packet_drops_the_connection():
    env = new_env()
    client = make_client(env)
    client._feed(b"\x40\x00")  # a PUBACK without its packet identifier
    assert client.state == IDLE and client.losses == 1
    client.close()
    [error] = env.stats.errors.values()
    assert "protocol error" in str(error.error)
