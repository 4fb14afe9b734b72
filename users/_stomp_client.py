"""One STOMP 1.2 connection over WebSocket, on the process pump, timed.

The engine of :class:`users.stomp.StompSubscriber`: ``users._ws_transport``
(a non-blocking socket read by the process's pump greenlet, RFC 6455 sans-IO)
plus ``users._stomp_codec`` (STOMP 1.2 frames). Chosen by measurement against
stomp.py on websocket-client, which is kept as :class:`users.stomp.StompPyClient`
(the reference in the tests): ``python -m bench stomp-engines``.

What it does on the wire: the upgrade offers ``v12.stomp``; CONNECT carries
``accept-version:1.2``, ``host``, ``heart-beat`` and, with a token,
``Authorization: Bearer <token>`` (the Go STOMP load tool sends its JWT so);
SUBSCRIBE asks for a receipt (and sends ``since`` to resume); DISCONNECT asks
for one too and then waits for the server to close first.

Heart-beats (spec, "Heart-beating"): each direction runs at the slower of what
one side can do and the other wants, and not at all if either says 0. The
pump's one-second ticker sends an EOL when nothing else went out for the send
interval (less one tick, so it is never late) and ends a connection that was
silent for twice the receive interval.

Receive time: ``time.time_ns()`` the moment the socket read returned, before
any parsing; every frame in those bytes carries it to ``on_message``.

Timings (ms), for the subscriber's request events:

- ``connect``: TCP connect start -> CONNECTED (the WebSocket upgrade included);
- ``subscribe``: SUBSCRIBE sent -> its RECEIPT.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Mapping

import gevent
from gevent.event import AsyncResult, Event

from users._mqtt_loop import TICK_S, Pump
from users._mqtt_transport import CONNECTED
from users._stomp_codec import Frame, FrameReader, StompProtocolError, encode
from users._ws_transport import WsTransport
from users.exceptions import (
    StompConnectFailed,
    StompConnectionLost,
    StompError,
    StompSubscribeFailed,
)

__all__ = [
    "StompError",
    "StompConnectFailed",
    "StompSubscribeFailed",
    "StompConnectionLost",
    "StompClient",
    "MessageFn",
]

MessageFn = Callable[[bytes, int], None]
"""``on_message(body, recv_ns)`` — called in the pump greenlet for every MESSAGE."""

#: What the client offers in the upgrade (stomp.js offers the same, newest first).
SUBPROTOCOLS = ("v12.stomp",)
_HEARTBEAT = b"\n"


class StompClient(WsTransport):
    """A STOMP 1.2 subscriber connection over WebSocket (``ws://host:port{ws_path}``).

    ``connect()`` and ``subscribe()`` block the calling greenlet until CONNECTED /
    RECEIPT and return the time they took in ms; frames are read by the
    process's pump greenlet, which calls ``on_message(body, recv_ns)`` for every
    MESSAGE. ``lost`` is set when the connection ends; :meth:`close` ends it.

    >>> c = StompClient("127.0.0.1", 8081, "/ws", on_message=print, token="jwt")
    >>> c.connect(); c.subscribe("/topic/coordinates")      # doctest: +SKIP
    """

    __slots__ = (
        "ws_path",
        "on_message",
        "token",
        "heartbeats",
        "tls",
        "connect_timeout",
        "receipt_timeout",
        "close_timeout",
        "header",
        "on_subscribed",
        "messages",
        "last_stream_id",
        "lost",
        "negotiated",
        "server_heartbeats",
        "_stomp",
        "_ids",
        "_receipts",
        "_connected",
        "_session",
        "_closed_ev",
    )

    def __init__(
        self,
        host: str,
        port: int,
        ws_path: str = "/ws",
        *,
        on_message: MessageFn,
        token: str = "",
        heartbeats: tuple[int, int] = (10_000, 10_000),
        tls: bool = False,
        connect_timeout: float = 10.0,
        receipt_timeout: float = 10.0,
        close_timeout: float = 2.0,
        header: Mapping[str, str] | None = None,
        pump: Pump | None = None,
        source_address: str | None = None,
    ) -> None:
        super().__init__(
            host,
            port,
            ws_path,
            tls=tls,
            subprotocols=SUBPROTOCOLS,
            headers=tuple((header or {}).items()),
            connect_timeout=connect_timeout,
            pump=pump,
            source_address=source_address,
        )
        self.ws_path = ws_path
        self.on_message = on_message
        self.token = token
        self.heartbeats = heartbeats
        self.tls = tls
        self.connect_timeout = connect_timeout
        self.receipt_timeout = receipt_timeout
        self.close_timeout = close_timeout
        self.header = header
        #: called in the pump greenlet when a SUBSCRIBE's RECEIPT arrives, before
        #: any MESSAGE read after it is handed to ``on_message``
        self.on_subscribed: Callable[[], None] | None = None
        #: MESSAGE frames received over the client's lifetime (all connections)
        self.messages = 0
        #: the ``stream-id`` header of the last MESSAGE (the gateway's Redis Stream id)
        self.last_stream_id: str | None = None
        #: set when the current connection ended (or there is none)
        self.lost = Event()
        self.lost.set()
        #: (send, receive) heart-beat intervals in ms agreed with the server (0 = none)
        self.negotiated = (0, 0)
        #: the ``heart-beat`` the server sent in CONNECTED
        self.server_heartbeats = (0, 0)
        self._stomp = FrameReader()
        self._ids = itertools.count(1)
        self._receipts: dict[str, AsyncResult] = {}
        self._connected: AsyncResult | None = None
        self._session = False
        self._closed_ev: Event | None = None

    @property
    def session(self) -> bool:
        """A session was opened and not closed by us (it may have been lost since)."""
        return self._session

    @property
    def up(self) -> bool:
        return self.state == CONNECTED and not self.lost.is_set()

    # --- public API ------------------------------------------------------------------------
    def connect(self) -> float:
        """Open the WebSocket, send CONNECT, wait for CONNECTED; return the ms it took.

        Raises :class:`StompConnectFailed` (refused, ERROR frame, a failed upgrade,
        or no CONNECTED within ``connect_timeout``).
        """
        self._stomp = FrameReader()
        self.negotiated = (0, 0)
        waiter = self._connected = AsyncResult()
        self.lost.clear()
        start = time.time_ns()
        try:
            with gevent.Timeout(self.connect_timeout, StompConnectFailed("no CONNECTED in time")):
                self.open()
                connected_ns: int = waiter.get()
        except StompError as exc:
            if not self.last_error:
                self.last_error = str(exc)
            self._finish()
            self.lost.set()
            # without the traceback through gevent's reraise (a frame that holds the
            # exception): a failed attempt leaves no reference cycle (telemetry._gc)
            raise exc.with_traceback(None) from None
        finally:
            self._connected = None
            del waiter  # it holds the exception too
        self._session = True
        return (connected_ns - start) / 1e6

    def subscribe(
        self, destination: str, sub_id: str | None = None, since: str | None = None
    ) -> float:
        """SUBSCRIBE with a receipt and wait for it; return the ms it took.

        ``since``: a stream id; the gateway replays what came after it (the
        ``since`` header, sent only when given).

        Raises :class:`StompSubscribeFailed` on an ERROR, a timeout or a lost connection.
        """
        if not self.up:
            raise StompSubscribeFailed("not connected")
        n = next(self._ids)
        receipt = f"sub-{n}"
        waiter = self._receipts[receipt] = AsyncResult()
        headers = {"id": sub_id or str(n), "destination": destination, "ack": "auto"}
        headers["receipt"] = receipt
        if since is not None:
            headers["since"] = since
        start = time.time_ns()
        try:
            self.send_message(encode("SUBSCRIBE", headers))
            with gevent.Timeout(self.receipt_timeout, StompSubscribeFailed("no RECEIPT in time")):
                done_ns: int = waiter.get()
        except StompError as exc:
            raise exc.with_traceback(None) from None  # as in connect: no reference cycle
        finally:
            self._receipts.pop(receipt, None)
            del waiter
        return (done_ns - start) / 1e6

    def close(self) -> None:
        """DISCONNECT with a receipt, then wait (up to ``close_timeout``) for the server to close.

        The server closing first keeps TIME_WAIT on its side, not on this host's ports.
        """
        self._session = False
        if self.state == CONNECTED:
            self.send_message(encode("DISCONNECT", {"receipt": f"bye-{next(self._ids)}"}))
            self.shutdown()
            if self._sock is not None and self.close_timeout > 0:
                self._closed_ev = ev = Event()
                ev.wait(self.close_timeout)
                self._closed_ev = None
        self._finish()
        self.lost.set()

    # --- WsTransport hooks (pump greenlet) ------------------------------------------------
    def _ws_open(self) -> None:
        cx, cy = self.heartbeats
        headers = {"accept-version": "1.2", "host": self.cfg.host, "heart-beat": f"{cx},{cy}"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        self.send_message(encode("CONNECT", headers))

    def _ws_message(self, opcode: int, payload: bytes, recv_ns: int) -> None:
        # Fast path, what the gateway sends: one whole MESSAGE per WebSocket message,
        # with content-length. Only its body and stream-id are needed; anything
        # else (or any doubt) goes through the full codec below.
        if payload[:8] == b"MESSAGE\n" and payload[-1:] == b"\x00" and not self._stomp.pending:
            head_end = payload.find(b"\n\n")
            at = payload.find(b"\ncontent-length:", 7, head_end)
            if head_end > 0 and at > 0 and payload.find(b"\r", 0, head_end) < 0:
                eol = payload.find(b"\n", at + 16, head_end + 1)
                length = payload[at + 16 : eol]
                if length.isdigit() and head_end + 2 + int(length) == len(payload) - 1:
                    self.messages += 1
                    at = payload.find(b"\nstream-id:", 7, head_end)
                    if at > 0:
                        eol = payload.find(b"\n", at + 11, head_end + 1)
                        sid = payload[at + 11 : eol]
                        if sid and b"\\" not in sid:
                            self.last_stream_id = sid.decode()
                    self.on_message(payload[head_end + 2 : -1], recv_ns)
                    return
        try:
            frames = self._stomp.feed(payload)
        except (StompProtocolError, UnicodeDecodeError) as err:
            self._end(f"STOMP protocol error: {err}")
            return
        for frame in frames:
            if frame.command == "MESSAGE":
                self.messages += 1
                stream_id = frame.headers.get("stream-id")
                if stream_id:
                    self.last_stream_id = stream_id
                self.on_message(frame.body, recv_ns)
            else:
                self._control(frame, recv_ns)
            if self._sock is None:
                return

    def _control(self, frame: Frame, recv_ns: int) -> None:
        command = frame.command
        headers = frame.headers
        if command == "RECEIPT":
            waiter = self._receipts.pop(headers.get("receipt-id", ""), None)
            if waiter is not None:
                # before any MESSAGE that follows is handled (same greenlet, in order)
                if self.on_subscribed is not None:
                    self.on_subscribed()
                waiter.set(recv_ns)
        elif command == "CONNECTED":
            self._on_connected(headers, recv_ns)
        elif command == "ERROR":
            text = headers.get("message", "ERROR")
            body = frame.body.decode(errors="replace").strip()
            if body:
                text = f"{text}: {body}"
            self.last_error = text
            receipt = headers.get("receipt-id")
            if self._connected is not None and not self._connected.ready():
                self._connected.set_exception(StompConnectFailed(text))
            elif receipt is not None and receipt in self._receipts:
                self._receipts.pop(receipt).set_exception(StompSubscribeFailed(text))
            # the server closes after an ERROR (spec); the end follows

    def _on_connected(self, headers: Mapping[str, str], recv_ns: int) -> None:
        sx, sy = _heartbeat(headers.get("heart-beat", "0,0"))
        cx, cy = self.heartbeats
        self.server_heartbeats = (sx, sy)
        self.negotiated = (max(cx, sy) if cx and sy else 0, max(cy, sx) if cy and sx else 0)
        self.state = CONNECTED
        if self._connected is not None and not self._connected.ready():
            self._connected.set(recv_ns)

    def _ws_ended(self, reason: str, connected: bool) -> None:
        if self._connected is not None and not self._connected.ready():
            self._connected.set_exception(StompConnectFailed(self.last_error or reason))
        for waiter in self._receipts.values():
            if not waiter.ready():
                waiter.set_exception(StompSubscribeFailed(self.last_error or "connection ended"))
        if self._closed_ev is not None:
            self._closed_ev.set()
        self.lost.set()

    def _tick(self, now: float) -> None:
        if self.state == CONNECTED:
            send_ms, receive_ms = self.negotiated
            if send_ms and now - self._last_tx >= send_ms / 1000 - TICK_S:
                self.send_message(_HEARTBEAT)
            if receive_ms and time.time_ns() - self.recv_ns > 2e6 * receive_ms:
                self.last_error = "heart-beat timeout"
                self._end(self.last_error)
            return
        super()._tick(now)


def _heartbeat(value: str) -> tuple[int, int]:
    sx, _, sy = value.partition(",")
    try:
        return int(sx), int(sy)
    except ValueError:
        return 0, 0
