"""The gateway application: ``create_app(settings)`` wires Redis, MQTT and the clients.

Redis stream `pipeswarm:stream` --(one XREAD reader)--> Hub --(outbox per client)--> /coordinates, /ws
                                 --(XRANGE, per resubscribing client)--> replay, then live
REST /api/* reads Redis; POST /api/commands/{id} publishes to MQTT;
POST /api/ingest/{id} produces a device message into Kafka; /metrics scrapes stats
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as aredis
from fastapi import FastAPI, Request, WebSocket
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from pipeline._gc import Freezer
from pipeline.config import Settings
from pipeline.gateway import _rest, _ws
from pipeline.gateway._commands import CommandPublisher
from pipeline.gateway._guard import READ_METHODS, Authenticator, Guard
from pipeline.gateway._hub import Hub
from pipeline.gateway._ingest import Ingest
from pipeline.gateway._metrics import GatewayStats, make_registry
from pipeline.gateway._replay import Replayer
from pipeline.gateway._updates import UpdateReader

log = logging.getLogger("pipeline.gateway")

DESCRIPTION = """
The last stage of the pipeswarm pipeline: live device coordinates out, commands in.

* `ws://HOST/coordinates` — raw WebSocket, one JSON text frame per update (`stream`),
  with `"stream_id"` (its id in the Redis update stream), or
  `{"type":"snapshot","sent_ns":…,"stream_id":…,"devices":[…]}` every interval (`snapshot`).
  `ws://HOST/coordinates?since=<stream_id>` first replays every update after that id.
* `ws://HOST/ws` — STOMP 1.2 over WebSocket; subscribe to `/topic/coordinates`
  (all devices) or `/topic/devices/{device_id}`. Each MESSAGE has a `stream-id`
  header; SUBSCRIBE with `since:<stream-id>` replays what came after it first
  (`replay-truncated:true` on the first frame when the stream no longer holds it all).
* `POST /api/ingest/{device_id}` — a device message over HTTP instead of MQTT, into the
  same Kafka topic after the bridge's checks.
* REST below; Prometheus metrics at `/metrics`.

Authentication (unless the gateway runs with `GATEWAY_AUTH=off`): a bearer token
(a JWT signed HS256 with the stack secret: `pipeline.auth.mint_token`) on every POST (`Authorization: Bearer <token>`), on
STOMP CONNECT (`passcode:<token>` or `Authorization:Bearer <token>`) and on the raw
WebSocket (`Authorization` header or `?token=<token>`); `GET /api/*` needs one only
with `GATEWAY_READS=token`. A missing, expired or forged token gets 401 (an ERROR
frame on STOMP). Request bodies above `GATEWAY_MAX_BODY_BYTES` (64 KiB) get 413.
"""


class Gateway:
    """Runtime state of one gateway: the hub, its Redis reader, the MQTT publisher."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stats = GatewayStats()
        self.auth = Authenticator(settings, self.stats)
        self.hub = Hub(settings, self.stats)
        self.reader = UpdateReader(settings.redis_url, self.hub, self.stats)
        self.replayer = Replayer(settings.redis_url, self.hub, self.stats)
        self.commands = CommandPublisher(settings.mqtt)
        self.ingest = Ingest(settings, self.stats)
        # bytes, never decoded: stored values are data to check, not text to trust
        self.redis = aredis.Redis.from_url(
            settings.redis_url,
            socket_timeout=2,
            socket_connect_timeout=2,
        )
        self.stats.connections = self.hub.connections
        self.stats.devices = lambda: len(self.hub.latest)
        self.stats.redis_up = lambda: self.reader.subscribed
        self.stats.mqtt_up = lambda: self.commands.connected
        self.registry = make_registry(self.stats)
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self.commands.start()
        self.ingest.start()
        self._tasks.append(asyncio.create_task(_supervise("redis_reader", self.reader.run)))
        self._tasks.append(asyncio.create_task(_supervise("heartbeats", self.hub.run_heartbeats)))
        freezer = Freezer(
            self.settings.gc_freeze_s,
            self.settings.gc_full_s,
            connections=lambda: sum(self.hub.connections().values()),
        )
        self._tasks.append(asyncio.create_task(_supervise("gc_freezer", freezer.run)))
        if self.hub.snapshot_mode:
            self._tasks.append(asyncio.create_task(_supervise("snapshots", self.hub.run_snapshots)))
        log.info(
            "event=gateway_started push_mode=%s snapshot_interval_ms=%d client_queue=%d",
            self.settings.push_mode,
            self.settings.snapshot_interval_ms,
            self.settings.client_queue,
        )

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await asyncio.to_thread(self.commands.stop)  # joins paho's thread
        await asyncio.to_thread(self.ingest.stop)  # waits for what Kafka has not acknowledged
        await self.redis.aclose()
        await self.replayer.client.aclose()


async def _supervise(name: str, run: Callable[[], Awaitable[None]]) -> None:
    """Keep a background loop alive: an unexpected error is logged once and it restarts."""
    while True:
        try:
            await run()
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("event=task_failed task=%s (restarting in 1 s)", name)
            await asyncio.sleep(1)


def create_app(settings: Settings) -> FastAPI:
    """Build the gateway app; Redis and MQTT connect when the app starts (lifespan)."""
    gateway = Gateway(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await gateway.start()
        try:
            yield
        finally:
            await gateway.stop()

    app = FastAPI(
        title="pipeswarm gateway",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.gateway = gateway
    app.add_middleware(_ws.KeepServerSend)  # the fan-out writes frames to the socket itself
    # tokens and body limits for every HTTP route, present and future
    app.add_middleware(Guard, authenticator=gateway.auth, max_body=settings.gateway_max_body_bytes)
    app.include_router(_rest.router)
    app.openapi = lambda: _openapi_with_security(app, gateway.auth)  # type: ignore[method-assign]

    @app.exception_handler(RequestValidationError)
    async def count_invalid_commands(request: Request, exc: RequestValidationError) -> Response:
        if request.method == "POST" and request.url.path.startswith("/api/commands/"):
            gateway.stats.commands["invalid"] += 1
        elif request.method == "POST" and request.url.path.startswith("/api/ingest/"):
            gateway.stats.ingest["invalid"] += 1
        return await request_validation_exception_handler(request, exc)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(gateway.registry), media_type=CONTENT_TYPE_LATEST)

    @app.websocket("/coordinates")
    async def coordinates_ws(websocket: WebSocket) -> None:
        await _ws.serve_coordinates(websocket, gateway)

    @app.websocket("/ws")
    async def stomp_ws(websocket: WebSocket) -> None:
        await _ws.serve_stomp(websocket, gateway)

    return app


def _openapi_with_security(app: FastAPI, auth: Authenticator) -> dict[str, Any]:
    """FastAPI's schema plus the bearer scheme on the operations that need a token
    (what :class:`Guard` enforces; Swagger UI's *Authorize* button then works)."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    if auth.enabled:
        components = schema.setdefault("components", {})
        components.setdefault("securitySchemes", {})["bearer"] = {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
        }
        for path, operations in schema.get("paths", {}).items():
            for method, operation in operations.items():
                if auth.needs_token(method.upper(), path):
                    operation["security"] = [{"bearer": []}]
                    operation.setdefault("responses", {})["401"] = {
                        "description": "missing, expired or forged bearer token"
                    }
                if method.upper() not in READ_METHODS:
                    operation.setdefault("responses", {})["413"] = {
                        "description": "request body larger than GATEWAY_MAX_BODY_BYTES"
                    }
    app.openapi_schema = schema
    return schema
