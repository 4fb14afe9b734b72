"""The bearer token the load side sends to a pipeswarm gateway, minted from a secret.

The same token as ``pipeline.auth.mint_token`` (HS256, ``iss`` ``pipeswarm``, ``sub``,
``iat``, ``exp``; a unit test holds the gateway's check to accepting it). ``users/``
cannot import ``pipeline/``: ``locust -f locustfiles/pipeline.py`` makes ``pipeline``
that locustfile (see ``users/_mqtt_auth.py``).
"""

from __future__ import annotations

import time

__all__ = ["ISSUER", "TOKEN_TTL_S", "mint_token"]

ISSUER = "pipeswarm"
TOKEN_TTL_S = 12 * 3600


def mint_token(secret: str, subject: str = "pipeswarm-load", ttl_s: float = TOKEN_TTL_S) -> str:
    import jwt  # here, not at import: it imports ssl, which gevent must patch first

    issued = int(time.time())
    claims = {"iss": ISSUER, "sub": subject, "iat": issued, "exp": issued + int(ttl_s)}
    return jwt.encode(claims, secret, algorithm="HS256")
