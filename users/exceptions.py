"""Every error the users raise or put in a Locust entry's ``exception``, defined here.

    UsersError                      base of everything below
     ├── ConfigError                a bad option / URL / template / class attribute: one sentence,
     │                              exit 2 at start (also a telemetry OptionError and a ValueError)
     ├── MqttError                  the MQTT client (users/_mqtt_client.py)
     │    ├── ConnectFailed         connect refused, timed out or cut before CONNACK
     │    ├── ConnectionLost        an established connection went away
     │    ├── PublishRefused        v5 PUBACK/PUBREC/PUBCOMP reason code >= 0x80
     │    ├── SubscribeRefused      SUBACK return code 0x80 (3.1.1) or >= 0x80 (5)
     │    ├── CommandError          a command message that is not a JSON object
     │    └── ProtocolError         the broker sent something the codec cannot decode
     ├── StompError                 the STOMP subscriber (users/_stomp_client.py)
     │    ├── StompConnectFailed    refused, ERROR frame (bad token), timeout
     │    ├── StompSubscribeFailed  ERROR frame or no RECEIPT in time
     │    └── StompConnectionLost   an established connection ended without us closing it
     ├── WsError                    the raw WebSocket subscriber (users/ws.py)
     │    ├── WsConnectFailed       refused, a non-101 answer, or a timeout
     │    └── WsConnectionLost      an open connection ended without us closing it
     ├── KafkaUserError             the Kafka producer (users/_kafka_engine.py)
     │    ├── KafkaDeliveryFailed   the delivery callback reported an error
     │    └── KafkaTopicMissing     the topic does not exist (nothing is auto-created)
     └── AmqpError                  the AMQP users (users/amqp.py)
          ├── AmqpConnectFailed     refused, bad credentials, a declare refused, timeout
          ├── AmqpConnectionLost    an open connection ended without us closing it
          └── AmqpNacked            the broker answered a publish with Basic.Nack

One way to an exit code, shared with the telemetry: a :class:`ConfigError`
raised while Locust starts (the options' ``init`` check) ends the process with
``pipeswarm: <sentence>`` on stderr and exit code 2
(:func:`telemetry.exceptions.exit_on_option_error`, re-exported here); the other
errors are failures in Locust's statistics, never an exit.

Locust's control-flow exceptions (``StopUser``, ``RescheduleTask``) pass through untouched.
"""

from __future__ import annotations

from telemetry.exceptions import EXIT_USAGE, OptionError, exit_code, exit_on_option_error

__all__ = [
    "EXIT_USAGE",
    "AmqpConnectFailed",
    "AmqpConnectionLost",
    "AmqpError",
    "AmqpNacked",
    "CommandError",
    "ConfigError",
    "ConnectFailed",
    "ConnectionLost",
    "KafkaDeliveryFailed",
    "KafkaTopicMissing",
    "KafkaUserError",
    "MqttError",
    "ProtocolError",
    "PublishRefused",
    "StompConnectFailed",
    "StompConnectionLost",
    "StompError",
    "StompSubscribeFailed",
    "SubscribeRefused",
    "UsersError",
    "WsConnectFailed",
    "WsConnectionLost",
    "WsError",
    "exit_code",
    "exit_on_option_error",
]


class UsersError(Exception):
    """Base of every error of the users (tree in the module docstring)."""


class ConfigError(UsersError, OptionError):
    """A user-facing configuration mistake; ``str(err)`` is one sentence to act on."""


# --- MQTT -------------------------------------------------------------------------------------
class MqttError(UsersError):
    """Base of the MQTT client's errors (what shows in Locust's failures table)."""


class ConnectFailed(MqttError):
    """A connect attempt refused, timed out or cut before CONNACK."""


class ConnectionLost(MqttError):
    """An established connection went away."""


class PublishRefused(MqttError):
    """A v5 PUBACK/PUBREC/PUBCOMP with a reason code >= 0x80."""


class SubscribeRefused(MqttError):
    """A SUBACK return code 0x80 (3.1.1) or >= 0x80 (5)."""


class CommandError(MqttError):
    """A command message that is not a JSON object."""


class ProtocolError(MqttError):
    """The broker sent something this client cannot decode."""


# --- STOMP ------------------------------------------------------------------------------------
class StompError(UsersError):
    """Base of the STOMP subscriber's errors (the exception of a failed request event)."""


class StompConnectFailed(StompError):
    """No CONNECTED: refused, timed out, or an ERROR frame (e.g. a bad token)."""


class StompSubscribeFailed(StompError):
    """No RECEIPT for a SUBSCRIBE: an ERROR frame, a timeout or the connection ended."""


class StompConnectionLost(StompError):
    """An established connection ended without us closing it."""


# --- raw WebSocket ----------------------------------------------------------------------------
class WsError(UsersError):
    """Base of the WebSocket subscriber's errors (the exception of a failed request event)."""


class WsConnectFailed(WsError):
    """The WebSocket upgrade did not complete: refused, a non-101 answer, or a timeout."""


class WsConnectionLost(WsError):
    """An open connection ended without us closing it."""


# --- Kafka ------------------------------------------------------------------------------------
class KafkaUserError(UsersError):
    """Base of the Kafka producer's errors (the exception of a failed request event)."""


class KafkaDeliveryFailed(KafkaUserError):
    """The broker did not take a message (the delivery callback's error)."""


class KafkaTopicMissing(KafkaUserError):
    """The topic does not exist; the pipeline's bridge/consumer create it at start."""


# --- AMQP -------------------------------------------------------------------------------------
class AmqpError(UsersError):
    """Base of the AMQP users' errors."""


class AmqpConnectFailed(AmqpError):
    """The connection, channel or a declaration could not be opened."""


class AmqpConnectionLost(AmqpError):
    """An open connection ended without us closing it (a broker restart, a reset)."""


class AmqpNacked(AmqpError):
    """The broker refused a publish (``Basic.Nack``: an internal error of the queue)."""
