"""WsSubscriber: the gateway's raw WebSocket stream ``/coordinates``, every frame into the ledger.

One Locust user = one ``websocket-client`` connection and one reader greenlet
that blocks in ``recv`` on the (gevent) socket and hands each text frame, with
the time it was read, to the end-to-end ledger as kind ``ws`` (paths
``mqtt→ws``, ``kafka→ws``). In the gateway's ``snapshot`` push mode a frame is
a batch (``{"type": "snapshot", "devices": [...]}``); the ledger accounts for it
as staleness instead of sequence loss.

Locust entries (``request_type="WS"``):

=========================  ===============================================  ===================
name                       response_time                                    exception
=========================  ===============================================  ===================
``connect:/coordinates``   TCP connect start -> HTTP 101 (upgrade done), ms  refused, bad status,
                                                                              timeout
``connection lost``        ``None`` (an event, not a duration)              why it ended
=========================  ===============================================  ===================

A lost connection is reopened with a jittered backoff; what was published
meanwhile is this subscriber's loss in the ledger.

websocket-client sets TCP_NODELAY on its sockets
(``websocket._socket.DEFAULT_SOCKET_OPTION``) and its UTF-8 check is switched off
(``skip_utf8_validation``: ~35 µs per 300-byte frame in pure Python; the JSON
parser rejects bad UTF-8 anyway, counted as ``untraced``).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

import gevent
import websocket
from gevent.event import Event
from locust import User, constant, task

import telemetry
from users._config import settings
from users._ws_common import Backoff, WsEndpoint, fire, ws_endpoint

if TYPE_CHECKING:
    from locust.env import Environment

__all__ = ["REQUEST_TYPE", "WsSubscriber", "WsError", "WsConnectFailed", "WsConnectionLost"]

REQUEST_TYPE = "WS"

_DATA = (websocket.ABNF.OPCODE_TEXT, websocket.ABNF.OPCODE_BINARY)
_CLOSE = websocket.ABNF.OPCODE_CLOSE


class WsError(Exception):
    """Base of the WebSocket subscriber's errors (the exception of a failed request event)."""


class WsConnectFailed(WsError):
    """The WebSocket upgrade did not complete: refused, a non-101 answer, or a timeout."""


class WsConnectionLost(WsError):
    """An open connection ended without us closing it."""


class WsSubscriber(User):
    """One raw WebSocket connection to the gateway's ``/coordinates`` stream, fed to the ledger.

    Every ``None`` attribute takes its value from the matching option.
    """

    abstract = True

    #: Gateway base URL (``http://host:port``; https -> wss). None = ``--gateway-url``.
    url: str | None = None
    #: The stream's path on the gateway.
    path: str = "/coordinates"
    #: Extra HTTP headers of the upgrade request (e.g. ``{"Authorization": "Bearer …"}``).
    headers: Mapping[str, str] = {}
    connect_timeout: float = 10.0
    #: Reconnect backoff: doubles from ``reconnect_min`` up to ``reconnect_max`` (s), jittered.
    reconnect_min: float = 0.2
    reconnect_max: float = 10.0

    # The task only supervises the connection; frames arrive in the reader greenlet.
    wait_time = constant(0)

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self.endpoint: WsEndpoint = ws_endpoint(
            self.url or settings(environment).gateway_url, self.path
        )
        self.connect_name = f"connect:{self.path}"
        self.backoff = Backoff(self.reconnect_min, self.reconnect_max)
        self.ws: websocket.WebSocket | None = None
        self.sub: telemetry.Subscriber | None = None
        #: frames received over the user's lifetime (all connections)
        self.frames = 0
        self.lost = Event()
        self.lost.set()
        self.last_error = ""
        self._reader: gevent.Greenlet | None = None
        self._ledger: telemetry.Ledger | None = None
        self._stopping = False

    # --- Locust lifecycle -----------------------------------------------------
    def on_start(self) -> None:
        self._ledger = telemetry.get_ledger(self.environment)
        self._connect()

    def on_stop(self) -> None:
        self._stopping = True
        self._close()
        if self.sub is not None:
            self.sub.close()

    @task
    def keep_connected(self) -> None:
        """Wait while the stream is open; when it ends, report it and reconnect."""
        if self.ws is not None:
            self.lost.wait()
            if self._stopping:
                return
            fire(
                self.environment,
                REQUEST_TYPE,
                "connection lost",
                None,
                WsConnectionLost(self.last_error or "connection closed"),
            )
            self._close()
        gevent.sleep(self.backoff.next())
        self._connect()

    # --- connection ---------------------------------------------------------------
    def _connect(self) -> bool:
        start = time.perf_counter()
        try:
            with gevent.Timeout(self.connect_timeout, WsConnectFailed("no upgrade in time")):
                ws = websocket.create_connection(
                    self.endpoint.url,
                    header=dict(self.headers),
                    skip_utf8_validation=True,
                    # the handshake is bounded by the gevent.Timeout; a socket timeout
                    # would end a quiet stream
                    timeout=None,
                )
        except (WsError, websocket.WebSocketException, OSError) as exc:
            err = (
                exc if isinstance(exc, WsError) else WsConnectFailed(f"{self.endpoint.url}: {exc}")
            )
            fire(self.environment, REQUEST_TYPE, self.connect_name, _ms(start), err)
            return False
        fire(self.environment, REQUEST_TYPE, self.connect_name, _ms(start))
        self.ws = ws
        self.last_error = ""
        self.lost.clear()
        if self.sub is None and self._ledger is not None:
            # lives across reconnects: what a reconnect missed is this subscriber's loss
            self.sub = self._ledger.subscriber("ws")
        self._reader = gevent.spawn(self._read, ws, self.sub)
        self.backoff.reset()
        return True

    def _read(self, ws: websocket.WebSocket, sub: telemetry.Subscriber | None) -> None:
        """The reader greenlet: one blocking ``recv`` per frame on the gevent socket."""
        recv = ws.recv_data
        try:
            while True:
                opcode, data = recv()
                recv_ns = time.time_ns()
                if opcode in _DATA:
                    self.frames += 1
                    if sub is not None:
                        sub.received(data, recv_ns)
                elif opcode == _CLOSE:
                    self.last_error = "closed by the server"
                    return
        except (websocket.WebSocketException, OSError) as exc:
            self.last_error = str(exc) or type(exc).__name__
        finally:
            if self.ws is ws:
                self.lost.set()

    def _close(self) -> None:
        ws, self.ws = self.ws, None
        reader, self._reader = self._reader, None
        if reader is not None and reader is not gevent.getcurrent():
            reader.kill(block=True, timeout=1)  # one reader per socket at a time
        if ws is not None:
            # a close frame without waiting for the answer, then the socket
            with contextlib.suppress(websocket.WebSocketException, OSError):
                ws.send_close()
            ws.shutdown()
        self.lost.set()


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1e3
