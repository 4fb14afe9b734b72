"""Locust users, one protocol per module (``users/mqtt.py``, …).

Import what a locustfile needs from here::

    from users import MqttDevice

Importing ``users`` registers the pipeswarm options (``users._config``: backend
URLs and device knobs) and, through ``telemetry``, the end-to-end ledger.
"""

from __future__ import annotations

from users._config import ConfigError, MqttUrl, Settings, settings
from users.kafka import KafkaProducer
from users.mqtt import (
    ClientConfig,
    CommandError,
    ConnectFailed,
    ConnectionLost,
    DeviceClient,
    MqttDevice,
    MqttError,
    PublishRefused,
    SubscribeRefused,
    Will,
)
from users.rest import RestCommander
from users.shapes import PresetShape
from users.stomp import StompSubscriber
from users.ws import WsSubscriber

__all__ = [
    "ClientConfig",
    "CommandError",
    "ConfigError",
    "ConnectFailed",
    "ConnectionLost",
    "DeviceClient",
    "KafkaProducer",
    "MqttDevice",
    "MqttError",
    "MqttUrl",
    "PresetShape",
    "PublishRefused",
    "RestCommander",
    "Settings",
    "StompSubscriber",
    "SubscribeRefused",
    "Will",
    "WsSubscriber",
    "settings",
]
