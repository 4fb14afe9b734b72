"""StompSubscriber against a real gateway process (with a token) on real Redis and Mosquitto.

The tests play the pipeline's consumer: they PUBLISH traced updates on the Redis
update channel, the gateway pushes them over STOMP, and the Locust run's ledger
counts what arrived.
"""

from __future__ import annotations

import json
import socket
import time

import gevent
import pytest
from gevent import monkey

from pipeline import auth
from tests.harness import Gateway, LocustRun, push
from tests.helpers import closed_port, wait_for
from users.stomp import (
    TOPIC_ALL,
    StompClient,
    StompConnectFailed,
    StompPyClient,
    StompSubscriber,
)

SECRET = "component-secret-" * 3
TOKEN = auth.mint_token(SECRET, "component-test")
_os_thread = monkey.get_original("threading", "get_ident")


@pytest.fixture(scope="module")
def gateway(redis_url, mqtt_url, tmp_path_factory):
    with Gateway(
        tmp_path_factory.mktemp("gw") / "gateway.log",
        REDIS_URL=redis_url,
        MQTT_URL=mqtt_url,
        PUSH_MODE="stream",
        GATEWAY_JWT_SECRET=SECRET,
    ).start() as gw:
        yield gw


class Everything(StompSubscriber):
    pass  # the token: minted from --jwt-secret


class OneDevice(StompSubscriber):
    token = TOKEN
    destination = "/topic/devices/{device_id}"
    device_ids = ("cmp-stomp-1",)


def test_subscribers_count_every_update_and_report_connect_and_subscribe(gateway, rds, tmp_path):
    devices = ("cmp-stomp-1", "cmp-stomp-2")
    args = ("--gateway-url", gateway.url, "--jwt-secret", SECRET)
    with LocustRun([Everything, OneDevice], *args, results=tmp_path) as run:
        run.start(2)
        run.wait(lambda: len(run.ledger.subscribers) == 2, 10, "two STOMP subscriptions")
        for seq in range(1, 101):
            for device in devices:
                push(rds, run.ledger.run_id, device, seq, run.ledger)
        # all devices (200) + the one device (100)
        run.wait(lambda: run.delivered("mqtt→stomp") == 300, 20, "300 deliveries")
        assert run.count("connect", "STOMP") == 2
        assert run.count("subscribe:/topic/coordinates", "STOMP") == 1
        assert run.count("subscribe:/topic/devices/{id}", "STOMP") == 1
        assert run.env.stats.total.num_failures == 0, run.errors()
        assert run.count("mqtt→stomp", "E2E") == 0  # measurements, not Locust requests
    totals = run.e2e["paths"]["mqtt→stomp"]["totals"]
    assert (totals["delivered"], totals["lost"], totals["duplicated"]) == (300, 0, 0)
    latency = run.e2e["paths"]["mqtt→stomp"]["latency"]
    assert latency["total"]["count"] == latency["push"]["count"] == 300
    assert totals["devices_complete"] == 3  # 2 for the all-devices subscriber, 1 for the other


def test_a_wrong_or_missing_token_is_a_failed_connect_with_the_gateways_reason(gateway, tmp_path):
    class WrongToken(StompSubscriber):
        token = "not-the-token"
        reconnect_min = reconnect_max = 0.05

    class NoToken(WrongToken):
        token = ""

    with LocustRun([WrongToken, NoToken], "--gateway-url", gateway.url, results=tmp_path) as run:
        run.start(2)
        run.wait(lambda: run.entry("connect", "STOMP").num_failures >= 4, 10, "failed connects")
        assert (
            run.entry("connect", "STOMP").num_requests == run.entry("connect", "STOMP").num_failures
        )
        assert run.count("subscribe:/topic/coordinates", "STOMP") == 0
        (reason,) = {e for (_m, name), e in run.errors().items() if name == "connect"}
        assert "authentication failed" in reason


