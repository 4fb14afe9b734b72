"""The lean MQTT client behind ``MqttDevice``: the protocol over ``_mqtt_transport``.

Why hand-written instead of paho (``bench/README.md``, ``python -m bench
mqtt-engines``): driven the same way from gevent's hub, paho-mqtt does 37k QoS 0
/ 22k QoS 1 msg/s per core and costs 7.1 KB per idle connection; this client
does 125k / 61k at 1.7 KB (a Locust user adds 9.7 KB either way, against a
20 KB per device budget). Everything paho would give a device is here: MQTT
3.1.1 and 5, QoS 0/1/2 both ways, user name and password, TLS, keepalive,
clean or persistent sessions with in-flight resend, last will, reconnect with
backoff. Not here: MQTT over WebSockets, v5 topic aliases and AUTH exchanges.

Locust events (``request_type="MQTT"``; fired from the pump greenlet, through
``environment.events.request``):

=====================  ===================================================  ==========
name                   response_time                                        exception
=====================  ===================================================  ==========
``connect``            TCP connect start -> CONNACK (TLS included), ms      refused / timed out / lost
``reconnect``          connection lost -> CONNACK again (the outage), ms
``connection lost``    ``None`` (an event, not a duration)                  why it was lost
``subscribe:…``        SUBSCRIBE -> SUBACK, ms                              SUBACK refused
``publish:1:…``        PUBLISH -> PUBACK, ms (resends included)             v5 reason >= 0x80
``publish:2:…``        PUBLISH -> PUBCOMP, ms                               v5 reason >= 0x80
``publish:0:…``        ``None``: QoS 0 has no acknowledgement to time       -
=====================  ===================================================  ==========

``None`` is Locust's own "no response time" (``StatsEntry.num_none_requests``):
the publish is counted (requests, RPS) but left out of every percentile, so a
QoS 0 row never shows a made-up latency.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Protocol

from gevent.event import Event

from telemetry.wire import wire_count
from users._mqtt_codec import (
    CONNACK,
    DISCONNECT,
    DISCONNECT_PACKET,
    MAXIMUM_QOS,
    MQTT5,
    PINGREQ_PACKET,
    PINGRESP,
    PUBACK,
    PUBCOMP,
    PUBLISH,
    PUBREC,
    PUBREL,
    REASON_STRING,
    RECEIVE_MAXIMUM,
    SUBACK,
    ProtocolError,
    Will,
    ack_packet,
    connect_packet,
    parse_properties,
    publish_packet,
    read_varint,
    reason_text,
    subscribe_packet,
    topic_field,
)
from users._mqtt_loop import get_pump
from users._mqtt_transport import (
    CLOSE_WAIT_S,
    CLOSED,
    CLOSING,
    CONNECTED,
    CONNECTING,
    HANDSHAKE,
    IDLE,
    WAIT_CONNACK,
    ClientConfig,
    Transport,
)
from users.exceptions import ConnectFailed, ConnectionLost, PublishRefused, SubscribeRefused

if TYPE_CHECKING:
    from locust.env import Environment

__all__ = ["REQUEST_TYPE", "ClientConfig", "ClientOwner", "DeviceClient"]

log = logging.getLogger(__name__)

REQUEST_TYPE = "MQTT"


class ClientOwner(Protocol):
    """What a client tells its owner; all called in the pump greenlet."""

    def mqtt_connected(self, session_present: bool) -> None:
        """CONNACK accepted (first connect or a reconnect)."""

    def mqtt_disconnected(self, reason: str) -> None:
        """An established connection was lost; the client reconnects by itself."""

    def mqtt_window(self) -> None:
        """Room again for publishes after :meth:`DeviceClient.can_publish` said no."""

    def mqtt_message(self, topic: str, payload: bytes, recv_ns: int) -> None:
        """An inbound PUBLISH (already acknowledged as its QoS requires)."""


class _NoOwner:
    def mqtt_connected(self, session_present: bool) -> None:
        pass

    def mqtt_disconnected(self, reason: str) -> None:
        pass

    def mqtt_window(self) -> None:
        pass

    def mqtt_message(self, topic: str, payload: bytes, recv_ns: int) -> None:
        pass


_NO_OWNER = _NoOwner()


class DeviceClient(Transport):
    """One MQTT connection, driven by the process :class:`~users._mqtt_loop.Pump`.

    Not thread-safe, and needs no threads: call it from greenlets of the same hub.

        client = DeviceClient(env, cfg, "robot-0001")
        client.subscribe("orin/robot-0001/command", 1, name="subscribe:1:orin/+/command")
        client.connect()                     # returns at once; reconnects until close()
        client.wait_connected(5)
        client.publish("sensors/robot-0001/coordinates", b"{}", 1,
                       name="publish:1:sensors/+/coordinates")
    """

    __slots__ = (
        "environment",
        "client_id",
        "will",
        "owner",
        "version",
        "window",
        "connects",
        "reconnects",
        "losses",
        "published",
        "acked",
        "last_error",
        "_fire",
        "_inflight",
        "_released",
        "_inbound",
        "_next_mid",
        "_subs",
        "_sub_wait",
        "_topic",
        "_topic_enc",
        "_t_lost",
        "_ping_sent",
        "_want_window",
        "_connected_ev",
        "_drained_ev",
        "_closed_ev",
        "_context",
        "_rbuf",
    )

    def __init__(
        self,
        environment: Environment,
        cfg: ClientConfig,
        client_id: str,
        *,
        will: Will | None = None,
        source_address: str | None = None,
        owner: ClientOwner | None = None,
    ) -> None:
        super().__init__(
            cfg, get_pump(environment), source_address, wire_count(environment, REQUEST_TYPE)
        )
        self.environment = environment
        self.client_id = client_id
        self.will = will
        self.owner: ClientOwner = owner or _NO_OWNER
        self.version = cfg.version
        self.window = cfg.max_inflight
        self.connects = 0
        self.reconnects = 0
        self.losses = 0
        self.published = 0
        self.acked = 0
        self.last_error = ""
        self._fire = environment.events.request.fire
        self._rbuf = b""
        # mid -> [start perf_counter, packet, payload length, event name]
        self._inflight: dict[int, list[Any]] = {}
        self._released: set[int] | None = None  # QoS 2 mids past PUBREC
        self._inbound: set[int] | None = None  # inbound QoS 2 mids awaiting PUBREL
        self._next_mid = 0
        self._subs: list[tuple[str, int, str]] = []
        self._sub_wait: dict[int, tuple[float, str, str]] = {}
        self._topic = ""
        self._topic_enc = b""
        self._t_lost = 0.0
        self._ping_sent = 0.0
        self._want_window = False
        self._connected_ev: Event | None = None
        self._drained_ev: Event | None = None
        self._closed_ev: Event | None = None
        self._context: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"<DeviceClient {self.client_id} state={self.state}>"

    # --- public API -------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self.state == CONNECTED

    @property
    def inflight(self) -> int:
        """QoS 1/2 publishes sent and not yet acknowledged."""
        return len(self._inflight)

    @property
    def subscribing(self) -> bool:
        """A SUBSCRIBE was sent and its SUBACK has not arrived yet."""
        return bool(self._sub_wait)

    def connect(self) -> None:
        """Start connecting (returns at once); the client reconnects on loss until :meth:`close`.

        The host name is resolved here, in the caller's greenlet (once per
        process); reconnects reuse the address.
        """
        if self.state != IDLE:
            return
        self._pump.register(self)
        self._start_attempt()

    def wait_connected(self, timeout: float | None = None) -> bool:
        """Block this greenlet until CONNACK (True) or ``timeout`` (False)."""
        if self.state == CONNECTED:
            return True
        if self._connected_ev is None:
            self._connected_ev = Event()
        return bool(self._connected_ev.wait(timeout))

    def wait_drained(self, timeout: float | None = None) -> bool:
        """Block until every QoS 1/2 publish is acknowledged (True) or ``timeout``."""
        if not self._inflight or self.state in (CLOSING, CLOSED):
            return not self._inflight
        self._drained_ev = ev = Event()
        return bool(ev.wait(timeout))

    def can_publish(self, qos: int) -> bool:
        """Connected, and room in the in-flight window (QoS 1/2) and the send buffer.

        When it answers False, the owner's ``mqtt_window()`` is called once there
        is room again (or ``mqtt_connected()`` once connected).
        """
        if (
            self.state == CONNECTED
            and (qos == 0 or len(self._inflight) < self.window)
            and not self.backlogged
        ):
            return True
        self._want_window = True
        return False

    def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int = 0,
        *,
        name: str | None = None,
        flush: bool = True,
    ) -> bool:
        """Send PUBLISH; False (nothing sent) when :meth:`can_publish` would say no.

        ``name`` is the Locust request name; keep it low-cardinality (a topic
        template such as ``publish:1:sensors/+/coordinates``). ``flush=False``
        lets a caller queue several messages and write them with one
        :meth:`flush` (one syscall).
        """
        if not self.can_publish(qos):
            return False
        if topic != self._topic:
            self._topic = topic
            self._topic_enc = topic_field(topic)
        if name is None:
            name = f"publish:{qos}:{topic}"
        if qos:
            mid = self._new_mid()
            packet = publish_packet(self._topic_enc, payload, qos, mid, self.version)
            self._inflight[mid] = [time.perf_counter(), packet, len(payload), name]
            self._out.append(packet)
        else:
            self._out.append(publish_packet(self._topic_enc, payload, 0, 0, self.version))
            self._fire(
                request_type=REQUEST_TYPE,
                name=name,
                response_time=None,
                response_length=len(payload),
                exception=None,
                context=self._ctx(),
            )
        self.published += 1
        if flush:
            self.flush()
        return True

    def subscribe(self, topic: str, qos: int = 1, *, name: str | None = None) -> None:
        """Subscribe now (if connected) and again after every reconnect without a session."""
        entry = (topic, qos, name or f"subscribe:{qos}:{topic}")
        self._subs.append(entry)
        if self.state == CONNECTED:
            self._send_subscribe(entry)
            self.flush()

    def close(self, wait: float = 0.0) -> None:
        """DISCONNECT (the will is discarded, MQTT §3.14.4) and stop reconnecting.

        The socket stays open until the broker closes its end (or
        ``CLOSE_WAIT_S``), so TIME_WAIT lands on the broker's side and not on
        this host's ephemeral ports, which the next run needs (with 38k sockets
        in TIME_WAIT, ``connect()`` took 0.7 ms instead of 0.36 ms here).
        ``wait`` > 0 blocks this greenlet up to that long for it, so a process
        that exits right after its users stopped still closes second.
        """
        if self.state in (CLOSING, CLOSED):
            return
        self._cancel_timer()
        for ev in (self._connected_ev, self._drained_ev):
            if ev is not None:
                ev.set()
        self._connected_ev = self._drained_ev = None
        if self.state == CONNECTED:
            self._out.append(DISCONNECT_PACKET)
            self.flush()
            if self._sock is not None:
                self.state = CLOSING
                self._m_attempt = time.monotonic()
                if wait > 0:
                    self._closed_ev = Event()
                    self._closed_ev.wait(wait)
                return
        self._closed()

    def _closed(self) -> None:
        self._teardown()
        self.state = CLOSED
        self._pump.unregister(self)
        if self._closed_ev is not None:
            self._closed_ev.set()
            self._closed_ev = None

    # --- events ---------------------------------------------------------------------------
    def _ctx(self) -> dict[str, Any]:
        ctx = self._context
        if ctx is None:
            ctx = self._context = {"client_id": self.client_id}
        return ctx

    def _event(
        self, name: str, ms: float | None, exc: Exception | None = None, length: int = 0
    ) -> None:
        self._fire(
            request_type=REQUEST_TYPE,
            name=name,
            response_time=ms,
            response_length=length,
            exception=exc,
            context=self._ctx(),
        )

    # --- connecting ---------------------------------------------------------------------
    def _transport_up(self) -> None:
        """TCP (and TLS) is up: CONNECT goes first."""
        cfg = self.cfg
        self.state = WAIT_CONNACK
        self._out.insert(
            0,
            connect_packet(
                self.client_id,
                version=cfg.version,
                keepalive=cfg.keepalive,
                clean=cfg.clean,
                username=cfg.username,
                password=cfg.password,
                will=self.will,
                session_expiry=0 if cfg.clean else cfg.session_expiry,
            ),
        )
        self.flush()

    def _on_connack(self, data: bytes, i: int) -> None:
        session_present = bool(data[i] & 1)
        code = data[i + 1]
        props: dict[int, object] = {}
        if self.version == MQTT5:
            props, _ = parse_properties(data, i + 2)
        now = time.perf_counter()
        ms = (now - self._t_attempt) * 1000
        if code:
            text = reason_text(code, self.version)
            if REASON_STRING in props:
                text += f" ({props[REASON_STRING]})"
            self._attempt_failed(f"broker refused the connection: {text}", ms=ms)
            return
        self.state = CONNECTED
        self._backoff.reset()
        self.connects += 1
        self._last_tx = time.monotonic()
        self._ping_sent = 0.0
        window = self.cfg.max_inflight
        receive_max = props.get(RECEIVE_MAXIMUM)
        if isinstance(receive_max, int) and receive_max:
            window = min(window, receive_max)
        self.window = window
        if props.get(MAXIMUM_QOS) == 0:
            log.warning("%s: the broker only supports QoS 0", self.client_id)
        self._event("connect", ms)
        if self._t_lost:
            self.reconnects += 1
            self._event("reconnect", (now - self._t_lost) * 1000)
            self._t_lost = 0.0
        self._resend(session_present)
        if not session_present or self.cfg.clean:
            for entry in self._subs:
                self._send_subscribe(entry)
        self.flush()
        if self._connected_ev is not None:
            self._connected_ev.set()
            self._connected_ev = None
        self._want_window = False
        self.owner.mqtt_connected(session_present)

    def _resend(self, session_present: bool) -> None:
        """Re-send unacknowledged QoS 1/2 publishes after a reconnect.

        With the session still there, MQTT 3.1.1 §4.4 requires the original
        packets (DUP set) and PUBREL for those past PUBREC; without one, the
        broker forgot them, so they go again as new publishes (a subscriber may
        then see a duplicate, which the ledger reports: that is at-least-once).
        """
        if not self._inflight:
            return
        released = self._released if session_present else None
        if not session_present:
            self._released = None
        for mid, entry in self._inflight.items():
            if released and mid in released:
                self._out.append(ack_packet(PUBREL, mid))
                continue
            packet = entry[1]
            if session_present:
                packet = bytes((packet[0] | 0x08,)) + packet[1:]
            self._out.append(packet)

    def _send_subscribe(self, entry: tuple[str, int, str]) -> None:
        topic, qos, name = entry
        mid = self._new_mid()
        self._sub_wait[mid] = (time.perf_counter(), name, topic)
        self._out.append(subscribe_packet(mid, topic, qos, self.version))

    def _new_mid(self) -> int:
        mid = self._next_mid
        inflight = self._inflight
        while True:
            mid = mid + 1 if mid < 0xFFFF else 1
            if mid not in inflight and mid not in self._sub_wait:
                self._next_mid = mid
                return mid

    # --- failure and reconnect ----------------------------------------------------------------
    def _attempt_failed(self, reason: str, ms: float | None = None) -> None:
        self.last_error = reason
        if ms is None:
            ms = (time.perf_counter() - self._t_attempt) * 1000
        self._teardown()
        self.state = IDLE
        self._event("connect", ms, ConnectFailed(reason))
        self._schedule_reconnect()

    def _lost(self, reason: str) -> None:
        if self.state in (IDLE, CLOSED):
            return
        if self.state == CLOSING:  # the broker closed after our DISCONNECT, as it should
            self._closed()
            return
        if self.state != CONNECTED:
            self._attempt_failed(reason)
            return
        self.last_error = reason
        self.losses += 1
        self._t_lost = time.perf_counter()
        self._teardown()
        self.state = IDLE
        self._event("connection lost", None, ConnectionLost(reason))
        self.owner.mqtt_disconnected(reason)
        self._schedule_reconnect()

    def _teardown(self) -> None:
        super()._teardown()
        self._rbuf = b""
        self._sub_wait.clear()
        self._inbound = None

    def _tick(self, now: float) -> None:
        """Once a second (the pump's ticker): keepalive and connect timeout."""
        state = self.state
        if state == CONNECTED:
            ka = self.cfg.keepalive
            if not ka:
                return
            if self._ping_sent and now - self._ping_sent > ka:
                self._lost(f"no PINGRESP within the {ka} s keepalive")
            elif not self._ping_sent and now - self._last_tx >= (ka - 1.5 if ka >= 4 else ka / 2):
                # the broker drops a client silent for 1.5 x keepalive (§3.1.2.10)
                self._ping_sent = now
                self._out.append(PINGREQ_PACKET)
                self.flush()
        elif state in (CONNECTING, HANDSHAKE, WAIT_CONNACK):
            if now - self._m_attempt > self.cfg.connect_timeout:
                self._attempt_failed(f"no CONNACK within {self.cfg.connect_timeout:g} s")
        elif state == CLOSING and now - self._m_attempt > CLOSE_WAIT_S:
            self._closed()

    def _writable_again(self) -> None:
        if self._want_window and self.state == CONNECTED:
            self._want_window = False
            self.owner.mqtt_window()

    # --- reading ------------------------------------------------------------------------------
    def _feed(self, data: bytes) -> None:
        try:
            self._decode(data)
        except (
            ProtocolError,
            IndexError,
        ) as err:  # IndexError: a packet shorter than its type needs
            self._lost(f"protocol error: {err or type(err).__name__}")

    def _decode(self, data: bytes) -> None:
        if self._rbuf:
            data = self._rbuf + data
            self._rbuf = b""
        n = len(data)
        i = 0
        while n - i >= 2:
            first = data[i]
            rl = data[i + 1]
            if rl < 128:
                start = i + 2
            else:
                got = read_varint(data, i + 1)
                if got is None:
                    break
                rl, start = got
            end = start + rl
            if end > n:
                break
            ptype = first >> 4
            if ptype == PUBACK or ptype == PUBCOMP:
                mid = (data[start] << 8) | data[start + 1]
                code = data[start + 2] if rl > 2 else 0
                self._acked(mid, code)
            elif ptype == PUBLISH:
                self._on_publish(first, data, start, end)
            elif ptype == PUBREC:
                self._on_pubrec(
                    (data[start] << 8) | data[start + 1], data[start + 2] if rl > 2 else 0
                )
            elif ptype == PUBREL:
                mid = (data[start] << 8) | data[start + 1]
                if self._inbound is not None:
                    self._inbound.discard(mid)
                self._out.append(ack_packet(PUBCOMP, mid))
            elif ptype == PINGRESP:
                self._ping_sent = 0.0
            elif ptype == SUBACK:
                self._on_suback(data, start, end)
            elif ptype == CONNACK:
                self._on_connack(data[start:end], 0)
            elif ptype == DISCONNECT:
                code = data[start] if rl else 0
                self._lost(f"the broker sent DISCONNECT: {reason_text(code)}")
                return
            # UNSUBACK and AUTH: nothing this client asked for
            if self._sock is None:  # a handler above dropped the connection
                return
            i = end
        if i < n:
            self._rbuf = data[i:]
        if self._out:  # acks (PUBACK, PUBREC, PUBREL, PUBCOMP) in one write
            self.flush()

    def _acked(self, mid: int, code: int) -> None:
        entry = self._inflight.pop(mid, None)
        if entry is None:  # a late duplicate ack after a resend
            return
        if self._released is not None:
            self._released.discard(mid)
        self.acked += 1
        self._fire(
            request_type=REQUEST_TYPE,
            name=entry[3],
            response_time=(time.perf_counter() - entry[0]) * 1000,
            response_length=entry[2],
            exception=PublishRefused(reason_text(code)) if code >= 0x80 else None,
            context=self._ctx(),
        )
        if self._want_window:
            self._want_window = False
            self.owner.mqtt_window()
        if self._drained_ev is not None and not self._inflight:
            self._drained_ev.set()
            self._drained_ev = None

    def _on_pubrec(self, mid: int, code: int) -> None:
        if code >= 0x80:  # v5: the broker refused it; the flow ends here (§4.3.3)
            self._acked(mid, code)
            return
        if mid in self._inflight:
            if self._released is None:
                self._released = set()
            self._released.add(mid)
        self._out.append(ack_packet(PUBREL, mid))

    def _on_suback(self, data: bytes, start: int, end: int) -> None:
        mid = (data[start] << 8) | data[start + 1]
        i = start + 2
        if self.version == MQTT5:
            _, i = parse_properties(data, i)
        waiting = self._sub_wait.pop(mid, None)
        if waiting is None:
            return
        t0, name, topic = waiting
        codes = data[i:end]
        exc = None
        if not codes or codes[0] >= 0x80:
            code = codes[0] if codes else 0x80
            exc = SubscribeRefused(
                f"{topic}: {reason_text(code, self.version) if self.version == MQTT5 else 'failure'}"
            )
        self._event(name, (time.perf_counter() - t0) * 1000, exc)

    def _on_publish(self, first: int, data: bytes, start: int, end: int) -> None:
        recv_ns = time.time_ns()
        qos = (first >> 1) & 3
        tlen = (data[start] << 8) | data[start + 1]
        i = start + 2 + tlen
        topic = data[start + 2 : i].decode(errors="replace")
        mid = 0
        if qos:
            mid = (data[i] << 8) | data[i + 1]
            i += 2
        if self.version == MQTT5:
            _, i = parse_properties(data, i)
        payload = data[i:end]
        if qos == 1:
            self._out.append(ack_packet(PUBACK, mid))
        elif qos == 2:
            if self._inbound is None:
                self._inbound = set()
            self._out.append(ack_packet(PUBREC, mid))
            if mid in self._inbound:  # a resend of one we already have (§4.3.3 method B)
                return
            self._inbound.add(mid)
        self.owner.mqtt_message(topic, payload, recv_ns)
