"""What the WebSocket subscribers share: the endpoint from ``--gateway-url``, request events.

Their reconnect loop is ``users._subscriber``, its backoff ``users._backoff``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from locust.env import Environment

__all__ = ["WsEndpoint", "ws_endpoint", "fire"]


@dataclass(frozen=True, slots=True)
class WsEndpoint:
    """A WebSocket endpoint of the gateway: ``ws://host:port/path`` (``wss://`` for https)."""

    host: str
    port: int
    path: str
    tls: bool

    @property
    def url(self) -> str:
        return f"{'wss' if self.tls else 'ws'}://{self.host}:{self.port}{self.path}"


def ws_endpoint(gateway_url: str, path: str) -> WsEndpoint:
    """``http://h:8081`` + ``/ws`` -> ``ws://h:8081/ws``; a base path in the URL is kept.

    >>> ws_endpoint("https://gw.example/iot", "/coordinates").url
    'wss://gw.example:443/iot/coordinates'
    """
    parts = urlsplit(gateway_url)
    tls = parts.scheme in ("https", "wss")
    host = parts.hostname or "127.0.0.1"
    port = parts.port or (443 if tls else 80)
    return WsEndpoint(host, port, parts.path.rstrip("/") + path, tls)


def fire(
    environment: Environment,
    request_type: str,
    name: str,
    ms: float | None,
    exc: BaseException | None = None,
    length: int = 0,
    context: dict[str, Any] | None = None,
) -> None:
    """One Locust request event, with the fields ``locust/contrib/fasthttp.py`` fills."""
    environment.events.request.fire(
        request_type=request_type,
        name=name,
        response_time=ms,
        response_length=length,
        exception=exc,
        context=context if context is not None else {},
    )
