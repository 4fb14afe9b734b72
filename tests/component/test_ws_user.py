"""WsSubscriber against real gateway processes (stream and snapshot) on real Redis and Mosquitto.

The tests play the consumer: they PUBLISH traced updates on the Redis update
channel; the Locust run's ledger counts what the raw WebSocket delivered.
"""

from __future__ import annotations

import socket

import gevent
import pytest
from gevent import monkey

from pipeline import auth
from tests.harness import Gateway, LocustRun, metric, push
from users.ws import WsSubscriber

_os_thread = monkey.get_original("threading", "get_ident")
AUTH_FAILURES = "pipeline_gateway_auth_failures_total"


@pytest.fixture(scope="module")
def gateway(redis_url, mqtt_url, tmp_path_factory):
    log = tmp_path_factory.mktemp("gw") / "stream.log"
    with Gateway(log, REDIS_URL=redis_url, MQTT_URL=mqtt_url).start() as gw:
        yield gw


class Watcher(WsSubscriber):
    reconnect_min = 0.05
    reconnect_max = 0.2


def test_subscribers_count_every_streamed_update(gateway, rds, tmp_path):
    with LocustRun(
        [Watcher], "--gateway-url", gateway.url, "--token", gateway.token, results=tmp_path
    ) as run:
        run.start(2)
        run.wait(lambda: len(run.ledger.subscribers) == 2, 10, "two WS subscribers")
        for seq in range(1, 51):
            for device in ("cmp-ws-1", "cmp-ws-2"):
                push(rds, run.ledger.run_id, device, seq, run.ledger)
        run.wait(lambda: run.delivered("mqtt→ws") == 200, 20, "200 deliveries")
        assert run.count("connect:/coordinates", "WS") == 2
        assert run.env.stats.total.num_failures == 0, run.errors()
        assert run.count("mqtt→ws", "E2E") == 0  # measurements, not Locust requests
        user = next(iter(run.runner.user_greenlets)).args[0]
        sock = user.ws.socket
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        assert user.ws.connected and not user.lost.is_set()
        assert user.frames == 100  # 2 devices x 50 updates, nothing else on the stream
    totals = run.e2e["paths"]["mqtt→ws"]["totals"]
    assert (totals["delivered"], totals["lost"], totals["duplicated"]) == (200, 0, 0)
    assert totals["devices_complete"] == 4
    latency = run.e2e["paths"]["mqtt→ws"]["latency"]
    assert latency["total"]["count"] == latency["push"]["count"] == 200


def test_snapshot_batches_are_accounted_as_staleness(redis_url, mqtt_url, rds, tmp_path):
    with Gateway(
        tmp_path / "snapshot.log",
        REDIS_URL=redis_url,
        MQTT_URL=mqtt_url,
        PUSH_MODE="snapshot",
        SNAPSHOT_INTERVAL_MS="200",
    ).start() as gw:
        with LocustRun(
            [Watcher], "--gateway-url", gw.url, "--token", gw.token, results=tmp_path
        ) as run:
            run.start(1)
            run.wait(lambda: run.ledger.subscribers, 10, "the WS subscriber")
            (sub,) = run.ledger.subscribers.values()
            for seq in range(1, 6):
                push(rds, run.ledger.run_id, "cmp-snap", seq, run.ledger)
                gevent.sleep(0.25)
            run.wait(lambda: sub.batches >= 5, 10, "five snapshot batches")
        path = run.e2e["paths"]["mqtt→ws"]
        assert path["modes"] == ["snapshot"]
        assert path["snapshot"]["batches"] >= 5
        assert path["snapshot"]["regressions"] == 0
        assert path["latency"]["staleness"]["count"] >= 3
        assert "total" not in path["latency"]  # no per-message latency in snapshot mode


def test_a_restarted_gateway_is_reconnected(redis_url, mqtt_url, rds, tmp_path):
    with Gateway(tmp_path / "gw.log", REDIS_URL=redis_url, MQTT_URL=mqtt_url).start() as gw:
        with LocustRun(
            [Watcher], "--gateway-url", gw.url, "--token", gw.token, results=tmp_path
        ) as run:
            run.start(1)
            run.wait(lambda: run.ledger.subscribers, 10, "the WS subscriber")
            ledger = run.ledger
            for seq in range(1, 6):
                push(rds, ledger.run_id, "cmp-ws-restart", seq, ledger)
            run.wait(lambda: run.delivered("mqtt→ws") == 5, 10, "5 deliveries")
            gw.stop()
            run.wait(lambda: run.count("connection lost", "WS") == 1, 10, "the lost connection")
            gw.start()  # again: the same port and settings
            run.wait(
                lambda: (
                    run.count("connect:/coordinates", "WS")
                    - run.entry("connect:/coordinates", "WS").num_failures
                    == 2
                ),
                20,
                "the second connection",
            )
            for seq in range(6, 11):
                push(rds, ledger.run_id, "cmp-ws-restart", seq, ledger)
            run.wait(lambda: run.delivered("mqtt→ws") == 10, 10, "10 deliveries")
        totals = run.e2e["paths"]["mqtt→ws"]["totals"]
        assert (totals["delivered"], totals["lost"]) == (10, 0)


def test_frames_are_read_in_the_locust_thread(gateway, rds, tmp_path):
    seen: list[tuple[int, bool]] = []

    class Probe(WsSubscriber):
        def _on_frame(self, data, recv_ns):  # record the OS thread the pump greenlet runs in
            seen.append((_os_thread(), isinstance(gevent.getcurrent(), gevent.Greenlet)))
            super()._on_frame(data, recv_ns)

    with LocustRun(
        [Probe], "--gateway-url", gateway.url, "--token", gateway.token, results=tmp_path
    ) as run:
        run.start(1)
        run.wait(lambda: run.ledger.subscribers, 10, "the WS subscriber")
        push(rds, run.ledger.run_id, "cmp-ws-thread", 1, run.ledger)
        run.wait(lambda: seen, 10, "a frame")
    assert seen == [(_os_thread(), True)]  # a greenlet (the pump), not the hub


def test_a_refused_token_is_a_failed_connect_saying_401(gateway, tmp_path):
    class Forged(Watcher):
        token = auth.mint_token("not-the-gateway-secret-" * 2)

    before = metric(gateway.metrics(), AUTH_FAILURES, protocol="websocket", reason="signature")
    with LocustRun([Forged], "--gateway-url", gateway.url, results=tmp_path) as run:
        run.start(1)
        name = "connect:/coordinates"
        run.wait(lambda: run.entry(name, "WS").num_failures >= 2, 10, "failed connects")
        assert run.entry(name, "WS").num_requests == run.entry(name, "WS").num_failures
        (reason,) = {e for (_m, n), e in run.errors().items() if n == name}
        assert "401" in reason, reason
    after = metric(gateway.metrics(), AUTH_FAILURES, protocol="websocket", reason="signature")
    assert after - before >= 2
