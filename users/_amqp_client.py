"""One AMQP 0-9-1 connection on a gevent socket, pika's frame codec, one reader greenlet.

pika's own connection classes drive I/O themselves (``BlockingConnection``
runs a select loop per call); here only its codec is used (``pika.frame``,
``pika.spec``: the method classes of the AMQP 0-9-1 spec), the way the MQTT
and STOMP users put their own I/O under a sans-IO codec. What this buys, with
figures: ``python -m bench amqp-engines`` (bench/README.md).

- The handshake (Start/StartOk with PLAIN, Tune/TuneOk, Open, Channel.Open, and
  whatever the owner declares) runs in the caller's greenlet, each method
  awaited in turn.
- Then one reader greenlet per connection decodes what arrives. The frames of
  the hot path are decoded by hand (``Basic.Ack``/``Nack`` for publisher
  confirms; ``Basic.Deliver`` + content header + body for consumers); anything
  else goes through ``pika.frame.decode_frame``.
- Publishing is a write of three frames; the method frame of a routing key is
  encoded once and cached; the header frame's only varying field (the body
  size) is packed in place.
- Heartbeats are off (``TuneOk heartbeat=0``): on loopback a broker restart
  closes the socket, which is what tells the owner.

Every byte written and read is counted (``bytes_out``/``bytes_in``): the
comparison with MQTT reports AMQP's bytes on the wire per message from these
counters, not from an estimate.
"""

from __future__ import annotations

import logging
import socket
import struct
import time
from collections.abc import Callable, Iterable
from typing import Any

import gevent
from gevent.event import Event
from pika import frame as pframe
from pika import spec

__all__ = ["AmqpConnection", "AmqpClosed", "publish_method_frame"]

log = logging.getLogger(__name__)

_FRAME_HDR = struct.Struct(">BHL")
_CLASS_METHOD = struct.Struct(">HH")
_U64 = struct.Struct(">Q")
_HEADER_SIZE = 7
_FRAME_END = b"\xce"
_CH = 1  # the one channel every connection uses

#: (class, method) ids of the frames decoded by hand
_ACK = (60, 80)
_NACK = (60, 120)
_DELIVER = (60, 60)


class AmqpClosed(Exception):
    """The connection or channel was closed (by the broker or the network)."""


def publish_method_frame(exchange: str, routing_key: str) -> bytes:
    """The encoded ``Basic.Publish`` method frame (constant for one exchange and key)."""
    return pframe.Method(
        _CH, spec.Basic.Publish(exchange=exchange, routing_key=routing_key)
    ).marshal()


def _header_parts(properties: spec.BasicProperties) -> tuple[bytes, bytes]:
    """A content-header frame split around its 8-byte body size: (before, after)."""
    encoded = pframe.Header(_CH, 0, properties).marshal()
    # type(1) channel(2) size(4) class(2) weight(2) | body size(8) | flags + props + end
    return encoded[:11], encoded[19:]


