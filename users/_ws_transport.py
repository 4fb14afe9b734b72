"""One client WebSocket on the process pump: the engine of StompSubscriber and WsSubscriber.

The socket half is MqttDevice's (``users._mqtt_transport.Transport``: non-blocking
socket with TCP_NODELAY, an optional source address, TLS over ``MemoryBIO``,
one ``send`` per flush); the reads are done by the process's one pump greenlet
(``users._mqtt_loop``), woken by a libev watcher per socket. So an idle
subscription costs a socket, a watcher and this object: no reader greenlet
(~8 KB each with its stack) and no thread. The WebSocket protocol is
``users._ws_codec`` (sans-IO, RFC 6455 client side).

Why this and not websocket-client (or wsproto) with a reader greenlet per
connection: ``python -m bench stomp-engines`` measures the three on the same
frames (figures in ``bench/README.md``).

A subclass implements :meth:`_ws_open` (upgrade done), :meth:`_ws_message`
(one whole data message with the time it was read) and :meth:`_ws_ended`
(the connection is gone, or never came up: ``connected`` says which). Pings
are answered, a server close frame is answered and ends the connection.
"""

from __future__ import annotations

import os
import ssl
import time
from collections.abc import Iterable
from typing import Any

from users._mqtt_loop import Pump
from users._mqtt_transport import (
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
from users._ws_codec import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameReader,
    HandshakeError,
    WsProtocolError,
    close_payload,
    encode_frame,
    parse_close,
    parse_upgrade,
    upgrade_request,
)

__all__ = ["WsTransport", "default_pump", "CLOSE_WAIT_S"]

#: After our close (or DISCONNECT), how long to wait for the server to close first,
#: so TIME_WAIT lands on its side and not on this host's ephemeral ports.
CLOSE_WAIT_S = 2.0

_pumps: dict[int, Pump] = {}


def default_pump() -> Pump:
    """The pump of this gevent hub, for clients made outside a Locust ``Environment``."""
    from gevent.hub import get_hub

    hub = get_hub()
    pump = _pumps.get(id(hub))
    if pump is None or pump.hub is not hub:
        pump = _pumps[id(hub)] = Pump()
    return pump


