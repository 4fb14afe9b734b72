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

A lost connection is reconnected (and re-subscribed) with a jittered backoff,
resuming after the ``stream-id`` of the last MESSAGE (a ``since`` header on
SUBSCRIBE, ``users._subscriber``): what the gateway replays counts as late;
what it cannot replay is this subscriber's loss.

Options (also ``locust.conf`` / environment): ``--stomp-destination``
(``PIPESWARM_STOMP_DESTINATION``, default ``/topic/coordinates``; may hold
``{device_id}``), ``--stomp-device-count`` (``PIPESWARM_STOMP_DEVICE_COUNT``: how
many devices per-device subscribers spread over). The gateway URL is
``--gateway-url``; the bearer token ``--token``, or one minted from
``--jwt-secret`` (by default the running embedded stack's secret). A refused
token is a failed ``connect`` whose exception carries the gateway's ERROR
message (``authentication failed``) and reason.

Engine: :class:`StompClient` (``users._stomp_client``): a non-blocking socket
read by the process's one pump greenlet (MqttDevice's), a sans-IO WebSocket
codec and a STOMP 1.2 frame codec; no greenlet or thread per connection.
Chosen by ``python -m bench stomp-engines`` over stomp.py on websocket-client,
which stays available as :class:`StompPyClient` (``client_cls = StompPyClient``)
and is the reference in the tests. Measured on the 2-core dev machine
(``bench/README.md``): see the README's user table for frames/s per core and
KB per idle subscription.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from telemetry.options import Option, OptionGroup, at_least
from users._config import settings
from users._devices import DeviceIds
from users._mqtt_loop import get_pump
from users._stomp_client import StompClient
from users._stomp_stomppy import StompPyClient
from users._subscriber import PushSubscriber
from users._ws_common import WsEndpoint, fire, ws_endpoint
from users.exceptions import (
    ConfigError,
    StompConnectFailed,
    StompConnectionLost,
    StompError,
    StompSubscribeFailed,
)

if TYPE_CHECKING:
    from gevent.event import Event
    from locust.env import Environment

__all__ = [
    "REQUEST_TYPE",
    "TOPIC_ALL",
    "TOPIC_DEVICE",
    "StompSubscriber",
    "StompClient",
    "StompPyClient",
    "StompError",
    "StompConnectFailed",
    "StompSubscribeFailed",
    "StompConnectionLost",
    "subscribe_name",
    "check_destination",
    "OPTIONS",
]

REQUEST_TYPE = "STOMP"
TOPIC_ALL = "/topic/coordinates"
TOPIC_DEVICE = "/topic/devices/{device_id}"
_DEVICE_PREFIX = "/topic/devices/"


def subscribe_name(destination: str) -> str:
    """The stats name of a SUBSCRIBE: device destinations collapse to ``{id}``.

    >>> subscribe_name("/topic/devices/robot-0007")
    'subscribe:/topic/devices/{id}'
    """
    if destination.startswith(_DEVICE_PREFIX):
        return "subscribe:" + _DEVICE_PREFIX + "{id}"
    return "subscribe:" + destination.replace("{device_id}", "{id}")


def check_destination(destination: str) -> str | None:
    """Why ``destination`` is not a form the gateway knows, or None when it is."""
    if destination == TOPIC_ALL or (
        destination.startswith(_DEVICE_PREFIX) and len(destination) > len(_DEVICE_PREFIX)
    ):
        return None
    return f"expected {TOPIC_ALL} or {TOPIC_DEVICE}"


DESTINATION = Option(
    "--stomp-destination",
    str,
    TOPIC_ALL,
    "PIPESWARM_STOMP_DESTINATION",
    "STOMP destination of StompSubscriber: /topic/coordinates (all devices) or "
    "/topic/devices/{device_id} (one device each)",
    check=check_destination,
    error=ConfigError,
)
DEVICE_COUNT = Option(
    "--stomp-device-count",
    int,
    0,
    "PIPESWARM_STOMP_DEVICE_COUNT",
    "With /topic/devices/{device_id}: spread the subscribers over this many devices "
    "(robot-0001..robot-N, MqttDevice's ids); 0 = subscriber n watches device n",
    check=at_least(0, "must be 0 (subscriber n watches device n) or a device count"),
    error=ConfigError,
)
OPTIONS = OptionGroup("pipeswarm STOMP subscriber", DESTINATION, DEVICE_COUNT)


