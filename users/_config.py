"""Backend URLs and device knobs: Locust options, parsed once per environment.

Every option is registered through ``events.init_command_line_parser`` with an
environment variable, so the command line, the environment and ``locust.conf``
all work with Locust's one precedence (CLI > env > config file > default)::

    locust -f locustfiles/mqtt_fleet.py --mqtt-url mqtts://dev:secret@broker:8883
    PIPESWARM_DEVICE_INTERVAL=0.05 locust -f locustfiles/mqtt_fleet.py

When the embedded stack is up, ``.pipeswarm/stack.json`` (written by
``python -m pipeline up --detach``; directory overridable with
``PIPESWARM_STATE_DIR``) supplies the backend defaults, so an explicit value
always wins over it, and its ``secret_file`` the secret the gateway users mint
their bearer token with (``--jwt-secret``; one token per process, the claims
``pipeline.auth`` checks). ``users/`` never imports ``pipeline/``: the file is read
and the token minted here.

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
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import SplitResult, parse_qs, unquote, urlsplit

from telemetry.options import Option, OptionGroup, at_least
from users._token import mint_token
from users.exceptions import ConfigError

if TYPE_CHECKING:
    from argparse import Namespace

    from locust.env import Environment

__all__ = [
    "ConfigError",
    "MqttUrl",
    "Settings",
    "DEFAULTS",
    "MQTT_VERSIONS",
    "OPTIONS",
    "parse_mqtt_url",
    "parse_http_url",
    "parse_redis_url",
    "parse_kafka_bootstrap",
    "parse_settings",
    "settings",
    "stack_secret_file",
    "stack_secret",
    "stack_urls",
    "gateway_token",
]

#: Built-in defaults, used when no stack file exists (README "Configuration" lists them).
DEFAULTS: dict[str, str] = {
    "mqtt": "mqtt://127.0.0.1:1883",
    "gateway": "http://127.0.0.1:8081",
    "kafka": "127.0.0.1:9092",
    "redis": "redis://127.0.0.1:6379/0",
}
#: ``--mqtt-version`` spellings -> MQTT protocol level byte (3.1.1 = 4, 5 = 5).
MQTT_VERSIONS: dict[str, int] = {"3.1.1": 4, "311": 4, "4": 4, "5": 5, "5.0": 5}

STATE_DIR_ENV = "PIPESWARM_STATE_DIR"

T = TypeVar("T")


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
    #: per-device credentials (``users._mqtt_auth``): a CSV/JSON file, a stack secret file
    mqtt_credentials: str = ""
    mqtt_secret_file: str = ""
    #: what StompSubscriber, WsSubscriber and RestCommander send as ``Bearer``; "" = none
    gateway_token: str = ""


def _bad(option: str, value: Any, why: str) -> ConfigError:
    return ConfigError(f"{option} {value!r}: {why}.")


def _split(url: str, option: str, example: str) -> SplitResult:
    """``urlsplit`` whose bad port (non-numeric, out of range) is a :class:`ConfigError`."""
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as err:
        raise _bad(option, url, f"not a valid URL ({err}); {example}") from None
    return parts


def parse_mqtt_url(url: str, option: str = "--mqtt-url") -> MqttUrl:
    """Parse ``mqtt://[user[:pw]@]host[:port]`` (default port 1883) or ``mqtts://`` (8883).

    >>> parse_mqtt_url("mqtt://dev:s%40cret@127.0.0.1:1884")
    MqttUrl(host='127.0.0.1', port=1884, username='dev', password='s@cret', tls=False, ca_file=None, insecure=False)
    """
    example = "e.g. mqtt://user:pw@127.0.0.1:1883 or mqtts://host:8883"
    parts = _split(url, option, example)
    port = parts.port
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
    parts = _split(url, option, "e.g. http://127.0.0.1:8081")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _bad(
            option,
            url,
            "expected http://host:port or https://host:port, e.g. http://127.0.0.1:8081",
        )
    return url.strip().rstrip("/")


def parse_redis_url(url: str, option: str = "--redis-url") -> str:
    """Validate ``redis://host:port/db`` (or ``rediss://``, ``unix://``) and return it."""
    parts = _split(url, option, "e.g. redis://127.0.0.1:6379/0")
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


