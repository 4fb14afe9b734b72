"""Each device's MQTT username and password (``MqttDevice``), from one of:

1. the URL's ``user:pw`` (``--mqtt-url mqtt://user:pw@host:1883``): every device the same;
2. ``--mqtt-credentials FILE``: a broker of one's own with a password per device —
   CSV lines ``device_id,password`` (``#`` comments, blank lines skipped) or a JSON
   object ``{"device_id": "password", …}``; the username is the device id;
3. ``--mqtt-secret-file FILE``, or by default the running embedded stack's secret
   (``secret_file`` in ``stack.json``) when ``--mqtt-url`` is that stack's broker:
   the username is the device id and the password :func:`mqtt_password` derives
   from the secret (the broker's plugin computes the same), so no file lists
   50,000 devices.

Derived once per device (an HMAC, ~2 µs), when the device is created.

:func:`mqtt_password` is the same function as ``pipeline.auth.mqtt_password`` (a unit
test holds them equal): ``users/`` cannot import ``pipeline/``, and not only by rule —
``locust -f locustfiles/pipeline.py`` puts ``locustfiles/`` first on ``sys.path``, where
``pipeline`` is that locustfile.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import hmac
import json
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

from users.exceptions import ConfigError

__all__ = ["TOOL_USER", "Credentials", "from_file", "from_secret", "mqtt_password", "tool_login"]

#: The embedded stack's device-less account, allowed to publish and subscribe anything
#: (``pipeline._mqtt_plugin.TOOL_USER``; a unit test holds them equal).
TOOL_USER = "pipeswarm-tool"

#: device id -> (username, password)
Credentials = Callable[[str], tuple[str, str]]


def mqtt_password(secret: str, username: str) -> str:
    """HMAC-SHA256 of ``"mqtt:" + username`` keyed by the secret, URL-safe base64 unpadded."""
    digest = hmac.new(secret.encode(), b"mqtt:" + username.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


@lru_cache(maxsize=8)
def from_secret(path: str) -> Credentials:
    """Username = device id, password derived from the secret in ``path``."""
    try:
        secret = Path(path).read_text().strip()
    except OSError as err:
        raise ConfigError(f"--mqtt-secret-file {path!r}: cannot read the secret ({err}).") from None
    if not secret:
        raise ConfigError(f"--mqtt-secret-file {path!r}: the file is empty.")
    return lambda device_id: (device_id, mqtt_password(secret, device_id))


@lru_cache(maxsize=8)
def from_file(path: str) -> Credentials:
    """Username = device id, password from the CSV or JSON file ``path``."""
    passwords = _load(Path(path))

    def lookup(device_id: str) -> tuple[str, str]:
        password = passwords.get(device_id)
        if password is None:
            raise ConfigError(
                f"--mqtt-credentials {path!r}: no password for device {device_id!r}; "
                "add a line 'device_id,password' for it."
            )
        return device_id, password

    return lookup


def _load(path: Path) -> dict[str, str]:
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"--mqtt-credentials {str(path)!r}: cannot read it ({err}).") from None
    if text.lstrip().startswith("{"):
        try:
            doc = json.loads(text)
        except ValueError as err:
            raise ConfigError(
                f"--mqtt-credentials {str(path)!r}: not valid JSON ({err})."
            ) from None
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in doc.items()):
            raise ConfigError(
                f"--mqtt-credentials {str(path)!r}: the JSON must map device ids to password strings."
            )
        return dict(doc)
    passwords: dict[str, str] = {}
    lines = (line for line in text.splitlines() if line.strip() and not line.startswith("#"))
    for row in csv.reader(lines):
        if len(row) != 2:
            raise ConfigError(
                f"--mqtt-credentials {str(path)!r}: each line must be 'device_id,password', "
                f"not {','.join(row)!r}."
            )
        passwords[row[0].strip()] = row[1].strip()
    return passwords


def tool_login(secret_file: str) -> tuple[str, str]:
    """The tool account's username and password from a stack secret file (observers
    such as ``MqttSubscriber`` that read every device's topic)."""
    try:
        secret = Path(secret_file).read_text().strip()
    except OSError as err:
        raise ConfigError(f"--mqtt-secret-file {secret_file!r}: cannot read it ({err}).") from None
    return TOOL_USER, mqtt_password(secret, TOOL_USER)
