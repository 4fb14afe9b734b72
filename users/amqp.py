"""AMQP 0-9-1 (RabbitMQ) users: ``AmqpDevice`` publishes, ``AmqpSubscriber`` consumes.

The same device messages as ``MqttDevice`` (``telemetry.envelope``, ``src="amqp"``),
on the same open-model timetable (``users._mqtt_schedule``: the k-th message is
due at ``start + k * interval``, its envelope's ``t0``), through a topic
exchange instead of MQTT topics::

    from users import AmqpDevice, AmqpSubscriber

    class Device(AmqpDevice):        # exchange "sensors", key sensors.<id>.coordinates
        pass

    class Watcher(AmqpSubscriber):   # its own queue, bound with sensors.*.coordinates
        pass

MQTT concept -> AMQP 0-9-1 here:

==============================  =================================================
MQTT                            AMQP 0-9-1
==============================  =================================================
topic ``sensors/{id}/coordinates``  topic exchange ``sensors``, routing key ``sensors.{id}.coordinates``
subscription ``sensors/+/…``    a queue bound with ``sensors.*.coordinates``
QoS 1 publish + PUBACK          persistent message + publisher confirm (``Basic.Ack``)
QoS 0                           ``--amqp-confirms 0``: no confirm, transient message
persistent session (clean=0)    a durable, named queue that outlives the connection
subscriber PUBACK               consumer ``Basic.Ack`` (once per read, ``multiple``)
==============================  =================================================

Locust entries (``request_type="AMQP"``):

- ``publish:confirm:sensors.*.coordinates`` — publish to ``Basic.Ack``, fired
  from the confirm (a ``Basic.Nack`` is a failure, :class:`AmqpNacked`).
- ``publish:noconfirm:sensors.*.coordinates`` — counted, ``response_time=None``
  (no acknowledgement to time; its latency is end to end, in the ledger).
- ``connect`` (handshake + declarations), ``connection lost``.

Delivery guarantees as the MQTT users have them: with confirms, a publish not
confirmed when the connection drops is published again after the reconnect
(at least once: a subscriber may then see a duplicate, which the ledger
counts); the subscriber's queue is durable, so what arrives while it is away
(or while RabbitMQ restarts) waits for it.

Engine: ``users._amqp_client`` (pika's codec on a gevent socket, one reader
greenlet per connection). Why not pika's ``BlockingConnection``, with figures:
``python -m bench amqp-engines``.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import gevent
from locust import User, constant, task
from pika import spec

import telemetry
from telemetry import envelope
from telemetry.options import Option, OptionGroup
from users._amqp_client import AmqpClosed, AmqpConnection
from users._backoff import Backoff
from users._config import _split, settings, stack_urls
from users._devices import DeviceIds
from users._mqtt_payload import Trajectory
from users._mqtt_schedule import get_schedule
from users._per_env import PerEnvironment
from users._subscriber import PushSubscriber
from users._ws_common import fire
from users.exceptions import (
    AmqpConnectFailed,
    AmqpConnectionLost,
    AmqpError,
    AmqpNacked,
    ConfigError,
)

if TYPE_CHECKING:
    from gevent.event import Event
    from locust.env import Environment

__all__ = [
    "REQUEST_TYPE",
    "OPTIONS",
    "AmqpDevice",
    "AmqpSubscriber",
    "AmqpUrl",
    "WireMeter",
    "wire_meter",
    "parse_amqp_url",
    "AmqpError",
    "AmqpConnectFailed",
    "AmqpConnectionLost",
    "AmqpNacked",
]

REQUEST_TYPE = "AMQP"
#: The envelope's ``src`` of AMQP device messages: ledger paths ``amqp→…``.
SRC = "amqp"
DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"


@dataclass(frozen=True, slots=True)
class AmqpUrl:
    """``amqp://user:pw@host:port/vhost`` parsed (vhost ``%2F`` is ``/``)."""

    host: str
    port: int
    username: str
    password: str
    vhost: str

    def __str__(self) -> str:  # never print the password
        return f"amqp://{self.username}:***@{self.host}:{self.port}/{self.vhost}"


def parse_amqp_url(url: str, option: str = "--amqp-url") -> AmqpUrl:
    """Parse ``amqp://[user[:pw]@]host[:port][/vhost]`` (port 5672, guest/guest, vhost ``/``).

    >>> parse_amqp_url("amqp://u:p@127.0.0.1:5673/%2F")
    AmqpUrl(host='127.0.0.1', port=5673, username='u', password='p', vhost='/')
    """
    example = "e.g. amqp://user:pw@127.0.0.1:5672/%2F"
    parts = _split(url, option, example)
    if parts.scheme != "amqp" or not parts.hostname:
        raise ConfigError(f"{option} {url!r}: expected amqp://user:pw@host:port/vhost, {example}.")
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    return AmqpUrl(
        host=parts.hostname,
        port=parts.port or 5672,
        username=unquote(parts.username) if parts.username else "guest",
        password=unquote(parts.password) if parts.password is not None else "guest",
        vhost=unquote(path) if path else "/",
    )


