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

A lost connection is reopened with a jittered backoff and resumed after the
last ``stream_id`` read (``?since=<id>``, ``users._subscriber``): what the
gateway replays counts as late; what it cannot replay is this subscriber's loss.

websocket-client sets TCP_NODELAY on its sockets
(``websocket._socket.DEFAULT_SOCKET_OPTION``) and its UTF-8 check is switched off
(``skip_utf8_validation``: ~35 µs per 300-byte frame in pure Python; the JSON
parser rejects bad UTF-8 anyway, counted as ``untraced``).
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING
from urllib.parse import urlencode

import gevent
import websocket
from gevent.event import Event

import telemetry
from users._config import settings
from users._subscriber import PushSubscriber
from users._ws_common import WsEndpoint, fire, ws_endpoint
from users.exceptions import WsConnectFailed, WsConnectionLost, WsError

if TYPE_CHECKING:
    from locust.env import Environment

__all__ = ["REQUEST_TYPE", "WsSubscriber", "WsError", "WsConnectFailed", "WsConnectionLost"]

REQUEST_TYPE = "WS"

_DATA = (websocket.ABNF.OPCODE_TEXT, websocket.ABNF.OPCODE_BINARY)
_CLOSE = websocket.ABNF.OPCODE_CLOSE
#: The gateway's ``"stream_id": "<id>"`` in a pushed frame, found without decoding the JSON
#: (the ledger decodes it once); an id is a Redis Stream id, ``<ms>-<n>``.
_STREAM_ID = re.compile(rb'"stream_id"\s*:\s*"([^"\\]+)"')


class WsSubscriber(PushSubscriber):
    """One raw WebSocket connection to the gateway's ``/coordinates`` stream, fed to the ledger.

    Every ``None`` attribute takes its value from the matching option. After a
    reconnect the stream resumes after the last ``stream_id`` read
    (``?since=<id>`` on the URL; ``users._subscriber``).
    """

    abstract = True

    #: Gateway base URL (``http://host:port``; https -> wss). None = ``--gateway-url``.
    url: str | None = None
    #: The stream's path on the gateway (may carry a query; ``since`` is appended to it).
    path: str = "/coordinates"
    #: Extra HTTP headers of the upgrade request (e.g. ``{"Authorization": "Bearer …"}``).
    headers: Mapping[str, str] = {}
    connect_timeout: float = 10.0

    request_type = REQUEST_TYPE
    ledger_kind = "ws"

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self.endpoint: WsEndpoint = ws_endpoint(
            self.url or settings(environment).gateway_url, self.path
        )
        self.connect_name = f"connect:{self.path.partition('?')[0]}"
        self.ws: websocket.WebSocket | None = None
        #: frames received over the user's lifetime (all connections)
        self.frames = 0
        #: the URL of the last connect attempt (with ``since`` when it resumed)
        self.last_url = ""
        self.lost = Event()
        self.lost.set()
        self.last_error = ""
        self._reader: gevent.Greenlet | None = None

    # --- PushSubscriber -----------------------------------------------------------------
    def has_session(self) -> bool:
        return self.ws is not None

    def lost_event(self) -> Event:
        return self.lost

    def lost_error(self) -> Exception:
        return WsConnectionLost(self.last_error or "connection closed")

    def open_session(self, since: str | None) -> bool:
        url = self.endpoint.url
        if since is not None:
            url += ("&" if "?" in url else "?") + urlencode({"since": since})
        self.last_url = url
        start = time.perf_counter()
        try:
            with gevent.Timeout(self.connect_timeout, WsConnectFailed("no upgrade in time")):
                ws = websocket.create_connection(
                    url,
                    header=dict(self.headers),
                    skip_utf8_validation=True,
                    # the handshake is bounded by the gevent.Timeout; a socket timeout
                    # would end a quiet stream
                    timeout=None,
                )
        except (WsError, websocket.WebSocketException, OSError) as exc:
            err = exc if isinstance(exc, WsError) else WsConnectFailed(f"{url}: {exc}")
            fire(self.environment, REQUEST_TYPE, self.connect_name, _ms(start), err)
            return False
        fire(self.environment, REQUEST_TYPE, self.connect_name, _ms(start))
        self.ws = ws
        self.last_error = ""
        self.lost.clear()
        self.subscribed()
        self._reader = gevent.spawn(self._read, ws, self.sub)
        return True

    def close_session(self) -> None:
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

    # --- the reader ---------------------------------------------------------------------
    def _read(self, ws: websocket.WebSocket, sub: telemetry.Subscriber | None) -> None:
        """The reader greenlet: one blocking ``recv`` per frame on the gevent socket."""
        recv = ws.recv_data
        try:
            while True:
                opcode, data = recv()
                recv_ns = time.time_ns()
                if opcode in _DATA:
                    self.frames += 1
                    found = _STREAM_ID.search(data)
                    if found is not None:
                        self.last_stream_id = found.group(1).decode()
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


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1e3
