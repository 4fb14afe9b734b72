"""The reference STOMP engine: stomp.py's ``WSStompConnection`` on websocket-client, timed.

:class:`StompPyClient` has the API of :class:`users._stomp_client.StompClient`
(the engine StompSubscriber runs on) and is kept as the reference the tests and
``bench stomp-engines`` compare it with; ``client_cls = StompPyClient`` on a
subscriber class runs it instead (about 170 µs per frame, a reader greenlet
per connection: see ``bench/README.md``).

Under Locust, gevent has monkey-patched ``threading`` and ``socket``: stomp.py's
receiver "thread" is a greenlet (we hand it ``gevent.spawn`` explicitly through
``override_threading``; its heart-beat thread is a greenlet by the patch), its
locks and conditions are gevent's, and websocket-client reads a gevent socket.
The transport opens the WebSocket itself (one attempt, the real error raised,
UTF-8 validation off); websocket-client sets TCP_NODELAY on every socket it
opens (``websocket._socket.DEFAULT_SOCKET_OPTION``), so no Nagle delay.

Receive time: the transport stamps ``time.time_ns()`` the moment a WebSocket
message has been read, before stomp.py parses it; every frame of that message
(the gateway sends one frame per message) carries that stamp to the listener.

Timings (ms) are wall-clock differences of those stamps:

- ``connect``: TCP connect start -> CONNECTED (WebSocket upgrade included);
- ``subscribe``: SUBSCRIBE sent -> its RECEIPT.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import gevent
import websocket
from gevent.event import AsyncResult, Event
from stomp.adapter.ws import WSStompConnection, WSTransport
from stomp.connect import BaseConnection
from stomp.listener import ConnectionListener
from stomp.protocol import Protocol12
from stomp.utils import Frame

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
    "StompPyClient",
]

log = logging.getLogger(__name__)

MessageFn = Callable[[bytes, int], None]
"""``on_message(body, recv_ns)`` — called in the receiver greenlet for every MESSAGE."""


def _spawn(callback: Callable[[], Any]) -> gevent.Greenlet:
    return gevent.spawn(callback)


class _StampingTransport(WSTransport):
    """``WSTransport`` that opens its WebSocket itself and stamps each message's read time."""

    recv_ns = 0

    def __init__(self, url: str, host_and_port: tuple[str, int], **kwargs: Any) -> None:
        super().__init__([host_and_port], **kwargs)
        self.url = url
        self.host_and_port = host_and_port
        self.ws_options: dict[str, Any] = {}

    def attempt_connection(self) -> None:
        # One attempt, its error raised as it is (stomp.py's own loop retries with
        # sleeps, logs a warning each time and ends in a ConnectFailedException
        # without the reason): the user reconnects with its own backoff.
        self.connection_error = False
        self.current_host_and_port = self.host_and_port
        self.socket = websocket.create_connection(
            self.url,
            # None: a socket timeout would end stomp.py's receive loop on a quiet
            # subscription; the connect is bounded with gevent.Timeout instead
            timeout=None,
            header=self.header,
            # websocket-client validates the UTF-8 of every text frame in pure
            # Python (~35 µs for a 300-byte MESSAGE); the JSON parser checks it anyway
            skip_utf8_validation=True,
            **self.ws_options,
        )

    def receive(self) -> bytes:
        data: bytes = super().receive()
        self.recv_ns = time.time_ns()
        return data


class _Connection(WSStompConnection):
    """``WSStompConnection`` built on :class:`_StampingTransport` (its ``__init__``, reduced)."""

    def __init__(
        self,
        url: str,
        host_and_port: tuple[str, int],
        heartbeats: tuple[int, int],
        header: Mapping[str, str] | None,
        ws_options: Mapping[str, Any] | None = None,
        pump: object = None,
        source_address: str | None = None,
    ) -> None:
        del pump, source_address  # the other engine's; stomp.py reads in a greenlet of its own
        transport = _StampingTransport(
            url,
            host_and_port,
            auto_decode=False,  # bodies stay bytes: the ledger parses bytes
            header=dict(header) if header else None,
        )
        transport.ws_options = dict(ws_options or {})
        transport.override_threading(_spawn)
        BaseConnection.__init__(self, transport)
        Protocol12.__init__(self, transport, heartbeats, True, heart_beat_receive_scale=2.0)


