"""StompSubscriber: one STOMP 1.2 over WebSocket subscription, every MESSAGE into the ledger.

What a browser running stomp.js does against the gateway (or a Spring Boot
``/ws`` endpoint): open ``ws://host:port/ws``, CONNECT (with a bearer token when
one is given, as the Go STOMP load tool sends its JWT), negotiate heart-beats,
SUBSCRIBE to ``/topic/coordinates`` (all devices) or ``/topic/devices/{id}``
(one), then receive. Every MESSAGE body goes to the end-to-end ledger
(``telemetry``) with its receive time, as kind ``stomp`` (paths ``mqtt→stomp``,
``kafka→stomp``); snapshot batches are understood by the ledger.

Locust entries (``request_type="STOMP"``):

======================================  ===========================================  ===================
name                                    response_time                                exception
======================================  ===========================================  ===================
``connect``                             TCP connect start -> CONNECTED, ms           refused, ERROR frame
                                        (WebSocket upgrade included)                 (bad token), timeout
``subscribe:/topic/coordinates``        SUBSCRIBE -> RECEIPT, ms                     ERROR frame, timeout
``subscribe:/topic/devices/{id}``       the same; the device id never in the name
``connection lost``                     ``None`` (an event, not a duration)          why it ended
======================================  ===========================================  ===================

A lost connection is reconnected (and re-subscribed) with a jittered backoff;
messages published meanwhile are missing for this subscriber and the ledger
reports them as its loss.

Options (also ``locust.conf`` / environment): ``--stomp-destination``
(``PIPESWARM_STOMP_DESTINATION``, default ``/topic/coordinates``; may hold
``{device_id}``), ``--stomp-device-count`` (``PIPESWARM_STOMP_DEVICE_COUNT``: how
many devices per-device subscribers spread over) and ``--stomp-token``
(``PIPESWARM_STOMP_TOKEN``; checked by the gateway when it runs with
``GATEWAY_TOKEN``). The gateway URL is ``--gateway-url``.

Engine: stomp.py's ``WSStompConnection`` (see ``users._stomp_client`` for how it
runs under gevent, the receive timestamp and TCP_NODELAY).
"""

from __future__ import annotations

import itertools
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import gevent
from locust import User, constant, events, task
from locust.runners import WorkerRunner

import telemetry
from telemetry.options import option
from users._config import ConfigError, settings
from users._stomp_client import (
    StompClient,
    StompConnectFailed,
    StompConnectionLost,
    StompError,
    StompSubscribeFailed,
)
from users._ws_common import Backoff, WsEndpoint, fire, ws_endpoint

if TYPE_CHECKING:
    from locust.argument_parser import LocustArgumentParser
    from locust.env import Environment

__all__ = [
    "REQUEST_TYPE",
    "TOPIC_ALL",
    "TOPIC_DEVICE",
    "StompSubscriber",
    "StompClient",
    "StompError",
    "StompConnectFailed",
    "StompSubscribeFailed",
    "StompConnectionLost",
    "subscribe_name",
    "check_destination",
    "add_arguments",
]

REQUEST_TYPE = "STOMP"
TOPIC_ALL = "/topic/coordinates"
TOPIC_DEVICE = "/topic/devices/{device_id}"
_DEVICE_PREFIX = "/topic/devices/"

_numbers = itertools.count(1)


def subscribe_name(destination: str) -> str:
    """The stats name of a SUBSCRIBE: device destinations collapse to ``{id}``.

    >>> subscribe_name("/topic/devices/robot-0007")
    'subscribe:/topic/devices/{id}'
    """
    if destination.startswith(_DEVICE_PREFIX):
        return "subscribe:" + _DEVICE_PREFIX + "{id}"
    return "subscribe:" + destination.replace("{device_id}", "{id}")


