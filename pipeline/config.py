"""Settings of the pipeline services: each declared once, read from the environment.

Every service takes each backend as one URL, parsed once:

    MQTT_URL=mqtt://127.0.0.1:1883  KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092
    REDIS_URL=redis://127.0.0.1:6379/0  GATEWAY_PORT=8081

Each field of :class:`Settings` is declared with :func:`setting` — its type and
default, its environment variable, its help, its check and (when `python -m
pipeline up` mirrors it) its command-line option. From that one declaration come

- the reader, ``Settings.from_env()``: a bad value is a :class:`ConfigError`
  whose message is one sentence naming the variable and what it must be;
- the `up` options that mirror settings (:meth:`Setting.add_argument`: the same
  default, type and check, and the environment variable as the default, so the
  command line wins over the environment, which wins over the default);
- the environment the launcher hands its services (:func:`service_environ`);
- the docs table, ``docs/pipeline-settings.md`` (:func:`markdown`;
  ``python -m pipeline.settings_doc > docs/pipeline-settings.md`` writes it).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

from pipeline.exceptions import ConfigError

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


#: URL schemes of an MQTT URL (``tcp``/``ssl`` are paho's spellings).
_MQTT_SCHEMES = ("mqtt", "mqtts", "tcp", "ssl")


def _mqtt_url_problem(url: str) -> str | None:
    """Why ``url`` is no MQTT URL, or None."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        return "must be an MQTT URL such as mqtt://user:password@host:1883"
    if parts.scheme not in _MQTT_SCHEMES:
        return "must start with mqtt:// or mqtts://"
    return None


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
        problem = _mqtt_url_problem(url)
        if problem:
            raise ConfigError(f"MQTT URL {url!r} {problem}.")
        parts = urlsplit(url)
        tls = parts.scheme in ("mqtts", "ssl")
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or (8883 if tls else 1883),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            tls=tls,
        )


# --- declaring a setting --------------------------------------------------------------------------
T = TypeVar("T")
Check = Callable[[Any], "str | None"]


def at_least(low: int) -> Check:
    """A check: the value must be ``>= low``."""
    return lambda value: None if value >= low else f"must be {low} or more"


def _port(value: int) -> str | None:
    return None if 0 <= value <= 65535 else "must be a port number from 0 to 65535"


def _kind_words(kind: type) -> str:
    return "an integer" if kind is int else "a string"


def setting(
    default: T,
    env: str,
    help: str,
    *,
    choices: tuple[str, ...] = (),
    check: Check | None = None,
    flag: str = "",
    blank_is_default: bool = False,
) -> T:
    """Declare one field of :class:`Settings` (its type is its default's).

    ``flag`` is the `python -m pipeline up` option that mirrors the setting.
    An empty variable means the default for an integer (and where
    ``blank_is_default``); for any other string it is the value.
    """
    spec = {
        "env": env,
        "help": help,
        "choices": choices,
        "check": check,
        "flag": flag,
        "blank_is_default": blank_is_default,
    }
    return field(default=default, metadata={"setting": spec})


@dataclass(frozen=True)
class Setting:
    """One setting as declared on :class:`Settings`: everything else comes from it."""

    name: str
    kind: type
    default: Any
    env: str
    help: str
    choices: tuple[str, ...] = ()
    check: Check | None = None
    flag: str = ""
    blank_is_default: bool = False

    def problem(self, raw: str) -> tuple[Any, str | None]:
        """(the converted value, why it is wrong or None)."""
        try:
            value = self.kind(raw)
        except ValueError:
            return raw, f"must be {_kind_words(self.kind)}"
        if self.choices and value not in self.choices:
            words = [repr(c) for c in self.choices]
            return value, f"must be {', '.join(words[:-1])} or {words[-1]}"
        return value, self.check(value) if self.check is not None else None

    def read(self, environ: Mapping[str, str]) -> Any:
        """The value in ``environ``: unset (or empty, see :func:`setting`) is the default."""
        raw = environ.get(self.env)
        if raw is None or (raw == "" and (self.kind is int or self.blank_is_default)):
            return self.default
        value, why = self.problem(raw)
        if why:
            raise ConfigError(f"{self.env}={raw!r} {why}.")
        return value

    def add_argument(self, parser: Any, **kwargs: Any) -> None:
        """Add :attr:`flag` to an argparse parser; an absent option parses as None
        (then :meth:`read` the environment: it is the default)."""
        import argparse

        def convert(text: str) -> Any:
            value, why = self.problem(text)
            if why:
                raise argparse.ArgumentTypeError(why)
            return value

        parser.add_argument(
            self.flag,
            type=convert,
            default=None,
            metavar=kwargs.pop(
                "metavar", "|".join(self.choices) or ("N" if self.kind is int else "TEXT")
            ),
            help=f"{self.help} (default {self.default}; env {self.env})",
            **kwargs,
        )