class _Listener(ConnectionListener):
    """Routes one connection's stomp.py callbacks (receiver greenlet) to its client.

    Callbacks of a connection the client has already replaced are ignored.
    """

    def __init__(self, client: StompPyClient, conn: _Connection) -> None:
        self.client = client
        self.conn = conn
        self.transport: _StampingTransport = conn.transport

    def on_connected(self, frame: Frame) -> None:
        c = self.client
        if c._conn is self.conn and c._connected is not None and not c._connected.ready():
            c._connected.set(self.transport.recv_ns)

    def on_message(self, frame: Frame) -> None:
        c = self.client
        if c._conn is self.conn:
            c.messages += 1
            stream_id = frame.headers.get("stream-id")
            if stream_id:
                c.last_stream_id = stream_id
            c.on_message(frame.body, self.transport.recv_ns)

    def on_receipt(self, frame: Frame) -> None:
        c = self.client
        waiter = c._receipts.pop(frame.headers.get("receipt-id", ""), None)
        if waiter is not None and c._conn is self.conn:
            # before any MESSAGE that follows is handled (same greenlet, in order)
            if c.on_subscribed is not None:
                c.on_subscribed()
            waiter.set(self.transport.recv_ns)

    def on_error(self, frame: Frame) -> None:
        c = self.client
        if c._conn is not self.conn:
            return
        headers = frame.headers
        body = frame.body.decode(errors="replace") if isinstance(frame.body, bytes) else frame.body
        text = headers.get("message", "ERROR")
        if body:
            text = f"{text}: {body.strip()}"
        c.last_error = text
        receipt = headers.get("receipt-id")
        if c._connected is not None and not c._connected.ready():
            c._connected.set_exception(StompConnectFailed(text))
        elif receipt is not None and receipt in c._receipts:
            c._receipts.pop(receipt).set_exception(StompSubscribeFailed(text))
        # the server closes after an ERROR (spec); on_disconnected follows

    def on_heartbeat_timeout(self) -> None:
        if self.client._conn is self.conn:
            self.client.last_error = "heart-beat timeout"

    def on_disconnected(self) -> None:
        if self.client._conn is self.conn:
            self.client._ended()


