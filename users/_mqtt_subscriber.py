"""``MqttSubscriber``: device messages straight from the broker, fed to the ledger (path ``mqtt→mqtt``).

The MQTT side of ``locustfiles/mqtt_vs_amqp.py`` (the broker alone, no
pipeline behind it): one connection subscribed to ``sensors/+/coordinates``,
on the same engine as ``MqttDevice`` (``users._mqtt_client``). Its session is
persistent (MQTT 5, ``session_expiry`` seconds after it disconnects): while it
is away, or while Mosquitto restarts (its persistence file keeps the session),
the broker queues the QoS 1 messages for it, as RabbitMQ's durable queue does
for ``AmqpSubscriber``; after the run the broker forgets the session by itself.

Locust entries (``request_type="MQTT"``): ``connect``, ``subscribe:1:sensors/+/coordinates``
(from the engine); the messages themselves are counted by the ledger (``E2E`` entries).
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING

import gevent
from locust import User, constant, task

import telemetry
from users._config import parse_mqtt_url, settings, stack_secret_file
from users._devices import DeviceIds
from users._mqtt_auth import tool_login
from users._mqtt_client import ClientConfig, DeviceClient
from users._mqtt_codec import MQTT5

if TYPE_CHECKING:
    from locust.env import Environment

__all__ = ["MqttSubscriber"]


class MqttSubscriber(DeviceIds, User):
    """One MQTT subscription to the devices' topic, counted by the ledger."""

    abstract = True

    #: ``mqtt://…``; None = ``--mqtt-url``.
    url: str | None = None
    topic: str = "sensors/+/coordinates"
    qos: int = 1
    #: Seconds the broker keeps the session (and queues for it) after a disconnect.
    session_expiry: int = 120
    #: Seconds ``on_start`` waits for CONNACK and SUBACK.
    subscribe_timeout: float = 10.0
    numbering = "mqtt-sub"
    device_id_prefix = "sub-"
    ledger_kind = "mqtt"

    wait_time = constant(3600)

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        s = settings(environment)
        url = parse_mqtt_url(self.url, f"{type(self).__name__}.url") if self.url else s.mqtt
        username, password = url.username, url.password
        secret_file = s.mqtt_secret_file or stack_secret_file(url)
        if not username and secret_file:  # a pipeswarm stack: its account that reads all
            username, password = tool_login(secret_file)
        cfg = ClientConfig(
            host=url.host,
            port=url.port,
            version=MQTT5,
            username=username,
            password=password,
            keepalive=s.mqtt_keepalive,
            clean=False,
            session_expiry=self.session_expiry,
            max_inflight=100,
        )
        self.number = self.next_device_number()
        self.sub: telemetry.Subscriber | None = None
        self._ledger: telemetry.Ledger | None = None
        self._client_id = ""
        self._cfg = cfg
        self.client: DeviceClient | None = None
        self.received = 0
        self._connects = 0

    def on_start(self) -> None:
        self._ledger = telemetry.get_ledger(self.environment)
        # unique per run: a persistent session of an earlier run is not ours
        self._client_id = f"ps-{self._ledger.run_id[-8:]}-{self.make_device_id(self.number)}"
        self.client = DeviceClient(self.environment, self._cfg, self._client_id, owner=self)
        self.client.subscribe(self.topic, self.qos, name=f"subscribe:{self.qos}:{self.topic}")
        self.client.connect()
        deadline = time.monotonic() + self.subscribe_timeout
        self.client.wait_connected(self.subscribe_timeout)
        while self.client.subscribing and time.monotonic() < deadline:
            gevent.sleep(0.005)
        if self.sub is None:  # from SUBACK on, everything published must arrive
            self.sub = self._ledger.subscriber(self.ledger_kind, srcs=("mqtt",))

    def on_stop(self) -> None:
        if self.client is not None:
            self.client.close(wait=1.0)
            self._end_session()
        if self.sub is not None:
            self.sub.close()

    def _end_session(self) -> None:
        """Drop the broker's session now, not ``session_expiry`` seconds later.

        Left alone, it keeps queueing every device message for nobody (and the next
        run's broker figures with it). A connect with Clean Start and no expiry ends
        it (MQTT 5 §3.1.2.4): the broker discards the old session at once.
        """
        cfg = dataclasses.replace(self._cfg, clean=True, session_expiry=0)
        cleaner = DeviceClient(self.environment, cfg, self._client_id)
        cleaner.connect()
        cleaner.wait_connected(self.subscribe_timeout)
        cleaner.close(wait=1.0)

    @task
    def idle(self) -> None:
        """Nothing to do: the pump greenlet receives."""

    # --- engine callbacks (pump greenlet) ------------------------------------------------
    def mqtt_connected(self, session_present: bool) -> None:
        self._connects += 1
        if self._connects > 1 and self.sub is not None:
            self.sub.reconnected()

    def mqtt_disconnected(self, reason: str) -> None:
        pass

    def mqtt_window(self) -> None:
        pass

    def mqtt_message(self, topic: str, payload: bytes, recv_ns: int) -> None:
        self.received += 1
        sub = self.sub
        if sub is not None:
            sub.received(payload, recv_ns)