def _stack_doc(state_dir: str | Path | None = None) -> dict[str, Any]:
    """``<state_dir>/stack.json`` (default ``$PIPESWARM_STATE_DIR`` or ``.pipeswarm``), or ``{}``."""
    directory = Path(state_dir or os.environ.get(STATE_DIR_ENV) or ".pipeswarm")
    try:
        doc = json.loads((directory / "stack.json").read_text())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def stack_urls(state_dir: str | Path | None = None) -> dict[str, str]:
    """The URLs of the running embedded stack (``{"mqtt": …, "kafka": …}``), or ``{}``.

    Reads ``<state_dir>/stack.json`` (default ``$PIPESWARM_STATE_DIR`` or
    ``.pipeswarm``); a missing or unreadable file means no stack.
    """
    urls = _stack_doc(state_dir).get("urls")
    if not isinstance(urls, dict):
        return {}
    return {k: v for k, v in urls.items() if isinstance(k, str) and isinstance(v, str) and v}


def stack_secret_file(url: MqttUrl, state_dir: str | Path | None = None) -> str:
    """The running stack's secret file when ``url`` is that stack's broker (plain or TLS)
    and its MQTT auth is on, else ``""``."""
    doc = _stack_doc(state_dir)
    secret = doc.get("secret_file")
    if not isinstance(secret, str) or not doc.get("mqtt_auth", True):
        return ""
    urls = doc.get("urls")
    if not isinstance(urls, dict):
        return ""
    for key in ("mqtt", "mqtt_tls"):
        try:
            ours = parse_mqtt_url(urls[key])
        except (KeyError, TypeError, ConfigError):
            continue
        if (ours.host, ours.port) == (url.host, url.port):
            return secret
    return ""


def stack_secret(state_dir: str | Path | None = None) -> str | None:
    """The running embedded stack's secret (its ``secret_file``), or None."""
    path = _stack_doc(state_dir).get("secret_file")
    if not isinstance(path, str) or not path:
        return None
    try:
        return Path(path).read_text().strip() or None
    except OSError:
        return None


#: tokens minted by ``users._token`` (the format ``pipeline.auth.verify_token`` checks)
_minted: dict[str, str] = {}


def gateway_token(token: str, secret: str) -> str:
    """``token`` when given; else one minted from ``secret`` (once per process); else ""."""
    if token or not secret:
        return token
    if secret not in _minted:
        _minted[secret] = mint_token(secret, "pipeswarm-load")
    return _minted[secret]


def _stack_default(key: str) -> Callable[[], str | None]:
    return lambda: stack_urls().get(key)


def _option(
    flag: str, kind: Callable[[Any], T], default: T, env: str, help: str, **more: Any
) -> Option[T]:
    """An :class:`Option` of this group: a bad value is a :class:`ConfigError`."""
    return Option(flag, kind, default, env, help, error=ConfigError, **more)


MQTT_URL = _option(
    "--mqtt-url",
    str,
    DEFAULTS["mqtt"],
    "PIPESWARM_MQTT_URL",
    "MQTT broker, mqtt://[user:pw@]host:port or mqtts:// for TLS",
    default_from=_stack_default("mqtt"),
    secret=True,  # the embedded stack's URL carries its generated password: masked in the web UI
)
GATEWAY_URL = _option(
    "--gateway-url",
    str,
    DEFAULTS["gateway"],
    "PIPESWARM_GATEWAY_URL",
    "Gateway HTTP/WebSocket/STOMP base URL",
    default_from=_stack_default("gateway"),
)
KAFKA_BOOTSTRAP = _option(
    "--kafka-bootstrap",
    str,
    DEFAULTS["kafka"],
    "PIPESWARM_KAFKA_BOOTSTRAP",
    "Kafka bootstrap servers host:port[,host:port]",
    default_from=_stack_default("kafka"),
)
REDIS_URL = _option(
    "--redis-url",
    str,
    DEFAULTS["redis"],
    "PIPESWARM_REDIS_URL",
    "Redis URL",
    default_from=_stack_default("redis"),
    secret=True,
)
DEVICE_INTERVAL = _option(
    "--device-interval",
    float,
    0.1,  # the original Jetson devices publish every 100 ms
    "PIPESWARM_DEVICE_INTERVAL",
    "Seconds between a device's publishes, on an open-model schedule "
    "(0 = connect and listen for commands only)",
    check=at_least(0, "must be 0 (no publishing) or a positive number of seconds"),
)
MQTT_QOS = _option(
    "--mqtt-qos", int, 1, "PIPESWARM_MQTT_QOS", "QoS of device publishes", choices=(0, 1, 2)
)
MQTT_VERSION = _option(
    "--mqtt-version",
    str,
    "3.1.1",
    "PIPESWARM_MQTT_VERSION",
    "MQTT protocol version of the devices",
    choices=("3.1.1", "5"),
)
PAYLOAD_TEMPLATE = _option(
    "--payload-template",
    str,
    "",
    "PIPESWARM_PAYLOAD_TEMPLATE",
    'JSON file of the device message; string values "{device_id}", "{x}", "{y}", '
    '"{timestamp}", "{seq}" are filled in. Empty: the original {"x","y","timestamp"} '
    "on a smooth trajectory",
    check=lambda path: (
        None if Path(path).is_file() else "no such file; give a JSON file or leave it empty"
    ),
)
MQTT_KEEPALIVE = _option(
    "--mqtt-keepalive",
    int,
    60,
    "PIPESWARM_MQTT_KEEPALIVE",
    "MQTT keepalive in seconds",
    check=lambda s: None if 0 <= s <= 65535 else "must be 0 (off) to 65535 seconds",
)


