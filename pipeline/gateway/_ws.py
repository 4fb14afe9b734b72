"""The two WebSocket endpoints: raw JSON at `/coordinates`, STOMP at `/ws`.

Each connection is a receive loop (this handler) plus one sender task draining
the connection's :class:`Outbox`; the hub only ever appends to outboxes.

Raw WebSocket frames carry ``"stream_id"``; ``/coordinates?since=<id>`` replays
every update after that id before the live ones. A ``since`` that is not a stream
id closes the connection with 1008 and the reason; a replay Redis cannot serve
closes it with 1013 (try again later).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from fastapi import WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse

from pipeline.gateway._guard import bearer
from pipeline.gateway._hub import Outbox, run_sender
from pipeline.gateway._stomp_server import SUBPROTOCOLS, StompSession
from pipeline.gateway._stream import parse_id

if TYPE_CHECKING:
    from pipeline.gateway.app import Gateway

log = logging.getLogger("pipeline.gateway")

#: How long a closing connection may take to write what is still queued (ERROR, RECEIPT).
_FLUSH_TIMEOUT_S = 5.0
#: RFC 6455 section 7.4.1: 1008 policy violation; IANA registry: 1013 try again later.
CLOSE_BAD_SINCE = 1008
CLOSE_TRY_AGAIN = 1013
BAD_SINCE_REASON = "since must be a stream id such as 1700000000000-0"


#: Where :class:`KeepServerSend` leaves the server's own ASGI ``send`` in a WebSocket scope.
SERVER_SEND = "pipeswarm.server_send"


class KeepServerSend:
    """ASGI middleware: note the server's ``send`` of a WebSocket (Starlette wraps it later)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        scope[SERVER_SEND] = send  # the server's bound method: scope -> protocol -> scope
        try:
            await self.app(scope, receive, send)
        finally:
            del scope[SERVER_SEND]  # so that a closed connection is freed without a full GC


def raw_writer(websocket: WebSocket) -> Callable[[bytes], Awaitable[None]] | None:
    """Write finished WebSocket frames straight to the connection's transport, or None.

    The hub encodes each frame once for every subscriber; sending it through
    ASGI would frame it again per subscriber and per message. uvicorn's
    ``websockets-sansio`` protocol (what ``python -m pipeline.gateway`` runs,
    permessage-deflate off, so a frame on the wire is exactly these bytes) owns
    the ASGI ``send`` that :class:`KeepServerSend` noted: its transport takes the bytes after its own flow
    control (``writable``, cleared while the socket's buffer is full). Under any
    other server this is None and frames go through ``send_text``.
    """
    proto: Any = getattr(websocket.scope.get(SERVER_SEND), "__self__", None)
    transport = getattr(proto, "transport", None)
    writable = getattr(proto, "writable", None)
    if transport is None or not isinstance(writable, asyncio.Event):
        return None
    if not hasattr(proto, "close_sent") or not hasattr(proto, "disconnected"):
        return None

    async def write(data: bytes) -> None:
        if not writable.is_set():
            await writable.wait()
        if proto.disconnected or proto.close_sent or transport.is_closing():
            raise WebSocketDisconnect(1006)
        transport.write(data)

    return write


async def _send_loop(outbox: Outbox, websocket: WebSocket) -> None:
    async def close() -> None:
        await websocket.close(outbox.close_code, outbox.close_reason or None)

    try:
        await run_sender(outbox, websocket.send_text, close, raw_writer(websocket))
    except (WebSocketDisconnect, OSError, RuntimeError):
        return  # the peer went away mid-send; the receive loop sees the close too
    except Exception:
        log.exception("event=sender_failed protocol=%s", outbox.protocol)
    finally:
        outbox.discard()


async def _finish(sender: asyncio.Task[None], flush: bool) -> None:
    if flush:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(sender), _FLUSH_TIMEOUT_S)
    if not sender.done():
        sender.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sender


