"""`python -m pipeline.gateway`: serve the gateway with uvicorn (uvloop + httptools).

Settings come from the environment (`pipeline._service.run_service`). A bad
setting or a taken port is one line, `pipeline: <sentence>`, on stderr and exit 2. SIGTERM/SIGINT:
stop accepting, close the WebSockets, stop the Redis reader and MQTT, exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
from collections.abc import Iterator
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from pipeline._service import run_service
from pipeline.config import Settings
from pipeline.exceptions import PortTaken
from pipeline.gateway._metrics import GatewayStats
from pipeline.gateway.app import create_app

log = logging.getLogger("pipeline.gateway")


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # uvicorn re-raises the signal after its graceful shutdown, so the process
        # would end "killed by SIGTERM"; a service that shut down cleanly exits 0.
        previous = {
            sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def request_deadline(timeout_s: float, stats: GatewayStats) -> type[HttpToolsProtocol]:
    """uvicorn's HTTP protocol, closing a connection that has not sent a whole request head
    ``timeout_s`` after it opened (uvicorn would hold it forever; a WebSocket upgrade is
    such a request). Counted as ``rejected{reason="connect_timeout"}``."""

    class DeadlineProtocol(HttpToolsProtocol):
        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._deadline = self.loop.call_later(timeout_s, self._deadline_passed)

        def on_headers_complete(self) -> None:
            self._cancel_deadline()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_deadline()
            super().connection_lost(exc)

        def _cancel_deadline(self) -> None:
            # a cancelled handle still holds its callback, this protocol's bound method:
            # dropped, so a closed connection is freed without a full collection
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _deadline_passed(self) -> None:
            self._deadline = None
            if self.cycle is None and not self.transport.is_closing():
                stats.rejected["connect_timeout"] += 1
                self.transport.close()

    return DeadlineProtocol


class WebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's ``websockets-sansio`` protocol, freed by reference counting once lost.

    websockets' ``Protocol`` parses with a generator that holds the protocol
    (``self.parser = self.parse()``): a reference cycle per connection, which only a
    full collection reclaims, and the gateway runs one only when quiet
    (``pipeline/_gc.py``). Measured with ``python -m bench gateway-churn`` before this
    and the ``KeepServerSend`` fix: 20 KB per connection churned, never given back.
    The connection is gone here, so nothing parses again: the generator is closed.
    """

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.conn.parser.close()


def main() -> int:
    return run_service(serve)


def serve(settings: Settings) -> int:
    host, port = settings.gateway_host, settings.gateway_port
    try:
        # Bind here rather than in uvicorn: a taken port becomes one clear sentence.
        sock = socket.create_server((host, port), backlog=2048)
    except OSError as exc:
        raise PortTaken(
            f"cannot listen on {host}:{port} ({exc.strerror}); set GATEWAY_PORT to a free port."
        ) from None
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        loop="uvloop",
        http=request_deadline(settings.gateway_connect_timeout_ms / 1000, app.state.gateway.stats),
        ws=WebSocketProtocol,  # websockets-sansio (raw_writer relies on it)
        ws_per_message_deflate=False,  # compression would cost CPU per frame per client
        ws_max_size=settings.gateway_max_frame_bytes,
        lifespan="on",
        access_log=False,  # one line per problem, never per request
        log_config=None,
        log_level="warning",
        timeout_graceful_shutdown=3,
        backlog=2048,
    )
    server = _Server(config)
    log.info("event=gateway_listening url=http://%s:%d", host, port)
    server.run(sockets=[sock])
    if not server.started:
        log.error("event=gateway_start_failed")
        return 1
    log.info("event=gateway_stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
