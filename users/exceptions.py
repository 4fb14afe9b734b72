"""Every error the users raise or put in a Locust entry's ``exception``, in one place.

    ConfigError (ValueError)        a bad option / URL / template: one sentence, exit 2 at start
    MqttError                       users/_mqtt_errors.py
     ├── ConnectFailed              connect refused, timed out or cut before CONNACK
     ├── ConnectionLost             an established connection went away
     ├── PublishRefused             v5 PUBACK/PUBREC/PUBCOMP reason code >= 0x80
     ├── SubscribeRefused           SUBACK return code 0x80 (3.1.1) or >= 0x80 (5)
     └── CommandError               a command message that is not a JSON object
    StompError                      users/_stomp_client.py
     ├── StompConnectFailed         refused, ERROR frame (bad token), timeout
     ├── StompSubscribeFailed       ERROR frame or no RECEIPT in time
     └── StompConnectionLost
    WsError                         users/ws.py
     ├── WsConnectFailed
     └── WsConnectionLost
    KafkaUserError                  users/kafka.py
     ├── KafkaDeliveryFailed        the delivery callback reported an error
     └── KafkaTopicMissing          the topic does not exist (nothing is auto-created)

Locust's control-flow exceptions (``StopUser``, ``RescheduleTask``) pass through untouched.
"""

from __future__ import annotations

from users._config import ConfigError
from users._mqtt_errors import (
    CommandError,
    ConnectFailed,
    ConnectionLost,
    MqttError,
    PublishRefused,
    SubscribeRefused,
)
from users._stomp_client import (
    StompConnectFailed,
    StompConnectionLost,
    StompError,
    StompSubscribeFailed,
)
from users.kafka import KafkaDeliveryFailed, KafkaTopicMissing, KafkaUserError
from users.ws import WsConnectFailed, WsConnectionLost, WsError

__all__ = [
    "CommandError",
    "ConfigError",
    "ConnectFailed",
    "ConnectionLost",
    "KafkaDeliveryFailed",
    "KafkaTopicMissing",
    "KafkaUserError",
    "MqttError",
    "PublishRefused",
    "StompConnectFailed",
    "StompConnectionLost",
    "StompError",
    "StompSubscribeFailed",
    "SubscribeRefused",
    "WsConnectFailed",
    "WsConnectionLost",
    "WsError",
]
