"""Backend URLs and device knobs: Locust options, parsed once per environment.

Every option is registered through ``events.init_command_line_parser`` with an
environment variable, so the command line, the environment and ``locust.conf``
all work with Locust's one precedence (CLI > env > config file > default)::

    locust -f locustfiles/mqtt_fleet.py --mqtt-url mqtts://dev:secret@broker:8883
    PIPESWARM_DEVICE_INTERVAL=0.05 locust -f locustfiles/mqtt_fleet.py

When the embedded stack is up, ``.pipeswarm/stack.json`` (written by
``python -m pipeline up --detach``; directory overridable with
``PIPESWARM_STATE_DIR``) supplies the backend defaults, so an explicit value
always wins over it. ``users/`` never imports ``pipeline/``: the file is read here.

User code reads the parsed result with :func:`settings`::

    s = settings(self.environment)      # cached; re-parsed only if an option changed
    s.mqtt.host, s.mqtt.port, s.mqtt.tls, s.device_interval, s.mqtt_qos

A bad value raises :class:`ConfigError` whose message is one sentence saying
what to change; at Locust start-up (``init``) it ends the process with exit
code 2 instead of a traceback.
"""

from __future__ import annotations

import json
import os
import sys
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

from locust import events

if TYPE_CHECKING:
    from argparse import Namespace

    from locust.argument_parser import LocustArgumentParser
    from locust.env import Environment

__all__ = [
    "ConfigError",
    "MqttUrl",
    "Settings",
    "DEFAULTS",
    "MQTT_VERSIONS",
    "add_arguments",
    "parse_mqtt_url",
    "parse_http_url",
    "parse_redis_url",
    "parse_kafka_bootstrap",
    "parse_settings",
    "settings",
    "stack_urls",
]

#: Built-in defaults (DESIGN.md "Configuration"), used when no stack file exists.
DEFAULTS: dict[str, str] = {
    "mqtt": "mqtt://127.0.0.1:1883",
    "gateway": "http://127.0.0.1:8081",
    "kafka": "127.0.0.1:9092",
    "redis": "redis://127.0.0.1:6379/0",
}
#: ``--mqtt-version`` spellings -> MQTT protocol level byte (3.1.1 = 4, 5 = 5).
MQTT_VERSIONS: dict[str, int] = {"3.1.1": 4, "311": 4, "4": 4, "5": 5, "5.0": 5}

DEFAULT_DEVICE_INTERVAL = 0.1  # the original Jetson devices publish every 100 ms
DEFAULT_QOS = 1
DEFAULT_KEEPALIVE = 60
STATE_DIR_ENV = "PIPESWARM_STATE_DIR"


class ConfigError(ValueError):
    """A user-facing configuration mistake; ``str(err)`` is one sentence to act on."""