def _a_file(path: str) -> str | None:
    return None if Path(path).is_file() else "no such file"


MQTT_CREDENTIALS = _option(
    "--mqtt-credentials",
    str,
    "",
    "PIPESWARM_MQTT_CREDENTIALS",
    "CSV file of 'device_id,password' lines (or a JSON object) for a broker of one's own: "
    "each device logs in as its id with its password",
    check=_a_file,
)
MQTT_SECRET_FILE = _option(
    "--mqtt-secret-file",
    str,
    "",
    "PIPESWARM_MQTT_SECRET_FILE",
    "A pipeswarm stack secret: each device logs in as its id with the password derived "
    "from it. Empty: the running embedded stack's, when --mqtt-url is its broker",
    check=_a_file,
)
#: Backend URLs and device knobs.
TOKEN = _option(
    "--token",
    str,
    "",
    "PIPESWARM_TOKEN",
    "Bearer token (JWT) the gateway users send: STOMP CONNECT, the raw WebSocket upgrade, "
    "REST; empty: one minted from --jwt-secret",
    doc_default="none",
    secret=True,
)
JWT_SECRET = _option(
    "--jwt-secret",
    str,
    "",
    "PIPESWARM_JWT_SECRET",
    "Secret the gateway signs its tokens with (HS256): the gateway users mint their token "
    "from it when --token is empty",
    default_from=stack_secret,
    doc_default="the running embedded stack's (its secret_file)",
    secret=True,
)
#: Backend URLs and device knobs.
OPTIONS = OptionGroup(
    "pipeswarm backends and devices",
    MQTT_URL,
    GATEWAY_URL,
    KAFKA_BOOTSTRAP,
    REDIS_URL,
    DEVICE_INTERVAL,
    MQTT_QOS,
    MQTT_VERSION,
    PAYLOAD_TEMPLATE,
    MQTT_KEEPALIVE,
    MQTT_CREDENTIALS,
    MQTT_SECRET_FILE,
    TOKEN,
    JWT_SECRET,
)


def parse_settings(options: Namespace | None) -> Settings:
    """Parse and validate the options (``None``: the defaults, e.g. a bare ``Environment``)."""
    mqtt = parse_mqtt_url(MQTT_URL.read(options))
    return Settings(
        mqtt=mqtt,
        gateway_url=parse_http_url(GATEWAY_URL.read(options)),
        kafka_bootstrap=parse_kafka_bootstrap(KAFKA_BOOTSTRAP.read(options)),
        redis_url=parse_redis_url(REDIS_URL.read(options)),
        device_interval=DEVICE_INTERVAL.read(options),
        mqtt_qos=MQTT_QOS.read(options),
        mqtt_version=MQTT_VERSIONS[MQTT_VERSION.read(options)],
        payload_template=PAYLOAD_TEMPLATE.read(options),
        mqtt_keepalive=MQTT_KEEPALIVE.read(options),
        mqtt_credentials=MQTT_CREDENTIALS.read(options),
        mqtt_secret_file=MQTT_SECRET_FILE.read(options),
        gateway_token=gateway_token(TOKEN.read(options), JWT_SECRET.read(options)),
    )


_cache: weakref.WeakKeyDictionary[Environment, tuple[tuple[Any, ...], Settings]] = (
    weakref.WeakKeyDictionary()
)


def settings(environment: Environment) -> Settings:
    """The parsed :class:`Settings` of ``environment`` (parsed once, again only on change)."""
    options = environment.parsed_options
    key = OPTIONS.key(options)
    hit = _cache.get(environment)
    if hit is not None and hit[0] == key:
        return hit[1]
    parsed = parse_settings(options)
    _cache[environment] = (key, parsed)
    return parsed


def _check_settings(environment: Environment) -> None:
    """The URLs must parse and the payload template be a JSON object (checked at ``init``)."""
    s = settings(environment)
    if s.payload_template:
        from users._mqtt_payload import load_template  # (it imports this module)

        load_template(s.payload_template)


OPTIONS.validators.append(_check_settings)
OPTIONS.register()
