"""WsSubscriber without a server: endpoint, names, backoff."""

from __future__ import annotations

from locust.env import Environment
from locust.event import Events

from tests.harness import parse_options
from users._backoff import Backoff
from users._ws_common import ws_endpoint
from users.ws import WsSubscriber


class Watcher(WsSubscriber):
    pass


def test_endpoint_and_connect_name_come_from_the_gateway_url():
    env = Environment(events=Events(), parsed_options=parse_options("--gateway-url", "http://h:81"))
    user = Watcher(env)
    assert user.endpoint.url == "ws://h:81/coordinates"
    assert user.connect_name == "connect:/coordinates"
    assert user.ws is None and user.lost.is_set()


def test_ws_endpoint_keeps_a_base_path_and_maps_https_to_wss():
    assert ws_endpoint("http://127.0.0.1:8081", "/ws").url == "ws://127.0.0.1:8081/ws"
    assert ws_endpoint("https://gw.example/iot/", "/coordinates").url == (
        "wss://gw.example:443/iot/coordinates"
    )
    assert ws_endpoint("http://gw", "/ws").port == 80


def test_backoff_doubles_up_to_its_ceiling_and_resets():
    b = Backoff(0.2, 1.0)
    delays = [b.next() for _ in range(6)]
    ceilings = [0.2, 0.4, 0.8, 1.0, 1.0, 1.0]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    b.reset()
    assert b.next() <= 0.2
