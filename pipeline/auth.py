"""The embedded stack's credentials, all derived from one stack secret.

At `up` the stack writes a random secret to ``<state_dir>/secret`` (mode 0600)
and records its path in ``stack.json`` (``"secret_file"``). Everything else is
derived from it, so nobody ships a file of 50,000 passwords:

- a device's MQTT password is :func:`mqtt_password` ``(secret, device_id)``
  (HMAC-SHA256, URL-safe base64): the broker's password file is generated from
  it for the service accounts, and the load side computes the same value for
  every device it simulates;
- gateway tokens are JWTs signed HS256 with the secret (:func:`mint_token`),
  with an issuer and an expiry that :func:`verify_token` checks.

The load side cannot import this module (``locust -f locustfiles/pipeline.py`` makes
``pipeline`` that locustfile): ``users/_token.py`` and ``users/_mqtt_auth.py`` derive the
same values, held equal by unit tests. The pipeline never imports the load side.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from pathlib import Path
from typing import Any

from pipeline.exceptions import InvalidToken

__all__ = [
    "ISSUER",
    "SECRET_FILE",
    "TOKEN_TTL_S",
    "InvalidToken",
    "create_secret",
    "mint_token",
    "mqtt_password",
    "read_secret",
    "verify_token",
]

#: file name of the stack secret inside the state dir
SECRET_FILE = "secret"
#: the ``iss`` claim of every token the stack issues and accepts
ISSUER = "pipeswarm"
#: default token lifetime: longer than any run, short enough to matter
TOKEN_TTL_S = 12 * 3600
_ALGORITHM = "HS256"


def create_secret(state_dir: Path) -> Path:
    """Write a new random secret to ``<state_dir>/secret`` (0600) unless one exists.

    The secret outlives component restarts (a restarted broker keeps accepting
    the same passwords); `down` without ``--keep-data`` removes it.
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / SECRET_FILE
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            # hex: a URL-safe token starts with "-" one time in 64, and then
            # `--jwt-secret <secret>` is an option to argparse, not its value
            f.write(secrets.token_hex(32) + "\n")
    return path


def read_secret(path: str | Path) -> str:
    """The secret in ``path``, whitespace stripped; ``ValueError`` when empty."""
    value = Path(path).read_text().strip()
    if not value:
        raise ValueError(f"{path} is empty: it should hold the stack secret")
    return value


def mqtt_password(secret: str, username: str) -> str:
    """The MQTT password of ``username`` (a device id or a service account)."""
    digest = hmac.new(secret.encode(), b"mqtt:" + username.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def mint_token(
    secret: str,
    subject: str = "pipeswarm-load",
    *,
    ttl_s: float = TOKEN_TTL_S,
    issuer: str = ISSUER,
    now: float | None = None,
    **claims: Any,
) -> str:
    """A signed HS256 bearer token for ``subject``, valid ``ttl_s`` seconds."""
    import jwt  # here, not at import: it imports ssl, which gevent must patch first

    issued = int(time.time() if now is None else now)
    payload = {"iss": issuer, "sub": subject, "iat": issued, "exp": issued + int(ttl_s), **claims}
    return jwt.encode(payload, secret, algorithm=_ALGORITHM)


def verify_token(secret: str, token: str, *, issuer: str = ISSUER) -> dict[str, Any]:
    """The claims of ``token``; :class:`InvalidToken` saying why when it is not acceptable."""
    import jwt

    if not token:
        raise InvalidToken("no bearer token")
    try:
        return jwt.decode(
            token,
            secret,
            algorithms=[_ALGORITHM],
            issuer=issuer,
            options={"require": ["exp", "iss", "sub"]},
        )
    except jwt.ExpiredSignatureError as e:
        raise InvalidToken("token expired") from e
    except jwt.InvalidIssuerError as e:
        raise InvalidToken("token from another issuer") from e
    except jwt.InvalidSignatureError as e:
        raise InvalidToken("token signature does not verify") from e
    except jwt.PyJWTError as e:
        raise InvalidToken(f"malformed token ({e})") from e
