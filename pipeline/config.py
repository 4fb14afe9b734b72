"""Settings shared by the pipeline services, read from the environment.

Every service takes each backend as one URL, parsed once:

    MQTT_URL=mqtt://127.0.0.1:1883  KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092
    REDIS_URL=redis://127.0.0.1:6379/0  GATEWAY_PORT=8081
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

#: MQTT topics of the original IoT server.
SENSOR_TOPIC = "sensors/{device_id}/coordinates"
SENSOR_FILTER = "sensors/+/coordinates"
COMMAND_TOPIC = "orin/{device_id}/command"

#: Redis layout written by the consumer and read by the gateway.
REDIS_PREFIX = "pipeswarm"
LATEST_KEY = REDIS_PREFIX + ":latest:{device_id}"  # JSON of the newest message, TTL
DEVICES_KEY = REDIS_PREFIX + ":devices"  # ZSET device_id -> last update (epoch ms)
COUNTS_KEY = REDIS_PREFIX + ":counts"  # HASH device_id -> messages written
TOTAL_KEY = REDIS_PREFIX + ":total"  # INT all messages written
#: The update feed: a Redis Stream, one entry per update, field ``m`` = the message
#: JSON (consumer hop stamped), trimmed with ``XADD ... MAXLEN ~ stream_maxlen``.
#: The gateway reads it with XREAD from the last id it saw; a resubscribing
#: client passes the last id it saw (STOMP ``since`` header on SUBSCRIBE, raw WS
#: ``?since=``) and gets what it missed replayed from the stream.
UPDATES_STREAM = REDIS_PREFIX + ":stream"
STREAM_FIELD = b"m"
OFFSETS_KEY = REDIS_PREFIX + ":offsets:{topic}:{group}"  # HASH partition -> applied offset


@dataclass(frozen=True)
class MqttTarget:
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: bool = False

    @classmethod
    def from_url(cls, url: str) -> MqttTarget:
        """Parse ``mqtt://user:pw@host:1883`` (``mqtts://`` for TLS)."""
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
            raise ValueError(f"MQTT URL {url!r} must start with mqtt:// or mqtts://")
        tls = parts.scheme in ("mqtts", "ssl")
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or (8883 if tls else 1883),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            tls=tls,
        )


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} must be an integer") from None


@dataclass(frozen=True)
class Settings:
    """Everything a pipeline service needs; ``Settings.from_env()`` reads it."""

    mqtt_url: str = "mqtt://127.0.0.1:1883"
    kafka_bootstrap: str = "127.0.0.1:9092"
    redis_url: str = "redis://127.0.0.1:6379/0"
    gateway_port: int = 8081
    gateway_host: str = "127.0.0.1"
    metrics_host: str = "127.0.0.1"  # 0.0.0.0 in containers
    bridge_metrics_port: int = 9101
    consumer_metrics_port: int = 9102
    kafka_topic: str = "mqtt-messages"
    kafka_dlq_topic: str = "mqtt-messages-dlq"
    kafka_partitions: int = 8
    consumer_group: str = "pipeswarm-consumer"
    consumer_instance: int = 0  # one number per consumer process of the group: its client id
    #: Kafka offsets are committed once Redis has held the records this long (ms):
    #: past Redis's AOF fsync window (appendfsync everysec).
    consumer_commit_delay_ms: int = 2000
    redis_ttl_s: int = 3600
    stream_maxlen: int = 100_000  # entries kept in UPDATES_STREAM: the replay window
    max_payload_bytes: int = 64 * 1024
    bridge_buffer: int = 10_000
    #: MQTT client id of the bridge: fixed, so its persistent session (and what
    #: Mosquitto queued for it while it was away) survives a restart.
    bridge_client_id: str = "pipeswarm-bridge"
    #: How long the bridge's Kafka producer keeps retrying one record before it
    #: reports a failure (which the bridge then retries again): outlasts a broker restart.
    bridge_delivery_timeout_ms: int = 300_000
    #: How long the bridge's producer waits to fill a batch: CPU per message against
    #: latency added to the Kafka hop. Measured at 2,000 msg/s (bench bridge-cost),
    #: bridge + broker CPU per message: 5 ms 222 + 94 µs, 10 ms 183 + 59 µs,
    #: 20 ms 172 + 47 µs, 40 ms 137 + 26 µs.
    bridge_linger_ms: int = 10
    push_mode: str = "stream"  # or "snapshot"
    snapshot_interval_ms: int = 1000
    client_queue: int = 10_000  # per WebSocket client, before slow-client drops
    gateway_token: str = ""  # when set, STOMP CONNECT needs this bearer token or passcode
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def mqtt(self) -> MqttTarget:
        return MqttTarget.from_url(self.mqtt_url)

    @classmethod
    def from_env(cls) -> Settings:
        d = cls()
        push_mode = os.environ.get("PUSH_MODE", d.push_mode)
        if push_mode not in ("stream", "snapshot"):
            raise ValueError(f"PUSH_MODE={push_mode!r} must be 'stream' or 'snapshot'")
        return cls(
            mqtt_url=os.environ.get("MQTT_URL", d.mqtt_url),
            kafka_bootstrap=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", d.kafka_bootstrap),
            redis_url=os.environ.get("REDIS_URL", d.redis_url),
            gateway_port=_env_int("GATEWAY_PORT", d.gateway_port),
            gateway_host=os.environ.get("GATEWAY_HOST", d.gateway_host),
            metrics_host=os.environ.get("METRICS_HOST", d.metrics_host),
            bridge_metrics_port=_env_int("BRIDGE_METRICS_PORT", d.bridge_metrics_port),
            consumer_metrics_port=_env_int("CONSUMER_METRICS_PORT", d.consumer_metrics_port),
            kafka_topic=os.environ.get("KAFKA_TOPIC", d.kafka_topic),
            kafka_dlq_topic=os.environ.get("KAFKA_DLQ_TOPIC", d.kafka_dlq_topic),
            kafka_partitions=_env_int("KAFKA_PARTITIONS", d.kafka_partitions),
            consumer_group=os.environ.get("CONSUMER_GROUP", d.consumer_group),
            consumer_instance=_env_int("CONSUMER_INSTANCE", d.consumer_instance),
            consumer_commit_delay_ms=_env_int(
                "CONSUMER_COMMIT_DELAY_MS", d.consumer_commit_delay_ms
            ),
            redis_ttl_s=_env_int("REDIS_TTL_S", d.redis_ttl_s),
            stream_maxlen=_env_int("STREAM_MAXLEN", d.stream_maxlen),
            max_payload_bytes=_env_int("MAX_PAYLOAD_BYTES", d.max_payload_bytes),
            bridge_buffer=_env_int("BRIDGE_BUFFER", d.bridge_buffer),
            bridge_client_id=os.environ.get("BRIDGE_CLIENT_ID") or d.bridge_client_id,
            bridge_delivery_timeout_ms=_env_int(
                "BRIDGE_DELIVERY_TIMEOUT_MS", d.bridge_delivery_timeout_ms
            ),
            bridge_linger_ms=_env_int("BRIDGE_LINGER_MS", d.bridge_linger_ms),
            push_mode=push_mode,
            snapshot_interval_ms=_env_int("SNAPSHOT_INTERVAL_MS", d.snapshot_interval_ms),
            client_queue=_env_int("CLIENT_QUEUE", d.client_queue),
            gateway_token=os.environ.get("GATEWAY_TOKEN", d.gateway_token),
        )
