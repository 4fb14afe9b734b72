"""The two WebSocket endpoints: raw JSON at `/coordinates`, STOMP at `/ws`.

Each connection is a receive loop (this handler) plus one sender task draining
the connection's :class:`Outbox`; the hub only ever appends to outboxes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from fastapi import WebSocket, WebSocketDisconnect

from pipeline.gateway._hub import Outbox, run_sender
from pipeline.gateway._stomp_server import SUBPROTOCOLS, StompSession

if TYPE_CHECKING:
    from pipeline.gateway.app import Gateway

log = logging.getLogger("pipeline.gateway")

#: How long a closing connection may take to write what is still queued (ERROR, RECEIPT).
_FLUSH_TIMEOUT_S = 5.0


async def _send_loop(outbox: Outbox, websocket: WebSocket) -> None:
    try:
        await run_sender(outbox, websocket.send_text, websocket.close)
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


async def serve_coordinates(websocket: WebSocket, gateway: Gateway) -> None:
    """Raw WebSocket: one text frame per update (stream) or per snapshot."""
    await websocket.accept()
    outbox = Outbox("websocket", gateway.settings.client_queue, gateway.stats)
    gateway.hub.ws_clients.add(outbox)
    sender = asyncio.create_task(_send_loop(outbox, websocket))
    try:
        while True:  # the client has nothing to say; read only to notice the close
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
    finally:
        gateway.hub.ws_clients.discard(outbox)
        outbox.discard()
        await _finish(sender, flush=False)


async def serve_stomp(websocket: WebSocket, gateway: Gateway) -> None:
    """STOMP 1.2 (1.1, 1.0) over WebSocket."""
    offered = websocket.scope.get("subprotocols") or []
    await websocket.accept(subprotocol=next((p for p in SUBPROTOCOLS if p in offered), None))
    outbox = Outbox("stomp", gateway.settings.client_queue, gateway.stats)
    gateway.hub.stomp_clients.add(outbox)
    session = StompSession(
        gateway.hub, outbox, gateway.stats, gateway.settings.gateway_token, websocket.headers
    )
    sender = asyncio.create_task(_send_loop(outbox, websocket))
    try:
        while not session.closing:
            if session.receive_timeout_s:
                try:
                    message = await asyncio.wait_for(websocket.receive(), session.receive_timeout_s)
                except TimeoutError:
                    session.heartbeat_missed()
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