class StompSubscriber(User):
    """One WebSocket connection with one STOMP subscription, fed to the ledger.

    Every ``None`` attribute takes its value from the matching option; set it on
    a subclass to fix it in code::

        class OneDeviceWatcher(StompSubscriber):
            destination = "/topic/devices/{device_id}"   # robot-0001, robot-0002, ...
    """

    abstract = True

    #: Gateway base URL (``http://host:port``; https -> wss). None = ``--gateway-url``.
    url: str | None = None
    #: The STOMP endpoint's path on the gateway.
    ws_path: str = "/ws"
    #: ``/topic/coordinates`` or ``/topic/devices/{device_id}``. None = ``--stomp-destination``.
    destination: str | None = None
    #: Bearer token sent as ``Authorization: Bearer <token>`` in CONNECT; "" = none.
    #: None = ``--stomp-token``.
    token: str | None = None
    #: STOMP heart-beat ``(cx, cy)`` in ms: what we can send, what we want to receive.
    heartbeats: tuple[int, int] = (10_000, 10_000)
    #: Device ids for a ``{device_id}`` destination, spread over the subscribers;
    #: empty = :meth:`make_device_id` (the ids ``MqttDevice`` gives its devices).
    device_ids: Sequence[str] = ()
    #: With :meth:`make_device_id`: how many devices to spread the subscribers over
    #: (subscriber n watches device ``(n - 1) % count + 1``); 0 = subscriber n
    #: watches device n. None = ``--stomp-device-count``.
    device_count: int | None = None
    device_id_prefix: str = "robot-"
    connect_timeout: float = 10.0
    receipt_timeout: float = 10.0
    #: Reconnect backoff: doubles from ``reconnect_min`` up to ``reconnect_max`` (s), jittered.
    reconnect_min: float = 0.2
    reconnect_max: float = 10.0
    #: The engine; a subclass of :class:`StompClient` may replace it.
    client_cls: type[StompClient] = StompClient

    # The task only supervises the connection; frames arrive in the receiver greenlet.
    wait_time = constant(0)

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        n = next(_numbers)
        gateway = self.url or settings(environment).gateway_url
        self.endpoint: WsEndpoint = ws_endpoint(gateway, self.ws_path)
        dest = check_destination(
            self.destination or str(option(environment, "stomp_destination", TOPIC_ALL))
        )
        self.device_id: str | None = None
        if "{device_id}" in dest:
            ids = self.device_ids
            count = self.device_count
            if count is None:
                count = _count_option(environment)
            if ids:
                self.device_id = ids[(n - 1) % len(ids)]
            else:
                self.device_id = self.make_device_id((n - 1) % count + 1 if count else n)
            dest = dest.replace("{device_id}", self.device_id)
        elif dest.startswith(_DEVICE_PREFIX):
            self.device_id = dest[len(_DEVICE_PREFIX) :]
        self.topic: str = dest
        self.subscribe_name: str = subscribe_name(dest)
        token = (
            self.token if self.token is not None else str(option(environment, "stomp_token", ""))
        )
        self.backoff = Backoff(self.reconnect_min, self.reconnect_max)
        self.sub: telemetry.Subscriber | None = None
        self.client: StompClient = self.client_cls(
            self.endpoint.host,
            self.endpoint.port,
            self.endpoint.path,
            on_message=self._on_message,
            token=token,
            heartbeats=self.heartbeats,
            tls=self.endpoint.tls,
            connect_timeout=self.connect_timeout,
            receipt_timeout=self.receipt_timeout,
        )
        self.client.on_subscribed = self._subscribed
        self._ledger: telemetry.Ledger | None = None
        self._stopping = False

    def make_device_id(self, n: int) -> str:
        """``robot-0007`` (``robot-w2-0007`` on worker 2): subscriber n watches device n."""
        runner = self.environment.runner
        if isinstance(runner, WorkerRunner):
            return f"{self.device_id_prefix}w{runner.worker_index}-{n:04d}"
        return f"{self.device_id_prefix}{n:04d}"

    # --- Locust lifecycle -----------------------------------------------------
    def on_start(self) -> None:
        self._ledger = telemetry.get_ledger(self.environment)
        self._session()

    def on_stop(self) -> None:
        self._stopping = True
        self.client.close()
        if self.sub is not None:
            self.sub.close()

    @task
    def keep_subscribed(self) -> None:
        """Wait while the subscription is up; when it ends, report it and reconnect."""
        client = self.client
        if client.up:
            client.lost.wait()
            if self._stopping:
                return
            fire(
                self.environment,
                REQUEST_TYPE,
                "connection lost",
                None,
                StompConnectionLost(client.last_error or "connection closed"),
            )
        self.wait_backoff()
        self._session()

    def wait_backoff(self) -> None:
        """Sleep before the next reconnect attempt (cooperatively)."""
        gevent.sleep(self.backoff.next())

    # --- one session -----------------------------------------------------------------
    def _session(self) -> bool:
        """CONNECT then SUBSCRIBE, each reported; False when either failed."""
        env = self.environment
        client = self.client
        start = time.perf_counter()
        try:
            ms = client.connect()
        except StompError as exc:
            fire(env, REQUEST_TYPE, "connect", (time.perf_counter() - start) * 1e3, exc)
            return False
        fire(env, REQUEST_TYPE, "connect", ms)
        start = time.perf_counter()
        try:
            ms = client.subscribe(self.topic)
        except StompError as exc:
            fire(env, REQUEST_TYPE, self.subscribe_name, (time.perf_counter() - start) * 1e3, exc)
            client.close()
            return False
        fire(env, REQUEST_TYPE, self.subscribe_name, ms)
        self.backoff.reset()
        return True

    def _subscribed(self) -> None:
        # The ledger subscription starts when the first RECEIPT is read (receiver
        # greenlet, so no MESSAGE behind it is missed); it lives across reconnects,
        # so what a reconnect missed is this subscriber's loss.
        if self.sub is None and self._ledger is not None:
            devices = [self.device_id] if self.device_id is not None else None
            self.sub = self._ledger.subscriber("stomp", devices)

    def _on_message(self, body: bytes, recv_ns: int) -> None:
        sub = self.sub
        if sub is not None:
            sub.received(body, recv_ns)


