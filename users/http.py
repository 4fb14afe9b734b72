"""``HttpDevice``: one Locust user = one IoT device posting its coordinates over HTTP.

The same device as :class:`users.MqttDevice` — the same message (the original
coordinates or ``--payload-template``, plus the trace envelope with
``src="http"``), the same ``--device-interval`` on the same open-model timetable
(the k-th message is due at ``start + k * interval``, that intended time is the
envelope's ``t0``, lag behind it goes to the ledger) — sent as the body of
``POST /api/ingest/{device_id}`` to the gateway (``--gateway-url``; Locust's
``--host`` wins) instead of a PUBLISH to the broker::

    from users import HttpDevice

    class Poster(HttpDevice):
        interval = 0.05           # 20 msg/s per device

A Locust ``FastHttpUser`` with one keep-alive connection per device. HTTP/1.1
has one request in flight per connection, so a device whose answer takes longer
than its interval falls behind its timetable (schedule lag, then end-to-end
latency); an MQTT device keeps up to ``max_inflight`` publishes in flight.

Locust entry: ``POST /api/ingest/{id}`` (``request_type`` is the HTTP method, as
Locust's HTTP users report it), timed from the request to the gateway's answer,
which comes once Kafka has the message (202). Any other status is a failure
whose message carries the gateway's reason (``HTTP 422: device_mismatch: …``).

Bytes on the wire are counted on the socket (``telemetry.wire``, protocol
``"HTTP"``): the request line, headers and body sent, the status line, headers
and body received.
"""

from __future__ import annotations

import random
import time
from functools import partial
from typing import TYPE_CHECKING, Any

import gevent
from gevent import socket as gsocket
from geventhttpclient.client import HTTPClient, HTTPClientPool
from locust import constant, task
from locust.contrib.fasthttp import FastHttpUser

import telemetry
from telemetry import envelope
from telemetry.wire import WireCount, wire_count
from users._config import settings
from users._devices import DeviceIds
from users._mqtt_payload import Template, Trajectory, load_template

if TYPE_CHECKING:
    from locust.env import Environment

__all__ = ["HttpDevice", "INGEST_NAME", "REQUEST_TYPE", "SRC", "WIRE_PROTOCOL"]

#: ``request_type`` of the ingest entry (Locust's HTTP users report the method).
REQUEST_TYPE = "POST"
#: The stats name of every device's ingest request.
INGEST_NAME = "/api/ingest/{id}"
#: The envelope's entry protocol of these messages (paths ``http→stomp``, ``http→ws``).
SRC = "http"
#: The ``telemetry.wire`` protocol these devices' bytes are counted under.
WIRE_PROTOCOL = "HTTP"

_HEADERS = {"Content-Type": "application/json"}


class _CountingSocket(gsocket.socket):
    """A gevent socket that adds what it sends and receives to a :class:`WireCount`.

    ``sendall`` is gevent's loop over ``send``, so ``send`` alone counts both.
    """

    wire: WireCount
    _open = False

    def close(self) -> None:
        if self._open:
            self._open = False
            self.wire.closed += 1
        super().close()

    def send(self, *args: Any, **kwargs: Any) -> int:
        n: int = super().send(*args, **kwargs)
        self.wire.sent += n
        return n

    def recv(self, *args: Any, **kwargs: Any) -> bytes:
        data: bytes = super().recv(*args, **kwargs)
        self.wire.received += len(data)
        return data

    def recv_into(self, *args: Any, **kwargs: Any) -> int:
        n: int = super().recv_into(*args, **kwargs)
        self.wire.received += n
        return n


def _counting_socket(wire: WireCount, family: int, socktype: int, protocol: int) -> Any:
    sock = _CountingSocket(family, socktype, protocol)
    sock.wire = wire
    sock.setsockopt(gsocket.IPPROTO_TCP, gsocket.TCP_NODELAY, 1)
    return sock


def _connected(sock: Any) -> None:
    """``ConnectionPool.after_connect``: the connection is up (counted until closed)."""
    if isinstance(sock, _CountingSocket) and not sock._open:
        sock._open = True
        sock.wire.opened += 1


class _CountingPool(HTTPClientPool):
    """geventhttpclient's client pool whose connections count their bytes.

    ``ConnectionPool._create_tcp_socket`` ("tcp socket factory") and ``after_connect``
    are geventhttpclient's hooks for this; each new client's pool gets counting ones.
    """

    def __init__(self, wire: WireCount, **kw: Any) -> None:
        super().__init__(**kw)
        self.wire = wire

    def get_client(self, url: Any) -> HTTPClient:
        known = len(self.clients)
        client = super().get_client(url)
        if len(self.clients) != known:
            pool = client._connection_pool
            pool._create_tcp_socket = partial(_counting_socket, self.wire)  # type: ignore[method-assign]
            pool.after_connect = _connected  # type: ignore[method-assign]
        return client


