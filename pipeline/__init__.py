"""The system under test: a real MQTT -> Kafka -> Redis -> WebSocket/STOMP pipeline.

    devices --MQTT--> bridge --Kafka--> consumer --Redis--> gateway --WS/STOMP--> browsers
                                                               |
    devices <--MQTT-- orin/{id}/command <--------------- REST POST /api/commands/{id}

`python -m pipeline up` starts it as local processes (see `pipeline.stack`).
This package stands apart: it imports nothing from users/, telemetry/ or locustfiles/.
"""

from __future__ import annotations

__all__ = ["Settings"]

from pipeline.config import Settings