AMQP_URL = Option(
    "--amqp-url",
    str,
    DEFAULT_URL,
    "PIPESWARM_AMQP_URL",
    "AMQP 0-9-1 broker (RabbitMQ) of AmqpDevice/AmqpSubscriber, amqp://user:pw@host:port/vhost",
    default_from=lambda: stack_urls().get("amqp"),
    doc_default="amqp://guest:guest@127.0.0.1:5672/%2F",
    check=lambda u: None if u.startswith("amqp://") else "must start with amqp://",
    secret=True,
    error=ConfigError,
)
CONFIRMS = Option(
    "--amqp-confirms",
    int,
    1,
    "PIPESWARM_AMQP_CONFIRMS",
    "AmqpDevice: 1 = persistent messages with publisher confirms (the QoS 1 analogue), "
    "0 = transient, unconfirmed (QoS 0)",
    choices=(0, 1),
    error=ConfigError,
)
OPTIONS = OptionGroup("pipeswarm AMQP users", AMQP_URL, CONFIRMS)


@dataclass(slots=True)
class WireMeter:
    """Bytes on the wire of one process's AMQP users (every frame, handshakes included),
    and the messages they carried: what ``mqtt_vs_amqp`` divides."""

    publisher: list[int] = field(default_factory=lambda: [0, 0])  # [out, in]
    subscriber: list[int] = field(default_factory=lambda: [0, 0])
    published: int = 0
    delivered: int = 0


#: The :class:`WireMeter` of an ``Environment``.
wire_meter: PerEnvironment[WireMeter] = PerEnvironment(WireMeter)


def _url(environment: Environment, given: str | None, owner: str) -> AmqpUrl:
    if given:
        return parse_amqp_url(given, f"{owner}.url")
    return parse_amqp_url(AMQP_URL.get(environment))


def _connection(url: AmqpUrl, timeout: float, **kwargs: Any) -> AmqpConnection:
    return AmqpConnection(
        url.host, url.port, url.username, url.password, url.vhost, connect_timeout=timeout, **kwargs
    )


def _exchange(name: str) -> spec.Exchange.Declare:
    return spec.Exchange.Declare(exchange=name, type="topic", durable=True)