class StompSubscriber(DeviceIds, PushSubscriber):
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
    #: None = ``--token`` (or one minted from ``--jwt-secret``).
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
    numbering = "stomp"
    connect_timeout: float = 10.0
    receipt_timeout: float = 10.0
    #: Source address of the connections (e.g. ``127.0.0.3``), None = the kernel's
    #: choice; a list spreads the subscribers over several (more local ports).
    source_addresses: Sequence[str] = ()
    #: The engine: :class:`StompClient`, or :class:`StompPyClient` (stomp.py, the reference).
    client_cls: type[StompClient] | type[StompPyClient] = StompClient

    request_type = REQUEST_TYPE
    ledger_kind = "stomp"

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        n = self.next_device_number()
        gateway = self.url or settings(environment).gateway_url
        self.endpoint: WsEndpoint = ws_endpoint(gateway, self.ws_path)
        dest = self.destination or DESTINATION.get(environment)
        why = check_destination(dest)
        if why:
            raise ConfigError(f"{type(self).__name__}.destination {dest!r}: {why}.")
        self.device_id: str | None = None
        if "{device_id}" in dest:
            ids = self.device_ids
            count = self.device_count
            if count is None:
                count = DEVICE_COUNT.get(environment)
            if ids:
                self.device_id = ids[(n - 1) % len(ids)]
            else:
                self.device_id = self.make_device_id((n - 1) % count + 1 if count else n)
            dest = dest.replace("{device_id}", self.device_id)
        elif dest.startswith(_DEVICE_PREFIX):
            self.device_id = dest[len(_DEVICE_PREFIX) :]
        self.topic: str = dest
        self.subscribe_name: str = subscribe_name(dest)
        token = self.token if self.token is not None else settings(environment).gateway_token
        sources = self.source_addresses
        self.client: StompClient | StompPyClient = self.client_cls(
            self.endpoint.host,
            self.endpoint.port,
            self.endpoint.path,
            on_message=self._on_message,
            token=token,
            heartbeats=self.heartbeats,
            tls=self.endpoint.tls,
            connect_timeout=self.connect_timeout,
            receipt_timeout=self.receipt_timeout,
            pump=get_pump(environment),
            source_address=sources[(n - 1) % len(sources)] if sources else None,
        )
        # in the receiver greenlet, when the RECEIPT arrives: no MESSAGE behind it is missed
        self.client.on_subscribed = self.subscribed

    # --- PushSubscriber -------------------------------------------------------------
    def has_session(self) -> bool:
        return self.client.session

    def lost_event(self) -> Event:
        return self.client.lost

    def lost_error(self) -> Exception:
        return StompConnectionLost(self.client.last_error or "connection closed")

    def watched_devices(self) -> list[str] | None:
        return [self.device_id] if self.device_id is not None else None

    def open_session(self, since: str | None) -> bool:
        """CONNECT then SUBSCRIBE (``since`` the last stream id), each reported."""
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
            ms = client.subscribe(self.topic, since=since)
        except StompError as exc:
            fire(env, REQUEST_TYPE, self.subscribe_name, (time.perf_counter() - start) * 1e3, exc)
            client.close()
            return False
        fire(env, REQUEST_TYPE, self.subscribe_name, ms)
        return True

    def close_session(self) -> None:
        self.client.close()  # DISCONNECT when still connected, then the socket

    def resume_point(self) -> str | None:
        """The ``stream-id`` of the last MESSAGE (the client keeps it across connections)."""
        return self.client.last_stream_id

    def _on_message(self, body: bytes, recv_ns: int) -> None:
        sub = self.sub
        if sub is not None:
            sub.received(body, recv_ns)


OPTIONS.register()