# --- the settings ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Settings:
    """Everything a pipeline service needs; ``Settings.from_env()`` reads it."""

    mqtt_url: str = setting(
        "mqtt://127.0.0.1:1883",
        "MQTT_URL",
        "The MQTT broker, `mqtt://user:password@host:port` (`mqtts://` for TLS)",
        check=_mqtt_url_problem,
    )
    kafka_bootstrap: str = setting(
        "127.0.0.1:9092",
        "KAFKA_BOOTSTRAP_SERVERS",
        "Kafka bootstrap servers, `host:port[,host:port...]`",
    )
    redis_url: str = setting(
        "redis://127.0.0.1:6379/0", "REDIS_URL", "Redis, `redis://[:password@]host:port/db`"
    )
    gateway_port: int = setting(
        8081, "GATEWAY_PORT", "Gateway port (HTTP, WebSocket, STOMP, /metrics)", check=_port
    )
    gateway_host: str = setting(
        "127.0.0.1", "GATEWAY_HOST", "Address the gateway listens on (0.0.0.0 in containers)"
    )
    metrics_host: str = setting(
        "127.0.0.1",
        "METRICS_HOST",
        "Address of the bridge's and consumer's /metrics (0.0.0.0 in containers)",
    )
    bridge_metrics_port: int = setting(
        9101, "BRIDGE_METRICS_PORT", "Port of the bridge's /metrics", check=_port
    )
    consumer_metrics_port: int = setting(
        9102, "CONSUMER_METRICS_PORT", "Port of the consumer's /metrics", check=_port
    )
    kafka_topic: str = setting("mqtt-messages", "KAFKA_TOPIC", "Kafka topic of device messages")
    kafka_dlq_topic: str = setting(
        "mqtt-messages-dlq", "KAFKA_DLQ_TOPIC", "Kafka topic of rejected messages (dead letters)"
    )
    kafka_partitions: int = setting(
        8,
        "KAFKA_PARTITIONS",
        "Partitions of the Kafka topic, when the bridge or consumer creates it",
        check=at_least(1),
        flag="--partitions",
    )
    consumer_group: str = setting(
        "pipeswarm-consumer", "CONSUMER_GROUP", "Kafka consumer group of the consumers"
    )
    consumer_instance: int = setting(
        0,
        "CONSUMER_INSTANCE",
        "Number of this consumer process in its group (its Kafka client id)",
        check=at_least(0),
    )
    #: Past Redis's AOF fsync window (appendfsync everysec): a Redis crash cannot lose
    #: records whose offsets Kafka already has.
    consumer_commit_delay_ms: int = setting(
        2000,
        "CONSUMER_COMMIT_DELAY_MS",
        "Kafka offsets are committed once Redis has held the records this long, ms",
    )
    redis_ttl_s: int = setting(
        3600,
        "REDIS_TTL_S",
        "TTL of each device's latest coordinates in Redis, s",
        check=at_least(1),
        flag="--redis-ttl",
    )
    stream_maxlen: int = setting(
        100_000,
        "STREAM_MAXLEN",
        "Entries kept in the Redis update stream (the replay window of a resubscribing client)",
    )
    max_payload_bytes: int = setting(
        64 * 1024, "MAX_PAYLOAD_BYTES", "Larger device messages are dead-lettered, bytes"
    )
    bridge_buffer: int = setting(
        10_000,
        "BRIDGE_BUFFER",
        "Records the bridge holds for a retry while Kafka refuses them, before reception waits",
    )
    #: Fixed, so the bridge's persistent session (and what Mosquitto queued for it
    #: while it was away) survives a restart.
    bridge_client_id: str = setting(
        "pipeswarm-bridge",
        "BRIDGE_CLIENT_ID",
        "MQTT client id of the bridge (its persistent session)",
        blank_is_default=True,
    )
    #: Outlasts a broker restart; the bridge then retries a failed record itself.
    bridge_delivery_timeout_ms: int = setting(
        300_000,
        "BRIDGE_DELIVERY_TIMEOUT_MS",
        "How long the bridge's Kafka producer retries one record before reporting a failure, ms",
    )
    #: CPU per message against latency added to the Kafka hop. Measured at 2,000 msg/s
    #: (bench bridge-cost), bridge + broker CPU per message: 5 ms 222 + 94 µs,
    #: 10 ms 183 + 59 µs, 20 ms 172 + 47 µs, 40 ms 137 + 26 µs.
    bridge_linger_ms: int = setting(
        10, "BRIDGE_LINGER_MS", "How long the bridge's producer waits to fill a batch, ms"
    )
    #: The bridge's default, so both doors into Kafka batch alike; the HTTP answer
    #: waits for Kafka's acknowledgement, so this is in every ingest response time.
    ingest_linger_ms: int = setting(
        10,
        "INGEST_LINGER_MS",
        "How long the gateway's HTTP ingest producer waits to fill a batch, ms",
    )
    push_mode: str = setting(
        "stream",
        "PUSH_MODE",
        "`stream`: every update as it arrives; `snapshot`: every latest value each interval",
        choices=("stream", "snapshot"),
        flag="--push-mode",
    )
    snapshot_interval_ms: int = setting(
        1000,
        "SNAPSHOT_INTERVAL_MS",
        "Interval of the snapshot push mode, ms",
        flag="--snapshot-interval-ms",
    )
    client_queue: int = setting(
        10_000,
        "CLIENT_QUEUE",
        "Messages queued per WebSocket client before the gateway drops for that slow client",
    )
    #: `pipeline._gc`: with thousands of connections a full collection stops the
    #: gateway for 0.1–0.6 s every few seconds unless the old objects are frozen.
    gc_freeze_s: int = setting(
        1,
        "GC_FREEZE_S",
        "Every this many seconds the gateway moves its surviving objects out of Python's "
        "full garbage collections (gc.freeze); 0: never",
        check=at_least(0),
    )
    gc_full_s: int = setting(
        600,
        "GC_FULL_S",
        "At most every this many seconds, and only while it holds at most 100 connections, "
        "the gateway collects everything, frozen objects too (reclaims the reference cycles "
        "of closed connections; one pause); 0: never",
        check=at_least(0),
    )
    #: Tokens are JWTs (HS256) with an issuer and an expiry (`pipeline.auth`); the
    #: embedded stack passes its secret file here, so `make demo` needs nothing.
    gateway_auth: str = setting(
        "on",
        "GATEWAY_AUTH",
        "`on`: a bearer token (JWT) is required on STOMP CONNECT, the raw WebSocket and every "
        "POST, and a secret must be set; `off`: no authentication (a trusted network only)",
        choices=("on", "off"),
    )
    gateway_jwt_secret_file: str = setting(
        "",
        "GATEWAY_JWT_SECRET_FILE",
        "File holding the secret gateway tokens are signed with (`up` passes the stack's)",
    )
    gateway_jwt_secret: str = setting(
        "",
        "GATEWAY_JWT_SECRET",
        "The token secret itself, instead of GATEWAY_JWT_SECRET_FILE",
    )
    gateway_reads: str = setting(
        "public",
        "GATEWAY_READS",
        "`GET /api/*` (but `/api/health`): `public`, or `token` to require a bearer token too",
        choices=("public", "token"),
    )
    gateway_max_body_bytes: int = setting(
        64 * 1024,
        "GATEWAY_MAX_BODY_BYTES",
        "Larger request bodies get 413 before they are read, bytes",
        check=at_least(1),
    )
    gateway_max_frame_bytes: int = setting(
        64 * 1024,
        "GATEWAY_MAX_FRAME_BYTES",
        "Largest WebSocket message (and STOMP frame body) a client may send, bytes",
        check=at_least(1024),
    )
    gateway_connect_timeout_ms: int = setting(
        10_000,
        "GATEWAY_CONNECT_TIMEOUT_MS",
        "A connection must send its request (HTTP, WebSocket upgrade) and a STOMP client its "
        "CONNECT within this time, or it is closed, ms",
        check=at_least(1),
    )
    gateway_max_subscriptions: int = setting(
        100,
        "GATEWAY_MAX_SUBSCRIPTIONS",
        "STOMP subscriptions per connection; one more is an ERROR frame",
        check=at_least(1),
    )

    @property
    def mqtt(self) -> MqttTarget:
        return MqttTarget.from_url(self.mqtt_url)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Every setting from ``environ`` (default ``os.environ``); a bad one is a
        :class:`ConfigError` naming its variable."""
        env = os.environ if environ is None else environ
        return cls(**{s.name: s.read(env) for s in SETTINGS.values()})


#: Attribute name -> its declaration, in declaration order.
SETTINGS: dict[str, Setting] = {
    f.name: Setting(name=f.name, kind=type(f.default), default=f.default, **f.metadata["setting"])
    for f in fields(Settings)
}

#: The defaults (what the launcher and the docs show).
DEFAULTS = Settings()


def service_environ(**values: object) -> dict[str, str]:
    """The environment that hands ``values`` (attribute name -> value) to a service."""
    return {SETTINGS[name].env: str(value) for name, value in values.items()}


def markdown() -> str:
    """The Markdown of ``docs/pipeline-settings.md``: every setting, one row each."""
    lines = [
        "# Pipeline settings",
        "",
        "Every pipeline service (`python -m pipeline.bridge|consumer|gateway`) reads these",
        "environment variables; `python -m pipeline up` hands them to the services it starts,",
        "and its options in the `up option` column override them. A bad value ends the",
        "service with one line, `pipeline: <sentence>`, and exit code 2.",
        "",
        "Generated from `pipeline/config.py` (`python -m pipeline.settings_doc > "
        "docs/pipeline-settings.md`; do not edit by hand).",
        "",
        "| env | type | default | `up` option | help |",
        "|---|---|---|---|---|",
    ]
    for s in SETTINGS.values():
        kind = " \\| ".join(f"`{c}`" for c in s.choices) if s.choices else s.kind.__name__
        default = f"`{s.default}`" if s.default != "" else "(empty)"
        flag = f"`{s.flag}`" if s.flag else ""
        lines.append(f"| `{s.env}` | {kind} | {default} | {flag} | {s.help} |")
    return "\n".join(lines) + "\n"