class HttpDevice(DeviceIds, FastHttpUser):
    """One device posting to ``POST /api/ingest/{device_id}`` on an open-model timetable.

    Every ``None`` attribute takes its value from the matching option.
    """

    abstract = True

    #: Seconds between messages. None = ``--device-interval``.
    interval: float | None = None
    #: Path of a JSON payload template; "" = the original coordinates. None = ``--payload-template``.
    payload_template: str | None = None
    #: The ingest path; ``{device_id}`` is filled in.
    ingest_path: str = "/api/ingest/{device_id}"
    device_id_prefix: str = "http-"
    numbering = "http"
    #: One connection per device, as one MQTT connection per MqttDevice.
    concurrency = 1
    #: Seconds a request may take; past it, the message is a failure (and lost).
    network_timeout = 30.0
    connection_timeout = 10.0
    #: Bearer token of every request (ingest is a write: the gateway wants one); "" = none.
    #: None = ``--token`` (or one minted from ``--jwt-secret``), as RestCommander.
    token: str | None = None

    wait_time = constant(0)

    def __init__(self, environment: Environment) -> None:
        s = settings(environment)
        if self.host is None:  # neither the class nor --host: the gateway URL option
            self.host = s.gateway_url
        token = self.token if self.token is not None else s.gateway_token
        self.headers = {**_HEADERS, "Authorization": f"Bearer {token}"} if token else _HEADERS
        super().__init__(environment)
        self.wire = wire_count(environment, WIRE_PROTOCOL)
        agent = self.client.client
        agent.clientpool = _CountingPool(self.wire, **agent.clientpool.client_args)
        self.device_id: str = self.make_device_id(self.next_device_number())
        self.path = self.ingest_path.format(device_id=self.device_id)
        interval = s.device_interval if self.interval is None else float(self.interval)
        self.interval_ns = int(interval * 1e9)
        template_path = (
            s.payload_template if self.payload_template is None else self.payload_template
        )
        self.template: Template | None = load_template(template_path) if template_path else None
        self.trajectory = Trajectory(t_start=time.time())
        self.seq = 0
        self._due = 0
        self._ledger: telemetry.Ledger | None = None
        self._run_id = ""
        self._posting = False

    # --- overridable hooks -------------------------------------------------------
    def payload(self, seq: int, t0: int, tp: int) -> bytes:
        """The body of message ``seq``: template or coordinates, plus the envelope."""
        x, y = self.trajectory.at(t0 / 1e9)
        run = self._run_id
        if self.template is None:
            return envelope.build(self.device_id, x, y, run=run, seq=seq, t0=t0, tp=tp, src=SRC)
        fields = self.template.render(self.device_id, x, y, tp / 1e9, seq)
        return envelope.wrap(fields, run=run, seq=seq, t0=t0, tp=tp, src=SRC)

    # --- Locust lifecycle -----------------------------------------------------------
    def on_start(self) -> None:
        self._ledger = telemetry.get_ledger(self.environment)
        self._run_id = self._ledger.run_id
        # a random phase spreads a fleet over the interval, as real devices are
        self._due = time.time_ns() + int(random.random() * self.interval_ns)

    def on_stop(self) -> None:
        self.client.client.clientpool.close()

    def stop(self, force: bool = False) -> bool:
        """Stop; a request on the wire is finished first (its message may already be in
        Kafka), as MqttDevice waits for its PUBACKs: killed mid-request, the ledger would
        hold a message as published that may or may not have arrived."""
        return bool(super().stop(force=force and not self._posting))

    @task
    def publish_due(self) -> None:
        """Sleep until the next message is due, then post it and wait for the answer."""
        ledger = self._ledger
        if ledger is None or ledger.draining or not self.interval_ns:
            gevent.sleep(1.0)  # publishers stay quiet while the run drains
            return
        now = time.time_ns()
        if self._due > now:
            gevent.sleep((self._due - now) / 1e9)
            if ledger.draining:
                return
        seq = self.seq + 1
        due = self._due
        tp = time.time_ns()
        body = self.payload(seq, due, tp)
        self.seq = seq
        self._due = due + self.interval_ns
        ledger.published(self.device_id, seq, due, tp, src=SRC)
        self._posting = True
        try:
            self.post(body)
        finally:
            self._posting = False

    def post(self, body: bytes) -> bool:
        """``POST`` one message; True when the gateway answered 202 (Kafka has it)."""
        # bytes go out as they are (Locust's annotation says str | dict)
        data: Any = body
        with self.client.post(
            self.path, data=data, headers=self.headers, name=INGEST_NAME, catch_response=True
        ) as resp:
            if resp.status_code == 202:
                return True
            reason = (resp.text or "")[:200] if resp.status_code else str(resp.error)
            resp.failure(f"HTTP {resp.status_code}: {reason}")
            return False
