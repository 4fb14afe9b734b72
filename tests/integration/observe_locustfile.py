"""The short real run behind the observability tests (tests/integration/test_observability.py).

Devices publish over MQTT through the whole pipeline to a STOMP and a raw
WebSocket subscriber, and an operator sends REST commands back to the devices,
so every family the dashboards read has samples: Locust entries of several
request types, e2e histograms of two paths with per-hop legs, schedule lag,
command latency, generator CPU and loop lag per worker. 11 users.
"""

from __future__ import annotations

from locust import constant

from users import MqttDevice, RestCommander, StompSubscriber, WsSubscriber


class Device(MqttDevice):
    fixed_count = 8
    interval = 0.05  # 20 msg/s each


class Watcher(StompSubscriber):
    fixed_count = 1


class Viewer(WsSubscriber):
    fixed_count = 1


class Operator(RestCommander):
    fixed_count = 1
    wait_time = constant(0.3)
