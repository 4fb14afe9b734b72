"""The gateway: Redis updates out to WebSocket/STOMP clients, REST commands in to MQTT.

    python -m pipeline.gateway          # serves on GATEWAY_HOST:GATEWAY_PORT

`create_app(settings)` builds the FastAPI app (for uvicorn or tests);
`pipeline.gateway.stomp` is the STOMP 1.2 frame codec.
"""

from __future__ import annotations

__all__ = ["create_app"]

from pipeline.gateway.app import create_app