class AmqpConnection:
    """A connection with one channel (number 1). Not thread-safe; greenlets of one hub.

    ``on_ack(tag, multiple, nack)`` gets publisher confirms; ``on_deliver(routing_key,
    body, delivery_tag, redelivered, recv_ns)`` consumer deliveries; ``on_lost(reason)``
    is called once when the connection ends without :meth:`close`.
    """

    def __init__(
        self,
        host: str,
        port: int,
        username: str,
        password: str,
        vhost: str = "/",
        *,
        connect_timeout: float = 10.0,
        on_ack: Callable[[int, bool, bool], None] | None = None,
        on_deliver: Callable[[str, bytes, int, bool, int], None] | None = None,
        on_lost: Callable[[str], None] | None = None,
        client_name: str = "pipeswarm",
        ack_deliveries: bool = False,
        meter: list[int] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.username = username
        self.password = password
        self.vhost = vhost
        self.connect_timeout = connect_timeout
        self.on_ack = on_ack
        self.on_deliver = on_deliver
        self.on_lost = on_lost
        self.client_name = client_name
        #: acknowledge deliveries once per read (``multiple``), after ``on_deliver`` saw them
        self.ack_deliveries = ack_deliveries
        #: ``[bytes out, bytes in]`` shared by the connections of one role (a fleet's total)
        self.meter = meter if meter is not None else [0, 0]
        self.bytes_out = 0
        self.bytes_in = 0
        self.frame_max = 131072
        self.open = False
        self.lost = Event()
        self.lost_reason = ""
        self._sock: socket.socket | None = None
        self._buf = b""
        self._reader: gevent.Greenlet | None = None
        self._closing = False
        self._next_tag = 0  # publisher confirms: the broker numbers publishes from 1
        self._methods: dict[tuple[str, str], bytes] = {}
        self._header: dict[int, tuple[bytes, bytes]] = {}
        self._out: list[bytes] = []
        # consumer state: the Deliver being assembled
        self._dlv: tuple[str, int, bool] | None = None
        self._dlv_size = 0
        self._dlv_body: list[bytes] = []
        self._dlv_have = 0

    # --- handshake (caller's greenlet) ----------------------------------------------------
    def connect(self, setup: Iterable[Any] = ()) -> None:
        """Open the connection and channel 1, then send each method of ``setup`` and
        await its ``…Ok`` (a declare, a bind, ``Confirm.Select``, ``Basic.Consume``)."""
        sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock
        self._buf = b""
        self._closing = False
        self._dlv = None
        self._next_tag = 0
        self.lost.clear()
        self.lost_reason = ""
        try:
            self._write(pframe.ProtocolHeader().marshal())
            start = self._await(spec.Connection.Start)
            mechanisms = start.mechanisms
            if isinstance(mechanisms, bytes):
                mechanisms = mechanisms.decode()
            if "PLAIN" not in mechanisms.split():
                raise AmqpClosed("the broker does not offer PLAIN authentication")
            # authentication_failure_close: a wrong password is a Connection.Close 403, not a
            # silently closed socket (RabbitMQ's "Authentication failure notifications")
            caps = {"publisher_confirms": True, "authentication_failure_close": True}
            props = {"product": self.client_name, "capabilities": caps}
            response = f"\0{self.username}\0{self.password}"
            self._send(0, spec.Connection.StartOk(props, "PLAIN", response, "en_US"))
            tune = self._await(spec.Connection.Tune)
            self.frame_max = tune.frame_max or self.frame_max
            self._send(0, spec.Connection.TuneOk(tune.channel_max or 2047, self.frame_max, 0))
            self._send(0, spec.Connection.Open(self.vhost))
            self._await(spec.Connection.OpenOk)
            self._send(_CH, spec.Channel.Open())
            self._await(spec.Channel.OpenOk)
            for method in setup:
                self._send(_CH, method)
                if not getattr(method, "nowait", False):
                    self._await(_OK[type(method)])
        except BaseException:
            self._drop()
            raise
        sock.settimeout(None)
        self.open = True
        self._reader = gevent.spawn(self._read_loop)

    def _send(self, channel: int, method: Any) -> None:
        self._write(pframe.Method(channel, method).marshal())

    def _await(self, want: type) -> Any:
        """Read frames until a method of type ``want`` (a Close is an error)."""
        assert self._sock is not None
        while True:
            used, frm = pframe.decode_frame(self._buf)
            if frm is None:
                data = self._sock.recv(65536)
                if not data:
                    raise AmqpClosed("the broker closed the connection during the handshake")
                self.bytes_in += len(data)
                self.meter[1] += len(data)
                self._buf += data
                continue
            self._buf = self._buf[used:]
            if isinstance(frm, pframe.Method):
                if isinstance(frm.method, want):
                    return frm.method
                if isinstance(frm.method, spec.Connection.Close | spec.Channel.Close):
                    m = frm.method
                    raise AmqpClosed(f"{m.reply_code} {m.reply_text}")

    # --- publishing -------------------------------------------------------------------
    def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        properties: spec.BasicProperties,
        *,
        flush: bool = True,
    ) -> int:
        """Send one message; return its delivery tag (what a confirm will name)."""
        key = (exchange, routing_key)
        method = self._methods.get(key)
        if method is None:
            method = self._methods[key] = publish_method_frame(exchange, routing_key)
        pid = id(properties)
        parts = self._header.get(pid)
        if parts is None:
            parts = self._header[pid] = _header_parts(properties)
        size = len(body)
        if size + 8 > self.frame_max:
            raise ValueError(f"a body of {size} bytes needs more than one frame; not supported")
        frames = b"".join(
            (
                method,
                parts[0],
                _U64.pack(size),
                parts[1],
                _FRAME_HDR.pack(3, _CH, size),
                body,
                _FRAME_END,
            )
        )
        self._out.append(frames)
        if flush:
            self.flush()
        self._next_tag += 1
        return self._next_tag

    def ack(self, delivery_tag: int, multiple: bool = True) -> None:
        """Acknowledge a delivery (``multiple``: and every one before it)."""
        self._out.append(pframe.Method(_CH, spec.Basic.Ack(delivery_tag, multiple)).marshal())
        self.flush()

    def flush(self) -> None:
        if not self._out:
            return
        data = b"".join(self._out)
        self._out.clear()
        self._write(data)

    def _write(self, data: bytes) -> None:
        sock = self._sock
        if sock is None:
            raise AmqpClosed(self.lost_reason or "not connected")
        try:
            sock.sendall(data)
        except OSError as err:
            self._lose(f"write failed: {err}")
            raise AmqpClosed(self.lost_reason) from None
        self.bytes_out += len(data)
        self.meter[0] += len(data)

    # --- the reader greenlet ------------------------------------------------------------
    def _read_loop(self) -> None:
        sock = self._sock
        assert sock is not None
        reason = "the broker closed the connection"
        try:
            while True:
                data = sock.recv(262144)
                if not data:
                    break
                recv_ns = time.time_ns()
                self.bytes_in += len(data)
                self.meter[1] += len(data)
                self._buf = self._buf + data if self._buf else data
                self._frames(recv_ns)
        except AmqpClosed as err:
            reason = str(err)
        except OSError as err:
            reason = f"connection error: {err}"
        self._lose(reason)

    def _frames(self, recv_ns: int) -> None:
        buf = self._buf
        n = len(buf)
        i = 0
        last_tag = 0
        while n - i >= 8:
            ftype, _ch, size = _FRAME_HDR.unpack_from(buf, i)
            end = i + _HEADER_SIZE + size
            if end >= n:
                break
            p = i + _HEADER_SIZE
            if ftype == 1:
                cm = _CLASS_METHOD.unpack_from(buf, p)
                if cm == _ACK or cm == _NACK:
                    tag = _U64.unpack_from(buf, p + 4)[0]
                    bits = buf[p + 12]
                    if self.on_ack is not None:
                        self.on_ack(tag, bool(bits & 1), cm == _NACK)
                elif cm == _DELIVER:
                    self._dlv = _decode_deliver(buf, p + 4)
                else:
                    self._method(buf[i : end + 1])
            elif ftype == 2:
                self._dlv_size = _U64.unpack_from(buf, p + 4)[0]
                self._dlv_body = []
                self._dlv_have = 0
                if self._dlv_size == 0:
                    last_tag = self._delivered(b"", recv_ns) or last_tag
            elif ftype == 3:
                self._dlv_body.append(buf[p:end])
                self._dlv_have += size
                if self._dlv_have >= self._dlv_size:
                    body = (
                        self._dlv_body[0] if len(self._dlv_body) == 1 else b"".join(self._dlv_body)
                    )
                    last_tag = self._delivered(body, recv_ns) or last_tag
            elif ftype == 8:
                self._write(pframe.Heartbeat().marshal())
            i = end + 1
        self._buf = buf[i:] if i else buf
        if last_tag and self.ack_deliveries:
            self.ack(last_tag, multiple=True)

    def _delivered(self, body: bytes, recv_ns: int) -> int:
        dlv = self._dlv
        self._dlv = None
        if dlv is None or self.on_deliver is None:
            return 0
        routing_key, tag, redelivered = dlv
        self.on_deliver(routing_key, body, tag, redelivered, recv_ns)
        return tag

    def _method(self, raw: bytes) -> None:
        _, frm = pframe.decode_frame(raw)
        if not isinstance(frm, pframe.Method):
            return
        m = frm.method
        if isinstance(m, spec.Connection.Close):
            self._write(pframe.Method(0, spec.Connection.CloseOk()).marshal())
            raise AmqpClosed(f"connection closed by the broker: {m.reply_code} {m.reply_text}")
        if isinstance(m, spec.Channel.Close):
            raise AmqpClosed(f"channel closed by the broker: {m.reply_code} {m.reply_text}")
        if isinstance(m, spec.Connection.Blocked):
            log.warning("RabbitMQ blocked the connection: %s", m.reason)

    # --- ending ------------------------------------------------------------------------
    def _lose(self, reason: str) -> None:
        if not self.open and self._sock is None:
            return
        was_open = self.open
        self._drop()
        self.lost_reason = reason
        self.lost.set()
        if was_open and not self._closing and self.on_lost is not None:
            self.on_lost(reason)

    def _drop(self) -> None:
        self.open = False
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    def close(self, before: Iterable[Any] = ()) -> None:
        """Send ``before`` (nowait methods, e.g. a ``Queue.Delete``), then Connection.Close."""
        self._closing = True
        if self.open and self._sock is not None:
            try:
                for method in before:
                    self._send(_CH, method)
                self._send(0, spec.Connection.Close(200, "bye", 0, 0))
                self._sock.shutdown(socket.SHUT_WR)
            except (OSError, AmqpClosed):
                pass
        reader = self._reader
        if reader is not None and reader is not gevent.getcurrent():
            reader.join(timeout=2.0)
            reader.kill(block=False)
        self._drop()
        self.lost.set()


def _decode_deliver(buf: bytes, p: int) -> tuple[str, int, bool]:
    """``Basic.Deliver`` arguments from ``p``: (routing key, delivery tag, redelivered)."""
    n = buf[p]
    p += 1 + n  # consumer tag
    tag = _U64.unpack_from(buf, p)[0]
    redelivered = bool(buf[p + 8] & 1)
    p += 9
    n = buf[p]
    p += 1 + n  # exchange
    n = buf[p]
    routing_key = buf[p + 1 : p + 1 + n].decode()
    return routing_key, tag, redelivered


#: what answers each setup method
_OK: dict[type, type] = {
    spec.Exchange.Declare: spec.Exchange.DeclareOk,
    spec.Queue.Declare: spec.Queue.DeclareOk,
    spec.Queue.Bind: spec.Queue.BindOk,
    spec.Queue.Delete: spec.Queue.DeleteOk,
    spec.Basic.Qos: spec.Basic.QosOk,
    spec.Basic.Consume: spec.Basic.ConsumeOk,
    spec.Confirm.Select: spec.Confirm.SelectOk,
}
