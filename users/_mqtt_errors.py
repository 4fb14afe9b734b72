"""The MQTT client's exceptions (what shows in Locust's failures table).

MqttError
├── ConnectFailed      connect attempt refused, timed out or cut before CONNACK
├── ConnectionLost     an established connection went away
├── PublishRefused     v5 PUBACK/PUBREC/PUBCOMP reason code >= 0x80
├── SubscribeRefused   SUBACK return code 0x80 (3.1.1) or >= 0x80 (5)
└── CommandError       a command message that is not a JSON object
"""

from __future__ import annotations

__all__ = [
    "MqttError",
    "ConnectFailed",
    "ConnectionLost",
    "PublishRefused",
    "SubscribeRefused",
    "CommandError",
]


class MqttError(Exception):
    """Base of the MQTT exceptions (tree in the module docstring)."""


class ConnectFailed(MqttError):
    pass


class ConnectionLost(MqttError):
    pass


class PublishRefused(MqttError):
    pass


class SubscribeRefused(MqttError):
    pass


class CommandError(MqttError):
    pass