@dataclass(frozen=True, slots=True)
class MqttUrl:
    """``mqtt://user:pw@host:port`` or ``mqtts://…`` (TLS), parsed.

    Query parameters (TLS only): ``ca=/path/ca.pem`` trusts that CA file;
    ``insecure=1`` skips certificate and host name verification (test brokers).
    """

    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_file: str | None = None
    insecure: bool = False

    def __str__(self) -> str:  # never print the password
        auth = f"{self.username}:***@" if self.username else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{auth}{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the options say, parsed and validated (see :func:`settings`)."""

    mqtt: MqttUrl
    gateway_url: str
    kafka_bootstrap: str
    redis_url: str
    device_interval: float
    mqtt_qos: int
    mqtt_version: int  # protocol level byte: 4 (3.1.1) or 5
    payload_template: str
    mqtt_keepalive: int


def _bad(option: str, value: Any, why: str) -> ConfigError:
    return ConfigError(f"{option} {value!r}: {why}.")


def parse_mqtt_url(url: str, option: str = "--mqtt-url") -> MqttUrl:
    """Parse ``mqtt://[user[:pw]@]host[:port]`` (default port 1883) or ``mqtts://`` (8883).

    >>> parse_mqtt_url("mqtt://dev:s%40cret@127.0.0.1:1884")
    MqttUrl(host='127.0.0.1', port=1884, username='dev', password='s@cret', tls=False, ca_file=None, insecure=False)
    """
    example = "e.g. mqtt://user:pw@127.0.0.1:1883 or mqtts://host:8883"
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as err:  # a non-numeric or out-of-range port
        raise _bad(option, url, f"not a valid URL ({err}); {example}") from None
    if parts.scheme not in ("mqtt", "mqtts"):
        raise _bad(option, url, f"the scheme must be mqtt:// or mqtts://, {example}")
    if not parts.hostname:
        raise _bad(option, url, f"the host is missing, {example}")
    if parts.path not in ("", "/"):
        raise _bad(option, url, f"an MQTT URL has no path, {example}")
    tls = parts.scheme == "mqtts"
    query = parse_qs(parts.query)
    unknown = set(query) - {"ca", "insecure"}
    if unknown:
        raise _bad(
            option, url, f"unknown parameter {sorted(unknown)[0]!r}; only ca= and insecure= exist"
        )
    if query and not tls:
        raise _bad(option, url, "ca= and insecure= only apply to mqtts:// URLs")
    ca = query.get("ca", [None])[-1]
    insecure = query.get("insecure", ["0"])[-1].lower() in ("1", "true", "yes")
    return MqttUrl(
        host=parts.hostname,
        port=port or (8883 if tls else 1883),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        tls=tls,
        ca_file=ca,
        insecure=insecure,
    )


def parse_http_url(url: str, option: str = "--gateway-url") -> str:
    """Validate ``http(s)://host[:port]`` and return it without a trailing slash."""
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as err:
        raise _bad(option, url, f"not a valid URL ({err}); e.g. http://127.0.0.1:8081") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _bad(
            option,
            url,
            "expected http://host:port or https://host:port, e.g. http://127.0.0.1:8081",
        )
    return url.strip().rstrip("/")


def parse_redis_url(url: str, option: str = "--redis-url") -> str:
    """Validate ``redis://host:port/db`` (or ``rediss://``, ``unix://``) and return it."""
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as err:
        raise _bad(option, url, f"not a valid URL ({err}); e.g. redis://127.0.0.1:6379/0") from None
    if parts.scheme not in ("redis", "rediss", "unix") or not (parts.hostname or parts.path):
        raise _bad(option, url, "expected redis://host:port/db, e.g. redis://127.0.0.1:6379/0")
    return url.strip()


def parse_kafka_bootstrap(value: str, option: str = "--kafka-bootstrap") -> str:
    """Validate ``host:port[,host:port…]`` (an optional ``kafka://`` prefix is dropped)."""
    text = value.strip()
    if text.startswith("kafka://"):
        text = text[len("kafka://") :].rstrip("/")
    servers = [s.strip() for s in text.split(",") if s.strip()]
    if not servers:
        raise _bad(option, value, "expected host:port[,host:port...], e.g. 127.0.0.1:9092")
    for server in servers:
        host, sep, port = server.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise _bad(option, value, f"{server!r} is not host:port, e.g. 127.0.0.1:9092")
    return ",".join(servers)


def stack_urls(state_dir: str | Path | None = None) -> dict[str, str]:
    """The URLs of the running embedded stack (``{"mqtt": …, "kafka": …}``), or ``{}``.

    Reads ``<state_dir>/stack.json`` (default ``$PIPESWARM_STATE_DIR`` or
    ``.pipeswarm``); a missing or unreadable file means no stack.
    """
    directory = Path(state_dir or os.environ.get(STATE_DIR_ENV) or ".pipeswarm")
    try:
        doc = json.loads((directory / "stack.json").read_text())
    except (OSError, ValueError):
        return {}
    urls = doc.get("urls") if isinstance(doc, dict) else None
    if not isinstance(urls, dict):
        return {}
    return {k: v for k, v in urls.items() if isinstance(k, str) and isinstance(v, str) and v}


def add_arguments(parser: LocustArgumentParser) -> None:
    """Register the backend and device options (an ``init_command_line_parser`` listener)."""
    stack = stack_urls()
    d = {k: stack.get(k, v) for k, v in DEFAULTS.items()}
    where = " (from .pipeswarm/stack.json)" if stack else ""
    group = parser.add_argument_group("pipeswarm backends and devices")
    group.add_argument(
        "--mqtt-url",
        default=d["mqtt"],
        env_var="PIPESWARM_MQTT_URL",
        help=f"MQTT broker, mqtt://[user:pw@]host:port or mqtts:// for TLS. Default {d['mqtt']}{where}",
    )
    group.add_argument(
        "--gateway-url",
        default=d["gateway"],
        env_var="PIPESWARM_GATEWAY_URL",
        help=f"Gateway HTTP/WebSocket/STOMP base URL. Default {d['gateway']}{where}",
    )
    group.add_argument(
        "--kafka-bootstrap",
        default=d["kafka"],
        env_var="PIPESWARM_KAFKA_BOOTSTRAP",
        help=f"Kafka bootstrap servers host:port[,host:port]. Default {d['kafka']}{where}",
    )
    group.add_argument(
        "--redis-url",
        default=d["redis"],
        env_var="PIPESWARM_REDIS_URL",
        help=f"Redis URL. Default {d['redis']}{where}",
    )
    group.add_argument(
        "--device-interval",
        type=float,
        default=DEFAULT_DEVICE_INTERVAL,
        env_var="PIPESWARM_DEVICE_INTERVAL",
        help="Seconds between a device's publishes, on an open-model schedule "
        "(0 = connect and listen for commands only). Default 0.1",
    )
    group.add_argument(
        "--mqtt-qos",
        type=int,
        choices=(0, 1, 2),
        default=DEFAULT_QOS,
        env_var="PIPESWARM_MQTT_QOS",
        help="QoS of device publishes. Default 1",
    )
    group.add_argument(
        "--mqtt-version",
        choices=("3.1.1", "5"),
        default="3.1.1",
        env_var="PIPESWARM_MQTT_VERSION",
        help="MQTT protocol version of the devices. Default 3.1.1",
    )
    group.add_argument(
        "--payload-template",
        default="",
        env_var="PIPESWARM_PAYLOAD_TEMPLATE",
        help='JSON file of the device message; string values "{device_id}", "{x}", "{y}", '
        '"{timestamp}", "{seq}" are filled in. Empty: the original {"x","y","timestamp"} on a smooth trajectory',
    )
    group.add_argument(
        "--mqtt-keepalive",
        type=int,
        default=DEFAULT_KEEPALIVE,
        env_var="PIPESWARM_MQTT_KEEPALIVE",
        help="MQTT keepalive in seconds. Default 60",
    )


def _raw(options: Namespace | None, name: str, default: Any) -> Any:
    value = getattr(options, name, None) if options is not None else None
    return default if value is None or value == "" else value


def parse_settings(options: Namespace | None) -> Settings:
    """Parse and validate the options (``None``: the defaults, e.g. a bare ``Environment``)."""
    # options registered by add_arguments already carry the stack defaults; this
    # covers a bare Environment or a Namespace built by hand
    stack = stack_urls()
    d = {k: stack.get(k, v) for k, v in DEFAULTS.items()}
    interval = _number(
        float, _raw(options, "device_interval", DEFAULT_DEVICE_INTERVAL), "--device-interval"
    )
    if interval < 0:
        raise _bad(
            "--device-interval",
            interval,
            "must be 0 (no publishing) or a positive number of seconds",
        )
    qos = _number(int, _raw(options, "mqtt_qos", DEFAULT_QOS), "--mqtt-qos")
    if qos not in (0, 1, 2):
        raise _bad("--mqtt-qos", qos, "must be 0, 1 or 2")
    version_text = str(_raw(options, "mqtt_version", "3.1.1")).strip()
    if version_text not in MQTT_VERSIONS:
        raise _bad("--mqtt-version", version_text, "must be 3.1.1 or 5")
    keepalive = _number(int, _raw(options, "mqtt_keepalive", DEFAULT_KEEPALIVE), "--mqtt-keepalive")
    if not 0 <= keepalive <= 65535:
        raise _bad("--mqtt-keepalive", keepalive, "must be 0 (off) to 65535 seconds")
    template = str(_raw(options, "payload_template", "")).strip()
    if template and not Path(template).is_file():
        raise _bad(
            "--payload-template", template, "no such file; give a JSON file or leave it empty"
        )
    return Settings(
        mqtt=parse_mqtt_url(str(_raw(options, "mqtt_url", d["mqtt"]))),
        gateway_url=parse_http_url(str(_raw(options, "gateway_url", d["gateway"]))),
        kafka_bootstrap=parse_kafka_bootstrap(str(_raw(options, "kafka_bootstrap", d["kafka"]))),
        redis_url=parse_redis_url(str(_raw(options, "redis_url", d["redis"]))),
        device_interval=interval,
        mqtt_qos=qos,
        mqtt_version=MQTT_VERSIONS[version_text],
        payload_template=template,
        mqtt_keepalive=keepalive,
    )


def _number(kind: type, value: Any, option: str) -> Any:
    # the web UI hands custom options back as strings
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise _bad(option, value, f"must be a{'n integer' if kind is int else ' number'}") from None


_NAMES = (
    "mqtt_url",
    "gateway_url",
    "kafka_bootstrap",
    "redis_url",
    "device_interval",
    "mqtt_qos",
    "mqtt_version",
    "payload_template",
    "mqtt_keepalive",
)
_cache: weakref.WeakKeyDictionary[Any, tuple[tuple[Any, ...], Settings]] = (
    weakref.WeakKeyDictionary()
)


def settings(environment: Environment) -> Settings:
    """The parsed :class:`Settings` of ``environment`` (parsed once, again only on change)."""
    options = environment.parsed_options
    key = tuple(getattr(options, n, None) for n in _NAMES) if options is not None else ()
    hit = _cache.get(environment)
    if hit is not None and hit[0] == key:
        return hit[1]
    parsed = parse_settings(options)
    _cache[environment] = (key, parsed)
    return parsed


def _validate_at_init(environment: Environment, **_kw: Any) -> None:
    """Turn a bad option into one sentence and exit code 2 before any user starts."""
    if environment.parsed_options is None:
        return
    try:
        s = settings(environment)
        if s.payload_template:
            from users._mqtt_payload import load_template  # (it imports this module)

            load_template(s.payload_template)
    except ConfigError as err:
        sys.stderr.write(f"pipeswarm: {err}\n")
        raise SystemExit(2) from None


events.init_command_line_parser.add_listener(add_arguments)
events.init.add_listener(_validate_at_init)
