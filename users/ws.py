"""WsSubscriber: the gateway's raw WebSocket stream ``/coordinates``, every frame into the ledger.

One Locust user = one WebSocket connection on StompSubscriber's engine
(``users._ws_transport``: a non-blocking socket read by the process's pump
greenlet, the sans-IO codec ``users._ws_codec``; no reader greenlet per
connection). Each text frame goes, with the time it was read, to the
end-to-end ledger as kind ``ws`` (paths ``mqtt→ws``, ``kafka→ws``). In the
gateway's ``snapshot`` push mode a frame is a batch (``{"type": "snapshot",
"devices": [...]}``); the ledger accounts for it as staleness instead of
sequence loss.

Locust entries (``request_type="WS"``):

=========================  ===============================================  ===================
name                       response_time                                    exception
=========================  ===============================================  ===================
``connect:/coordinates``   TCP connect start -> HTTP 101 (upgrade done), ms  refused, bad status
                                                                              (401: no valid
                                                                              token), timeout
``connection lost``        ``None`` (an event, not a duration)              why it ended
=========================  ===============================================  ===================

The upgrade carries ``Authorization: Bearer <token>``: ``--token``, or one minted
from ``--jwt-secret`` (by default the running embedded stack's secret).

A lost connection is reopened with a jittered backoff and resumed after the
last ``stream_id`` read (``?since=<id>``, ``users._subscriber``): what the
gateway replays counts as late; what it cannot replay is this subscriber's loss.

Every socket has TCP_NODELAY; text frames are not UTF-8 checked here (the JSON
parser rejects bad UTF-8 anyway, counted as ``untraced``).
"""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING
from urllib.parse import urlencode

import gevent
from gevent.event import AsyncResult, Event

from users._config import settings
from users._mqtt_loop import Pump, get_pump
from users._mqtt_transport import CONNECTED
from users._subscriber import PushSubscriber
from users._ws_common import WsEndpoint, fire, ws_endpoint
from users._ws_transport import WsTransport
from users.exceptions import WsConnectFailed, WsConnectionLost, WsError

if TYPE_CHECKING:
    from locust.env import Environment

__all__ = ["REQUEST_TYPE", "WsSubscriber", "WsError", "WsConnectFailed", "WsConnectionLost"]

REQUEST_TYPE = "WS"

#: The gateway's ``"stream_id": "<id>"`` in a pushed frame, found without decoding the JSON
#: (the ledger decodes it once); an id is a Redis Stream id, ``<ms>-<n>``.
_STREAM_ID = re.compile(rb'"stream_id"\s*:\s*"([^"\\]+)"')
_numbers = itertools.count()