class WsTransport(Transport):
    """A client WebSocket (``ws://`` or ``wss://``) whose reads run in the pump (module doc)."""

    __slots__ = (
        "path",
        "subprotocols",
        "ws_headers",
        "upgrade_headers",
        "last_error",
        "recv_ns",
        "_key",
        "_hbuf",
        "_reader",
        "_upgraded",
        "_closing_at",
    )

    def __init__(
        self,
        host: str,
        port: int,
        path: str,
        *,
        tls: bool | ssl.SSLContext = False,
        subprotocols: Iterable[str] = (),
        headers: Iterable[tuple[str, str]] = (),
        connect_timeout: float = 10.0,
        pump: Pump | None = None,
        source_address: str | None = None,
    ) -> None:
        context = tls if isinstance(tls, ssl.SSLContext) else None
        if tls is True:
            context = ssl.create_default_context()
        cfg = ClientConfig(host, port, tls=context, connect_timeout=connect_timeout)
        super().__init__(cfg, pump or default_pump(), source_address)
        self.path = path
        self.subprotocols = tuple(subprotocols)
        self.ws_headers = tuple(headers)
        #: the headers of the server's 101 answer (names lower-cased)
        self.upgrade_headers: dict[str, str] = {}
        #: why the last connection ended or failed ("" while all is well)
        self.last_error = ""
        #: ``time.time_ns()`` when the last bytes were read (every frame in them has it)
        self.recv_ns = 0
        self._key = ""
        self._hbuf = b""
        self._reader = FrameReader()
        self._upgraded = False
        self._closing_at = 0.0

    @property
    def connected(self) -> bool:
        return self.state == CONNECTED

    @property
    def socket(self) -> Any:
        """The socket of the current connection, or None."""
        return self._sock

    # --- what a subclass implements ----------------------------------------------------------
    def _ws_open(self) -> None:
        raise NotImplementedError

    def _ws_message(self, opcode: int, payload: bytes, recv_ns: int) -> None:
        raise NotImplementedError

    def _ws_ended(self, reason: str, connected: bool) -> None:
        raise NotImplementedError

    # --- opening and closing -----------------------------------------------------------------
    def open(self) -> None:
        """Start connecting (returns at once); :meth:`_ws_open` or :meth:`_ws_ended` follows."""
        self._teardown()
        self.state = IDLE
        self.last_error = ""
        self._hbuf = b""
        self._reader = FrameReader()
        self._upgraded = False
        self._pump.register(self)
        self._start_attempt()

    def send_message(self, payload: bytes, opcode: int = OP_TEXT) -> None:
        """Queue one (masked) data frame and flush."""
        if self._sock is not None:
            self._out.append(encode_frame(opcode, payload))
            self.flush()

    def shutdown(self, code: int = 1000) -> None:
        """Send a close frame and wait (up to :data:`CLOSE_WAIT_S`) for the server to close."""
        if self.state in (CLOSING, CLOSED, IDLE):
            self._finish()
            return
        if self._upgraded and self._sock is not None:
            self._out.append(encode_frame(OP_CLOSE, close_payload(code)))
            self.flush()
            self.state = CLOSING
            self._closing_at = time.monotonic()
            return
        self._finish()

    def _finish(self) -> None:
        self._teardown()
        self.state = CLOSED
        self._pump.unregister(self)

    # --- Transport hooks -------------------------------------------------------------------
    def _transport_up(self) -> None:
        self.state = WAIT_CONNACK
        request, self._key = upgrade_request(
            self.cfg.host,
            self.cfg.port,
            self.path,
            tls=self.cfg.tls is not None,
            subprotocols=self.subprotocols,
            headers=self.ws_headers,
        )
        self._out.insert(0, request)
        self.flush()

    def _feed(self, data: bytes) -> None:
        self.recv_ns = recv_ns = time.time_ns()
        if not self._upgraded:
            data = self._upgrade(data)
            if not data:
                return
        try:
            messages = self._reader.feed(data)
        except WsProtocolError as err:
            self._end(f"WebSocket protocol error: {err}")
            return
        for opcode, payload in messages:
            if opcode == OP_TEXT or opcode == OP_BINARY:
                self._ws_message(opcode, payload, recv_ns)
            elif opcode == OP_PING:
                self._out.append(encode_frame(OP_PONG, payload))
                self.flush()
            elif opcode == OP_CLOSE:
                code, reason = parse_close(payload)
                if self.state != CLOSING and self._sock is not None:
                    self._out.append(encode_frame(OP_CLOSE, close_payload(code)))
                    self.flush()
                self._end(f"closed by the server ({code}{': ' + reason if reason else ''})")
                return
            if self._sock is None:  # a handler ended the connection
                return

    def _upgrade(self, data: bytes) -> bytes:
        self._hbuf += data
        try:
            parsed = parse_upgrade(self._hbuf, self._key)
        except HandshakeError as err:
            self._end(f"WebSocket upgrade failed: {err}")
            return b""
        if parsed is None:
            return b""
        self.upgrade_headers, start = parsed
        rest = self._hbuf[start:]
        self._hbuf = b""
        self._upgraded = True
        self._ws_open()
        return rest if self._sock is not None else b""

    def _refused(self, code: int) -> str:
        where = f"{self.cfg.host}:{self.cfg.port}{self.path}"
        return f"connect to {where} failed: {os.strerror(code)}"

    def _attempt_failed(self, reason: str, ms: float | None = None) -> None:
        self._end(reason)

    def _lost(self, reason: str) -> None:
        self._end(reason)

    def _writable_again(self) -> None:
        pass

    def _end(self, reason: str) -> None:
        """The connection is over (whatever the reason): tear down once, tell the subclass."""
        state = self.state
        if state in (IDLE, CLOSED):
            return
        connected = state == CONNECTED
        self._finish()
        if state == CLOSING:
            reason = ""
        elif not self.last_error:
            self.last_error = reason
        self._ws_ended(reason, connected)

    def _tick(self, now: float) -> None:
        """Once a second (the pump's ticker): bound the connect and the close."""
        state = self.state
        if state == CLOSING and now - self._closing_at > CLOSE_WAIT_S:
            self._end("")
        elif state in (CONNECTING, HANDSHAKE, WAIT_CONNACK):
            if now - self._m_attempt > self.cfg.connect_timeout:
                self._end(f"no answer within {self.cfg.connect_timeout:g} s")