def test_frames_are_read_in_the_locust_thread_and_the_socket_has_nodelay(gateway, rds):
    got: list[tuple[bytes, int, int]] = []
    client = StompClient(
        "127.0.0.1",
        gateway.port,
        "/ws",
        on_message=lambda body, recv_ns: got.append((body, recv_ns, _os_thread())),
        token=TOKEN,
    )
    try:
        assert client.connect() > 0
        assert client.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        assert client.negotiated == (10_000, 10_000)  # agreed with the gateway's CONNECTED
        assert client.subscribe(TOPIC_ALL) > 0
        for seq in range(1, 21):
            push(rds, "any-run", "cmp-greenlet", seq)
            gevent.sleep(0.01)
        wait_for(lambda: len(got) == 20, 10, "20 updates over STOMP")
        # the pump greenlet read them, in this (the hub's) OS thread
        assert {thread for _b, _t, thread in got} == {_os_thread()}
        # the stamp is taken as the frame is read: gateway -> receive stays on loopback
        # scale (Nagle's 40 ms or a stalled loop would show)
        push_ms = sorted((t - json.loads(b)["trace"]["hops"]["gateway"]) / 1e6 for b, t, _ in got)
        assert 0 <= push_ms[0] and push_ms[10] < 20, push_ms
    finally:
        client.close()
    assert client.lost.is_set() and not client.up


def test_the_reference_engine_stomp_py_reads_the_same_frames(gateway, rds):
    """StompPyClient (stomp.py on websocket-client) and StompClient, side by side."""
    seen: dict[str, list[tuple[int, str | None]]] = {"ours": [], "stomp.py": []}
    clients = {
        "ours": StompClient("127.0.0.1", gateway.port, "/ws", on_message=print, token=TOKEN),
        "stomp.py": StompPyClient("127.0.0.1", gateway.port, "/ws", on_message=print, token=TOKEN),
    }
    for name, client in clients.items():

        def record(body: bytes, _ns: int, name: str = name, client=client) -> None:
            seen[name].append((json.loads(body)["trace"]["seq"], client.last_stream_id))

        client.on_message = record
    try:
        for client in clients.values():
            client.connect()
            client.subscribe("/topic/devices/cmp-reference")
        ids = [push(rds, "any-run", "cmp-reference", seq) for seq in range(1, 11)]
        wait_for(lambda: all(len(v) == 10 for v in seen.values()), 10, "10 frames each")
        assert seen["ours"] == seen["stomp.py"] == list(zip(range(1, 11), ids, strict=True))
    finally:
        for client in clients.values():
            client.close()


def test_connect_to_nothing_fails_fast_with_one_sentence():
    client = StompClient("127.0.0.1", closed_port(), "/ws", on_message=lambda *_: None)
    start = time.monotonic()
    with pytest.raises(StompConnectFailed, match=r"127\.0\.0\.1:\d+/ws failed: .*refused"):
        client.connect()
    assert time.monotonic() - start < 5
    assert client.lost.is_set()


def test_a_restarted_gateway_is_reconnected_and_resubscribed(redis_url, mqtt_url, rds, tmp_path):
    class Quick(Everything):
        reconnect_min = 0.05
        reconnect_max = 0.2

    log = tmp_path / "gateway.log"
    env = {"REDIS_URL": redis_url, "MQTT_URL": mqtt_url, "GATEWAY_JWT_SECRET": SECRET}
    with Gateway(log, **env).start() as gw:
        with LocustRun([Quick], "--gateway-url", gw.url, "--token", TOKEN, results=tmp_path) as run:
            run.start(1)
            run.wait(lambda: run.ledger.subscribers, 10, "the subscription")
            ledger = run.ledger
            for seq in range(1, 11):
                push(rds, ledger.run_id, "cmp-restart", seq, ledger)
            run.wait(lambda: run.delivered("mqtt→stomp") == 10, 10, "10 deliveries")
            gw.stop()
            run.wait(lambda: run.count("connection lost", "STOMP") == 1, 10, "the lost connection")
            gw.start()  # again: the same port and settings
            sub_name = "subscribe:/topic/coordinates"
            run.wait(lambda: run.count(sub_name, "STOMP") == 2, 20, "the second SUBSCRIBE")
            for seq in range(11, 21):
                push(rds, ledger.run_id, "cmp-restart", seq, ledger)
            run.wait(lambda: run.delivered("mqtt→stomp") == 20, 10, "20 deliveries")
            assert run.entry(sub_name, "STOMP").num_failures == 0
            assert len(ledger.subscribers) == 1  # one subscriber across the reconnect
        totals = run.e2e["paths"]["mqtt→stomp"]["totals"]
        assert (totals["delivered"], totals["lost"]) == (20, 0)
