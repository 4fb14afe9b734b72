"""Who may use the gateway, and how much they may send: bearer tokens and request limits.

Tokens are the stack's JWTs (:mod:`pipeline.auth`: HS256, issuer and expiry
checked). Where a client puts its token:

================================  ==================================================
STOMP CONNECT (``/ws``)           ``passcode:<token>`` or ``Authorization:Bearer <token>``
                                  in the frame (stomp.js, the Go STOMP tool), or the
                                  upgrade request's ``Authorization`` header
raw WebSocket (``/coordinates``)  ``Authorization: Bearer <token>`` on the upgrade, or
                                  ``?token=<token>``
HTTP                              ``Authorization: Bearer <token>``
================================  ==================================================

:class:`Guard` is ASGI middleware, so it covers every route, present and future:
any method but GET/HEAD/OPTIONS needs a token (401 otherwise) and a body of at
most ``GATEWAY_MAX_BODY_BYTES`` (413 from ``Content-Length`` before a byte is
read; a chunked body is read up to the limit and no further); ``GET /api/*``
needs one too with ``GATEWAY_READS=token``. ``/api/health``, ``/metrics`` and
the OpenAPI pages stay public. Every refusal is counted
(``pipeline_gateway_auth_failures_total``, ``pipeline_gateway_rejected_total``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import jwt

from pipeline import auth
from pipeline.config import Settings
from pipeline.exceptions import ConfigError

if TYPE_CHECKING:
    from pipeline.gateway._metrics import GatewayStats

#: Methods that only read; everything else writes.
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
PUBLIC_PATHS = frozenset({"/api/health"})


def secret_of(settings: Settings) -> str:
    """The token secret (``GATEWAY_JWT_SECRET`` or the file); ConfigError when there is none."""
    if settings.gateway_jwt_secret:
        return settings.gateway_jwt_secret
    path = settings.gateway_jwt_secret_file
    if not path:
        raise ConfigError(
            "GATEWAY_AUTH=on needs a token secret: set GATEWAY_JWT_SECRET_FILE (or "
            "GATEWAY_JWT_SECRET), or GATEWAY_AUTH=off on a trusted network."
        )
    try:
        return auth.read_secret(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"GATEWAY_JWT_SECRET_FILE={path!r} cannot be used ({exc}).") from None


def reason_of(exc: auth.InvalidToken) -> str:
    """The ``reason`` label of a refused token."""
    cause = exc.__cause__
    if cause is None:
        return "missing"
    if isinstance(cause, jwt.ExpiredSignatureError):
        return "expired"
    if isinstance(cause, jwt.InvalidIssuerError):
        return "issuer"
    if isinstance(cause, jwt.InvalidSignatureError):
        return "signature"
    return "malformed"


def bearer(value: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` value ("" when none)."""
    scheme, _, token = (value or "").strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


class Authenticator:
    """Checks tokens and counts the refusals; ``GATEWAY_AUTH=off`` accepts everything."""

    def __init__(self, settings: Settings, stats: GatewayStats) -> None:
        self.enabled = settings.gateway_auth == "on"
        self.secret = secret_of(settings) if self.enabled else ""
        self.reads_need_token = settings.gateway_reads == "token"
        self.stats = stats

    def refuse(self, token: str, protocol: str) -> str | None:
        """None when ``token`` may pass; else why not (one sentence), counted."""
        if not self.enabled:
            return None
        try:
            auth.verify_token(self.secret, token)
        except auth.InvalidToken as exc:
            self.stats.auth_failures[(protocol, reason_of(exc))] += 1
            return str(exc)
        return None

    def needs_token(self, method: str, path: str) -> bool:
        if not self.enabled:
            return False
        if method not in READ_METHODS:
            return True
        return self.reads_need_token and path.startswith("/api/") and path not in PUBLIC_PATHS


def header(scope: Mapping[str, Any], name: bytes) -> str | None:
    """One request header of an ASGI scope (``name`` lower-case), or None."""
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")  # type: ignore[no-any-return]
    return None


class Guard:
    """ASGI middleware: a bearer token on writes (and on reads with ``GATEWAY_READS=token``),
    request bodies capped at ``GATEWAY_MAX_BODY_BYTES``. Applies to every HTTP route."""

    def __init__(self, app: Any, authenticator: Authenticator, max_body: int) -> None:
        self.app = app
        self.auth = authenticator
        self.max_body = max_body

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        if self.auth.needs_token(method, scope["path"]):
            why = self.auth.refuse(bearer(header(scope, b"authorization")), "http")
            if why is not None:
                await _answer(
                    send, 401, why, [(b"www-authenticate", b'Bearer error="invalid_token"')]
                )
                return
        if method in READ_METHODS:
            await self.app(scope, receive, send)
            return
        length = header(scope, b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            await self._too_large(send)
            return
        # Read the body here, at most max_body bytes: the app then never sees more.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                await self._too_large(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        sent = False

        async def replay() -> Any:
            nonlocal sent
            if sent:
                return await receive()  # only http.disconnect is left
            sent = True
            return body

        await self.app(scope, replay, send)

    async def _too_large(self, send: Any) -> None:
        self.auth.stats.rejected["body_too_large"] += 1
        await _answer(send, 413, f"request bodies are limited to {self.max_body} bytes")


async def _answer(
    send: Any, status: int, detail: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """A JSON ``{"detail": …}`` answer (FastAPI's error shape) that closes the connection:
    the rest of a refused body is never read."""
    payload = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"connection", b"close"),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
