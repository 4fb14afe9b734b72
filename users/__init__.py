"""Locust users, one protocol per module (``users/mqtt.py``, ``users/stomp.py``, …).

Import what a locustfile needs from here::

    from users import MqttDevice, StompSubscriber, WsSubscriber, KafkaProducer, RestCommander
    from users import HttpDevice         # device messages over HTTP (POST /api/ingest/{id})
    from users import RedisUser          # the pipeline's Redis operations
    from users import AmqpDevice, AmqpSubscriber, MqttSubscriber   # MQTT vs AMQP
    from users import PresetShape        # --shape constant|stages|step|spike|soak
    from users import IngestSweep        # HTTP vs MQTT ingest, phase by phase (--sweep-steps)

Importing ``users`` registers the pipeswarm options (``users._config``: backend
URLs and device knobs; each user module adds its own) and, through ``telemetry``,
the end-to-end ledger, the Prometheus exporter and the SLO check.
"""

from __future__ import annotations

from users._config import MqttUrl, Settings, settings
from users._mqtt_subscriber import MqttSubscriber
from users.amqp import AmqpDevice, AmqpSubscriber
from users.exceptions import (
    ConfigError,
    KafkaDeliveryFailed,
    KafkaTopicMissing,
    KafkaUserError,
    UsersError,
    WsConnectFailed,
    WsConnectionLost,
    WsError,
)
from users.http import HttpDevice
from users.ingest_sweep import IngestSweep
from users.kafka import KafkaProducer, ProducerEngine
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
from users.redis import RedisUser
from users.rest import COMMANDS, RestCommander
from users.shapes import PresetShape
from users.stomp import (
    StompClient,
    StompConnectFailed,
    StompConnectionLost,
    StompError,
    StompPyClient,
    StompSubscribeFailed,
    StompSubscriber,
)
from users.ws import WsSubscriber

__all__ = [
    "AmqpDevice",
    "AmqpSubscriber",
    "COMMANDS",
    "ClientConfig",
    "CommandError",
    "ConfigError",
    "ConnectFailed",
    "ConnectionLost",
    "DeviceClient",
    "HttpDevice",
    "IngestSweep",
    "KafkaDeliveryFailed",
    "KafkaProducer",
    "KafkaTopicMissing",
    "KafkaUserError",
    "MqttDevice",
    "MqttError",
    "MqttSubscriber",
    "MqttUrl",
    "PresetShape",
    "ProducerEngine",
    "PublishRefused",
    "RedisUser",
    "RestCommander",
    "Settings",
    "UsersError",
    "StompClient",
    "StompPyClient",
    "StompConnectFailed",
    "StompConnectionLost",
    "StompError",
    "StompSubscribeFailed",
    "StompSubscriber",
    "SubscribeRefused",
    "Will",
    "WsConnectFailed",
    "WsConnectionLost",
    "WsError",
    "WsSubscriber",
    "settings",
]