async def _deny(websocket: WebSocket, why: str) -> None:
    """Refuse the upgrade with HTTP 401 (the ASGI denial response), or, under a server
    without that extension, close with 1008 before accepting (a 403)."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        headers = {"WWW-Authenticate": 'Bearer error="invalid_token"'}
        await websocket.send_denial_response(JSONResponse({"detail": why}, 401, headers=headers))
    else:
        await websocket.close(CLOSE_BAD_SINCE, why)


async def serve_coordinates(websocket: WebSocket, gateway: Gateway) -> None:
    """Raw WebSocket: one text frame per update (stream) or per snapshot."""
    token = bearer(websocket.headers.get("authorization")) or websocket.query_params.get("token")
    why = gateway.auth.refuse(token or "", "websocket")
    if why is not None:
        await _deny(websocket, why)
        return
    await websocket.accept()
    since_raw = websocket.query_params.get("since")
    since = None if since_raw is None else parse_id(since_raw)
    if since_raw is not None and since is None:
        await websocket.close(CLOSE_BAD_SINCE, BAD_SINCE_REASON)
        return
    hub = gateway.hub
    outbox = Outbox("websocket", gateway.settings.client_queue, gateway.stats)
    replay = None
    if since is None or hub.snapshot_mode:  # snapshot mode: the next batch holds everything
        hub.ws_clients.add(outbox)
    else:

        def failed() -> None:
            reason = "replay failed: Redis did not answer; reconnect with the same since"
            outbox.close_after_drain(CLOSE_TRY_AGAIN, reason)

        replay = gateway.replayer.start(outbox, None, since, failed)
    sender = asyncio.create_task(_send_loop(outbox, websocket))
    try:
        while True:  # the client has nothing to say; read only to notice the close
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
    finally:
        if replay is not None:
            replay.cancel()
        hub.remove_ws(outbox)
        closing = outbox.closed  # a failed replay: let the sender write the close reason
        if not closing:
            outbox.discard()
        await _finish(sender, flush=closing)


async def serve_stomp(websocket: WebSocket, gateway: Gateway) -> None:
    """STOMP 1.2 (1.1, 1.0) over WebSocket."""
    offered = websocket.scope.get("subprotocols") or []
    await websocket.accept(subprotocol=next((p for p in SUBPROTOCOLS if p in offered), None))
    outbox = Outbox("stomp", gateway.settings.client_queue, gateway.stats)
    gateway.hub.stomp_clients.add(outbox)
    settings = gateway.settings
    session = StompSession(
        gateway.hub,
        outbox,
        gateway.stats,
        gateway.auth,
        websocket.headers,
        gateway.replayer,
        max_subscriptions=settings.gateway_max_subscriptions,
        max_body_bytes=settings.gateway_max_frame_bytes,
        query_token=websocket.query_params.get("token", ""),
    )
    loop = asyncio.get_running_loop()
    connect_s = settings.gateway_connect_timeout_ms / 1000
    connect_by = loop.time() + connect_s  # whatever else arrives (heart-beats) meanwhile
    sender = asyncio.create_task(_send_loop(outbox, websocket))
    try:
        while not session.closing:
            # before CONNECT: what is left of the connect deadline; after: the heart-beat
            if session.connected:
                timeout = session.receive_timeout_s
            else:
                timeout = max(connect_by - loop.time(), 0.001)
            if timeout:
                try:
                    message = await asyncio.wait_for(websocket.receive(), timeout)
                except TimeoutError:
                    if session.connected:
                        session.heartbeat_missed()
                    else:
                        session.connect_timed_out(connect_s)
                    break
            else:
                message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            data = message.get("bytes")
            if data is None:
                data = (message.get("text") or "").encode()
            session.feed(data)
    finally:
        session.release()
        gateway.hub.stomp_clients.discard(outbox)
        if not session.closing:
            outbox.discard()
        await _finish(sender, flush=session.closing)