class WsConnection(WsTransport):
    """One raw WebSocket stream: each data frame to ``on_frame(data, recv_ns)`` (pump greenlet)."""

    __slots__ = ("on_frame", "on_open", "frames", "last_stream_id", "lost", "_opened")

    def __init__(
        self,
        host: str,
        port: int,
        path: str,
        *,
        on_frame: Callable[[bytes, int], None],
        tls: bool = False,
        headers: Mapping[str, str] | None = None,
        pump: Pump | None = None,
        source_address: str | None = None,
        connect_timeout: float = 10.0,
    ) -> None:
        super().__init__(
            host,
            port,
            path,
            tls=tls,
            headers=tuple((headers or {}).items()),
            connect_timeout=connect_timeout,
            pump=pump,
            source_address=source_address,
        )
        self.on_frame = on_frame
        #: called in the pump greenlet once the upgrade is done, before the first frame
        self.on_open: Callable[[], None] | None = None
        #: data frames received over the connection's lifetime (all connections)
        self.frames = 0
        #: the ``stream_id`` of the last frame that had one
        self.last_stream_id: str | None = None
        #: set when the current connection ended (or there is none)
        self.lost = Event()
        self.lost.set()
        self._opened: AsyncResult | None = None

    def connect(self, path: str, timeout: float) -> None:
        """Open ``path`` (a query allowed) and wait for the upgrade; raise WsConnectFailed."""
        self.path = path
        waiter = self._opened = AsyncResult()
        self.lost.clear()
        try:
            with gevent.Timeout(timeout, WsConnectFailed("no upgrade in time")):
                self.open()
                waiter.get()
        except WsError as exc:
            self._finish()
            self.lost.set()
            # as StompClient.connect: a failed attempt leaves no reference cycle
            raise exc.with_traceback(None) from None
        finally:
            self._opened = None
            del waiter  # it holds the exception too

    def close(self) -> None:
        """A close frame; the server closes first (no waiting here), or the ticker gives up."""
        self.shutdown()
        self.lost.set()

    def _ws_open(self) -> None:
        self.state = CONNECTED
        if self.on_open is not None:
            self.on_open()
        if self._opened is not None:
            self._opened.set(None)

    def _ws_message(self, opcode: int, payload: bytes, recv_ns: int) -> None:
        self.frames += 1
        found = _STREAM_ID.search(payload)
        if found is not None:
            self.last_stream_id = found.group(1).decode()
        self.on_frame(payload, recv_ns)

    def _ws_ended(self, reason: str, connected: bool) -> None:
        if self._opened is not None and not self._opened.ready():
            self._opened.set_exception(WsConnectFailed(self.last_error or reason))
        self.lost.set()


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
    #: Extra HTTP headers of the upgrade request.
    headers: Mapping[str, str] = {}
    #: Bearer token sent as ``Authorization: Bearer <token>`` on the upgrade; "" = none.
    #: None = ``--token`` (or one minted from ``--jwt-secret``).
    token: str | None = None
    #: Source addresses the connections spread over (e.g. 127.0.0.2-5); () = the kernel's choice.
    source_addresses: Sequence[str] = ()
    connect_timeout: float = 10.0

    request_type = REQUEST_TYPE
    ledger_kind = "ws"

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        config = settings(environment)
        self.endpoint: WsEndpoint = ws_endpoint(self.url or config.gateway_url, self.path)
        token = self.token if self.token is not None else config.gateway_token
        headers = dict(self.headers)
        if token:
            headers.setdefault("Authorization", f"Bearer {token}")
        self.connect_name = f"connect:{self.path.partition('?')[0]}"
        sources = self.source_addresses
        #: the connection (None before the first session and after ours ended)
        self.ws: WsConnection | None = None
        self._conn = WsConnection(
            self.endpoint.host,
            self.endpoint.port,
            self.endpoint.path,
            on_frame=self._on_frame,
            tls=self.endpoint.tls,
            headers=headers,
            pump=get_pump(environment),
            source_address=sources[next(_numbers) % len(sources)] if sources else None,
            connect_timeout=self.connect_timeout,
        )
        # in the pump greenlet, once upgraded: no frame (a replay follows at once) is missed
        self._conn.on_open = self.subscribed
        #: the URL of the last connect attempt (with ``since`` when it resumed)
        self.last_url = ""

    @property
    def frames(self) -> int:
        """Data frames received over the user's lifetime (all connections)."""
        return self._conn.frames

    @property  # type: ignore[override]
    def last_stream_id(self) -> str | None:
        """The ``stream_id`` of the last frame that had one (where the next session resumes)."""
        conn: WsConnection | None = self.__dict__.get("_conn")
        return conn.last_stream_id if conn is not None else None

    @last_stream_id.setter
    def last_stream_id(self, value: str | None) -> None:
        conn: WsConnection | None = self.__dict__.get("_conn")
        if conn is not None:
            conn.last_stream_id = value

    @property
    def lost(self) -> Event:
        return self._conn.lost

    @property
    def last_error(self) -> str:
        return self._conn.last_error

    # --- PushSubscriber -----------------------------------------------------------------
    def has_session(self) -> bool:
        return self.ws is not None

    def lost_event(self) -> Event:
        return self._conn.lost

    def lost_error(self) -> Exception:
        return WsConnectionLost(self._conn.last_error or "connection closed")

    def open_session(self, since: str | None) -> bool:
        path = self.endpoint.path
        query = ""
        if since is not None:
            query = ("&" if "?" in path else "?") + urlencode({"since": since})
        self.last_url = self.endpoint.url + query
        start = time.perf_counter()
        try:
            self._conn.connect(path + query, self.connect_timeout)
        except WsError as exc:
            fire(self.environment, REQUEST_TYPE, self.connect_name, _ms(start), exc)
            return False
        fire(self.environment, REQUEST_TYPE, self.connect_name, _ms(start))
        self.ws = self._conn
        return True

    def close_session(self) -> None:
        ws, self.ws = self.ws, None
        if ws is not None:
            ws.close()
        self._conn.lost.set()

    # --- frames (pump greenlet) ---------------------------------------------------------
    def _on_frame(self, data: bytes, recv_ns: int) -> None:
        sub = self.sub
        if sub is not None:
            sub.received(data, recv_ns)


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1e3