class StompPyClient:
    """A STOMP 1.2 subscriber connection over WebSocket, on stomp.py (the reference engine).

    ``connect()`` and ``subscribe()`` block the calling greenlet until CONNECTED /
    RECEIPT and return the time they took in ms; frames arrive in stomp.py's
    receiver greenlet, which calls ``on_message(body, recv_ns)`` for every
    MESSAGE. ``lost`` is set when the connection ends; :meth:`close` ends it.

    >>> c = StompPyClient("127.0.0.1", 8081, "/ws", on_message=print, token="jwt")
    >>> c.connect(); c.subscribe("/topic/coordinates")      # doctest: +SKIP
    """

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
        ws_options: Mapping[str, Any] | None = None,
        pump: object = None,
        source_address: str | None = None,
    ) -> None:
        del pump, source_address  # the other engine's; stomp.py reads in a greenlet of its own
        self.host = host
        self.port = port
        self.ws_path = ws_path
        self.on_message = on_message
        self.token = token
        self.heartbeats = heartbeats
        self.tls = tls
        self.connect_timeout = connect_timeout
        self.receipt_timeout = receipt_timeout
        self.close_timeout = close_timeout
        self.header = header
        #: called in the receiver greenlet when a SUBSCRIBE's RECEIPT arrives, before
        #: any MESSAGE read after it is handed to ``on_message``
        self.on_subscribed: Callable[[], None] | None = None
        #: more ``websocket.create_connection`` arguments (``sslopt``, ``sockopt``, …)
        self.ws_options = ws_options
        #: MESSAGE frames received over the client's lifetime (all connections)
        self.messages = 0
        #: the ``stream-id`` header of the last MESSAGE (the gateway's Redis Stream id)
        self.last_stream_id: str | None = None
        #: the last ERROR / heart-beat problem, for the "connection lost" event
        self.last_error = ""
        #: set when the current connection ended (or there is none)
        self.lost = Event()
        self.lost.set()
        self._closing = False
        self._ids = itertools.count(1)
        self._receipts: dict[str, AsyncResult] = {}
        self._connected: AsyncResult | None = None
        self._conn: _Connection | None = None
        self._transport: _StampingTransport | None = None

    @property
    def session(self) -> bool:
        """A session was opened and not closed by us (it may have been lost since)."""
        return self._conn is not None

    @property
    def connection(self) -> WSStompConnection | None:
        """The underlying stomp.py connection (None before :meth:`connect`)."""
        return self._conn

    @property
    def socket(self) -> Any:
        """The ``websocket.WebSocket`` of the current connection, or None."""
        return self._transport.socket if self._transport is not None else None

    @property
    def up(self) -> bool:
        return self._conn is not None and not self.lost.is_set()

    def connect(self) -> float:
        """Open the WebSocket, send CONNECT, wait for CONNECTED; return the ms it took.

        Raises :class:`StompConnectFailed` (refused, ERROR frame, or no CONNECTED
        within ``connect_timeout``).
        """
        self._teardown()
        self._closing = False
        self.last_error = ""
        url = f"{'wss' if self.tls else 'ws'}://{self.host}:{self.port}{self.ws_path}"
        conn = _Connection(
            url, (self.host, self.port), self.heartbeats, self.header, self.ws_options
        )
        self._conn = conn
        self._transport = conn.transport
        self._connected = AsyncResult()
        conn.set_listener("pipeswarm", _Listener(self, conn))
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self.lost.clear()
        start = time.time_ns()
        try:
            with gevent.Timeout(self.connect_timeout, StompConnectFailed("no CONNECTED in time")):
                conn.connect(headers=headers, wait=False, with_connect_command=True)
                connected_ns: int = self._connected.get()
        except StompError:
            self._teardown()
            raise
        except Exception as exc:  # stomp.py / websocket-client / OS errors while connecting
            self._teardown()
            raise StompConnectFailed(
                f"connect to {self.host}:{self.port}{self.ws_path} failed: {exc or type(exc).__name__}"
            ) from exc
        finally:
            self._connected = None
        return (connected_ns - start) / 1e6

    def subscribe(
        self, destination: str, sub_id: str | None = None, since: str | None = None
    ) -> float:
        """SUBSCRIBE with a receipt and wait for it; return the ms it took.

        ``since``: a stream id; the gateway replays what came after it (the
        ``since`` header, sent only when given).

        Raises :class:`StompSubscribeFailed` on an ERROR, a timeout or a lost connection.
        """
        conn = self._conn
        if conn is None or self.lost.is_set():
            raise StompSubscribeFailed("not connected")
        n = next(self._ids)
        receipt = f"sub-{n}"
        waiter = AsyncResult()
        self._receipts[receipt] = waiter
        start = time.time_ns()
        try:
            headers = {"receipt": receipt}
            if since is not None:
                headers["since"] = since
            conn.subscribe(destination, id=sub_id or str(n), ack="auto", headers=headers)
            with gevent.Timeout(self.receipt_timeout, StompSubscribeFailed("no RECEIPT in time")):
                done_ns: int = waiter.get()
        except StompError:
            raise
        except Exception as exc:
            raise StompSubscribeFailed(f"SUBSCRIBE {destination} failed: {exc}") from exc
        finally:
            self._receipts.pop(receipt, None)
        return (done_ns - start) / 1e6

    def close(self) -> None:
        """DISCONNECT (waiting up to ``close_timeout`` for its receipt), then close the socket."""
        self._closing = True
        conn = self._conn
        if conn is not None and not self.lost.is_set() and conn.is_connected():
            try:
                with gevent.Timeout(self.close_timeout, False):
                    conn.disconnect(receipt=f"bye-{next(self._ids)}")
            except Exception as exc:  # already gone: nothing left to close politely
                log.debug("STOMP DISCONNECT failed: %s", exc)
        self._teardown()

    # --- internals -------------------------------------------------------------
    def _ended(self) -> None:
        """stomp.py says the connection is gone (receiver greenlet)."""
        for waiter in self._receipts.values():
            if not waiter.ready():
                waiter.set_exception(StompSubscribeFailed("connection ended"))
        if self._connected is not None and not self._connected.ready():
            reason = self.last_error or "connection closed before CONNECTED"
            self._connected.set_exception(StompConnectFailed(reason))
        if not self.last_error and not self._closing:
            self.last_error = "connection closed by the server"
        self.lost.set()

    def _teardown(self) -> None:
        conn = self._conn
        if conn is None:
            self.lost.set()
            return
        transport = conn.transport
        transport.running = False
        try:
            transport.disconnect_socket()
        except Exception as exc:  # a socket already half-closed by the peer
            log.debug("STOMP socket close failed: %s", exc)
        # the receiver greenlet ends by itself: its read fails on the closed socket
        self._conn = None
        self.lost.set()