class AmqpDevice(DeviceIds, User):
    """One device: its own AMQP connection and channel, on the process timetable.

    Every ``None`` attribute takes its value from the matching option.
    """

    abstract = True

    #: ``amqp://user:pw@host:port/vhost``; None = ``--amqp-url``.
    url: str | None = None
    #: Seconds between publishes. None = ``--device-interval``.
    interval: float | None = None
    #: Publisher confirms + persistent messages (QoS 1 analogue). None = ``--amqp-confirms``.
    confirms: bool | None = None
    exchange: str = "sensors"
    routing_key: str = "sensors.{device_id}.coordinates"
    #: Unconfirmed publishes per device; a full window delays the timetable (shows as lag).
    max_inflight: int = 20
    #: Most messages one device sends in one go when catching up (one write).
    max_batch: int = 32
    connect_timeout: float = 10.0
    reconnect_min: float = 0.2
    reconnect_max: float = 10.0
    #: Seconds ``on_stop`` waits for outstanding confirms.
    drain_timeout: float = 2.0
    numbering = "amqp"
    device_id_prefix = "amqp-"

    # the task supervises the connection; the timetable publishes
    wait_time = constant(0)

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        s = settings(environment)
        self.device_id: str = self.make_device_id(self.next_device_number())
        interval = s.device_interval if self.interval is None else float(self.interval)
        self.interval_ns: int = int(interval * 1e9)
        confirms = CONFIRMS.get(environment) if self.confirms is None else self.confirms
        self.confirming: bool = bool(confirms)
        self.key: str = self.routing_key.format(device_id=self.device_id)
        template = self.routing_key.replace("{device_id}", "*")
        self.publish_name = f"publish:{'confirm' if self.confirming else 'noconfirm'}:{template}"
        # delivery_mode 2 = persistent: written to disk before the confirm
        self.properties = spec.BasicProperties(delivery_mode=2 if self.confirming else 1)
        self.trajectory = Trajectory(t_start=time.time())
        self.seq = 0
        self.confirmed = 0
        self._due = 0
        self._sched_token = 0
        self._publishing = False
        self._started = False
        self._stopping = False
        self._want_window = False
        # delivery tag -> [perf_counter at first send, body]
        self._unconfirmed: dict[int, list[Any]] = {}
        self._ledger: telemetry.Ledger | None = None
        self._run_id = ""
        self.backoff = Backoff(self.reconnect_min, self.reconnect_max)
        self.meter = wire_meter(environment)
        self.conn = _connection(
            _url(environment, self.url, type(self).__name__),
            self.connect_timeout,
            on_ack=self._on_ack,
            on_lost=self._on_lost,
            client_name=f"pipeswarm {self.device_id}",
            meter=self.meter.publisher,
        )

    # --- Locust lifecycle -------------------------------------------------------------
    def on_start(self) -> None:
        self._ledger = telemetry.get_ledger(self.environment)
        self._run_id = self._ledger.run_id
        self._publishing = self.interval_ns > 0
        self._open()

    def on_stop(self) -> None:
        self._stopping = True
        self._publishing = False
        get_schedule(self.environment).remove(self)
        deadline = time.monotonic() + self.drain_timeout
        while self._unconfirmed and self.conn.open and time.monotonic() < deadline:
            gevent.sleep(0.01)
        self.conn.close()

    @task
    def keep_connected(self) -> None:
        """Wait while connected; when the connection ends, report it, back off, reconnect."""
        if self.conn.open:
            self.conn.lost.wait()
            if self._stopping:
                return
            fire(
                self.environment,
                REQUEST_TYPE,
                "connection lost",
                None,
                AmqpConnectionLost(self.conn.lost_reason),
            )
        gevent.sleep(self.backoff.next())
        if not self._stopping:
            self._open()

    def _open(self) -> bool:
        setup: list[Any] = [_exchange(self.exchange)]
        if self.confirming:
            setup.append(spec.Confirm.Select())
        start = time.perf_counter()
        try:
            self.conn.connect(setup)
        except (OSError, AmqpClosed) as err:
            ms = (time.perf_counter() - start) * 1e3
            fire(self.environment, REQUEST_TYPE, "connect", ms, AmqpConnectFailed(str(err)))
            return False
        fire(self.environment, REQUEST_TYPE, "connect", (time.perf_counter() - start) * 1e3)
        self.backoff.reset()
        self._resend()
        if self._publishing:
            if not self._started:
                self._started = True
                # a random phase spreads a fleet over the interval, as real devices are
                self._due = time.time_ns() + int(random.random() * self.interval_ns)
            get_schedule(self.environment).add(self, self._due)
        return True

    def _resend(self) -> None:
        """Publish again what was not confirmed when the last connection ended.

        The broker numbers a new channel's publishes from 1: the old tags mean
        nothing now. A message that did reach the queue before the loss arrives
        twice (at least once, as MQTT QoS 1 without a session).
        """
        old = list(self._unconfirmed.values())
        self._unconfirmed.clear()
        try:
            for entry in old:
                tag = self.conn.publish(
                    self.exchange, self.key, entry[1], self.properties, flush=False
                )
                self._unconfirmed[tag] = entry
            self.conn.flush()
        except AmqpClosed:
            pass  # lost again: the next reconnect tries again

    # --- the timetable (users._mqtt_schedule) ------------------------------------------
    def publish_due(self, due: int, now: int) -> int:
        """Publish what is due at ``due`` (and any backlog, up to ``max_batch``); the next due
        time, or 0 to leave the timetable (disconnected, window full, draining)."""
        ledger = self._ledger
        if ledger is None or ledger.draining or not self._publishing:
            self._publishing = False
            return 0
        conn = self.conn
        if not conn.open:
            return 0
        unconfirmed = self._unconfirmed
        confirming = self.confirming
        interval = self.interval_ns
        sent = 0
        try:
            while not confirming or len(unconfirmed) < self.max_inflight:
                seq = self.seq + 1
                tp = time.time_ns()
                x, y = self.trajectory.at(due / 1e9)
                body = envelope.build(
                    self.device_id, x, y, run=self._run_id, seq=seq, t0=due, tp=tp, src=SRC
                )
                tag = conn.publish(self.exchange, self.key, body, self.properties, flush=False)
                self.seq = seq
                self.meter.published += 1
                ledger.published(self.device_id, seq, due, tp, src=SRC)
                if confirming:
                    unconfirmed[tag] = [time.perf_counter(), body]
                else:
                    fire(self.environment, REQUEST_TYPE, self.publish_name, None, length=len(body))
                due += interval
                sent += 1
                if due > tp or sent >= self.max_batch:
                    conn.flush()
                    self._due = due
                    return due
            conn.flush()
        except AmqpClosed:
            self._due = due
            return 0
        self._due = due
        self._want_window = True
        return 0

    # --- connection callbacks (reader greenlet) ---------------------------------------------
    def _on_ack(self, tag: int, multiple: bool, nack: bool) -> None:
        unconfirmed = self._unconfirmed
        tags = [t for t in unconfirmed if t <= tag] if multiple else [tag]
        now = time.perf_counter()
        env = self.environment
        exc = AmqpNacked(f"Basic.Nack for delivery tag {tag}") if nack else None
        for t in tags:
            entry = unconfirmed.pop(t, None)
            if entry is None:
                continue
            self.confirmed += 1
            fire(env, REQUEST_TYPE, self.publish_name, (now - entry[0]) * 1e3, exc, len(entry[1]))
        if self._want_window and len(unconfirmed) < self.max_inflight and self._publishing:
            self._want_window = False
            get_schedule(env).add(self, self._due)

    def _on_lost(self, reason: str) -> None:
        get_schedule(self.environment).remove(self)


