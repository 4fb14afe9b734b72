"""`python -m pipeline.gateway`: serve the gateway with uvicorn (uvloop + httptools).

Settings come from the environment (`pipeline._service.run_service`). A bad
setting or a taken port is one line, `pipeline: <sentence>`, on stderr and exit 2. SIGTERM/SIGINT:
stop accepting, close the WebSockets, stop the Redis reader and MQTT, exit 0.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import sys
from collections.abc import Iterator
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

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
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._deadline = self.loop.call_later(timeout_s, self._deadline_passed)

        def on_headers_complete(self) -> None:
            self._deadline.cancel()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._deadline.cancel()
            super().connection_lost(exc)

        def _deadline_passed(self) -> None:
            if self.cycle is None and not self.transport.is_closing():
                stats.rejected["connect_timeout"] += 1
                self.transport.close()

    return DeadlineProtocol


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
        ws="websockets-sansio",
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