def add_arguments(parser: LocustArgumentParser) -> None:
    """``--stomp-destination``, ``--stomp-device-count``, ``--stomp-token`` (parser listener)."""
    parser.add_argument(
        "--stomp-destination",
        default=TOPIC_ALL,
        env_var="PIPESWARM_STOMP_DESTINATION",
        help="STOMP destination of StompSubscriber: /topic/coordinates (all devices) or "
        "/topic/devices/{device_id} (one device each). Default /topic/coordinates",
    )
    parser.add_argument(
        "--stomp-device-count",
        type=int,
        default=0,
        env_var="PIPESWARM_STOMP_DEVICE_COUNT",
        help="With /topic/devices/{device_id}: spread the subscribers over this many devices "
        "(robot-0001..robot-N, MqttDevice's ids); 0 = subscriber n watches device n. Default 0",
    )
    parser.add_argument(
        "--stomp-token",
        default="",
        env_var="PIPESWARM_STOMP_TOKEN",
        is_secret=True,
        help="Bearer token StompSubscriber sends in CONNECT (Authorization: Bearer <token>). "
        "Default: none",
    )


def _count_option(environment: Environment) -> int:
    try:
        count = int(option(environment, "stomp_device_count", 0))
    except (TypeError, ValueError):
        count = -1
    if count < 0:
        raise ConfigError(
            "--stomp-device-count: must be 0 (subscriber n watches device n) or a device count."
        )
    return count


def check_destination(destination: str) -> str:
    """Return ``destination`` if the gateway knows its form, else raise :class:`ConfigError`."""
    if destination == TOPIC_ALL or (
        destination.startswith(_DEVICE_PREFIX) and len(destination) > len(_DEVICE_PREFIX)
    ):
        return destination
    raise ConfigError(
        f"--stomp-destination {destination!r}: expected {TOPIC_ALL} or {TOPIC_DEVICE}."
    )


def _validate_at_init(environment: Environment, **_kw: Any) -> None:
    """A bad ``--stomp-destination`` is one sentence and exit code 2, before any user starts."""
    if environment.parsed_options is None:
        return
    try:
        check_destination(str(option(environment, "stomp_destination", TOPIC_ALL)))
        _count_option(environment)
    except ConfigError as err:
        sys.stderr.write(f"pipeswarm: {err}\n")
        raise SystemExit(2) from None


events.init_command_line_parser.add_listener(add_arguments)
events.init.add_listener(_validate_at_init)