class AmqpSubscriber(DeviceIds, PushSubscriber):
    """One connection consuming its own durable queue, bound to the devices' exchange.

    The queue is named after the run and the subscriber (``pipeswarm.<run>.<n>``),
    declared durable so that it (and what it holds) survives a RabbitMQ restart
    and a reconnect; it is deleted when the user stops, and expires by itself
    (``x-expires``) if the process never got that far.
    """

    abstract = True

    #: None = ``--amqp-url``.
    url: str | None = None
    exchange: str = "sensors"
    #: Which device messages the queue gets (``#``/``*`` wildcards, as topic exchanges have).
    binding_key: str = "sensors.*.coordinates"
    #: Unacknowledged deliveries the broker may push ahead (``Basic.Qos``).
    prefetch: int = 1000
    #: Milliseconds an unused queue lives on (a process that died before deleting it).
    queue_expires_ms: int = 600_000
    connect_timeout: float = 10.0
    numbering = "amqp-sub"
    device_id_prefix = "amqp-sub-"
    resume = False  # the durable queue keeps what arrived meanwhile: nothing to ask for

    request_type = REQUEST_TYPE
    ledger_kind = "amqp"
    ledger_srcs = (SRC,)  # straight from the broker: only what AMQP devices publish

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self.number = self.next_device_number()
        self.queue = ""
        self.meter = wire_meter(environment)
        self.conn = _connection(
            _url(environment, self.url, type(self).__name__),
            self.connect_timeout,
            on_deliver=self._on_deliver,
            ack_deliveries=True,
            client_name="pipeswarm subscriber",
            meter=self.meter.subscriber,
        )

    # --- PushSubscriber -----------------------------------------------------------------
    def has_session(self) -> bool:
        return self.conn.open

    def lost_event(self) -> Event:
        return self.conn.lost

    def lost_error(self) -> Exception:
        return AmqpConnectionLost(self.conn.lost_reason or "connection closed")

    def open_session(self, since: str | None) -> bool:
        if not self.queue and self._ledger is not None:
            self.queue = f"pipeswarm.{self._ledger.run_id}.{self.make_device_id(self.number)}"
        setup = [
            _exchange(self.exchange),
            spec.Queue.Declare(
                queue=self.queue, durable=True, arguments={"x-expires": self.queue_expires_ms}
            ),
            spec.Queue.Bind(queue=self.queue, exchange=self.exchange, routing_key=self.binding_key),
            spec.Basic.Qos(prefetch_count=self.prefetch),
            # the consumer tag is in every Basic.Deliver: a short one (not the queue's name)
            spec.Basic.Consume(queue=self.queue, consumer_tag=f"c{self.number}"),
        ]
        start = time.perf_counter()
        try:
            self.conn.connect(setup)
        except (OSError, AmqpClosed) as err:
            ms = (time.perf_counter() - start) * 1e3
            fire(self.environment, REQUEST_TYPE, "connect", ms, AmqpConnectFailed(str(err)))
            return False
        fire(self.environment, REQUEST_TYPE, "connect", (time.perf_counter() - start) * 1e3)
        self.subscribed()  # the reader has not run yet: no delivery before this
        return True

    def close_session(self) -> None:
        if self._stopping and self.queue:
            self.conn.close([spec.Queue.Delete(queue=self.queue, nowait=True)])
        else:
            self.conn.close()

    def _on_deliver(
        self, routing_key: str, body: bytes, tag: int, redelivered: bool, recv_ns: int
    ) -> None:
        self.meter.delivered += 1
        sub = self.sub
        if sub is not None:
            sub.received(body, recv_ns)


OPTIONS.register()
