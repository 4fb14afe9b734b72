"""The gateway's token checks without a server: settings, reasons, which requests need one."""

from __future__ import annotations

import time

import pytest

from pipeline import auth
from pipeline.config import Settings
from pipeline.exceptions import ConfigError
from pipeline.gateway._guard import Authenticator, bearer, secret_of
from pipeline.gateway._metrics import GatewayStats

SECRET = "unit-test-secret-of-at-least-32-bytes"


def test_auth_on_without_a_secret_is_one_sentence_naming_the_settings():
    with pytest.raises(ConfigError) as err:
        Authenticator(Settings(), GatewayStats())
    assert "GATEWAY_JWT_SECRET_FILE" in str(err.value) and "GATEWAY_AUTH=off" in str(err.value)
    assert Authenticator(Settings(gateway_auth="off"), GatewayStats()).refuse("", "http") is None


def test_the_secret_comes_from_the_variable_or_the_file(tmp_path):
    path = auth.create_secret(tmp_path)
    assert secret_of(Settings(gateway_jwt_secret_file=str(path))) == auth.read_secret(path)
    assert secret_of(Settings(gateway_jwt_secret="direct")) == "direct"
    with pytest.raises(ConfigError, match="cannot be used"):
        secret_of(Settings(gateway_jwt_secret_file=str(tmp_path / "missing")))


def test_each_refusal_is_counted_by_protocol_and_reason():
    stats = GatewayStats()
    guard = Authenticator(Settings(gateway_jwt_secret=SECRET), stats)
    assert guard.refuse(auth.mint_token(SECRET), "stomp") is None
    cases = {
        "missing": "",
        "malformed": "a.b.c",
        "signature": auth.mint_token(SECRET + "x"),
        "expired": auth.mint_token(SECRET, ttl_s=1, now=time.time() - 60),
        "issuer": auth.mint_token(SECRET, issuer="elsewhere"),
    }
    for reason, token in cases.items():
        assert guard.refuse(token, "http"), reason
    assert {r: n for (p, r), n in stats.auth_failures.items() if p == "http"} == dict.fromkeys(
        cases, 1
    )
    assert sum(n for (p, _r), n in stats.auth_failures.items() if p != "http") == 0


def test_writes_always_need_a_token_reads_only_when_set():
    public = Authenticator(Settings(gateway_jwt_secret=SECRET), GatewayStats())
    private = Authenticator(
        Settings(gateway_jwt_secret=SECRET, gateway_reads="token"), GatewayStats()
    )
    for guard in (public, private):
        assert guard.needs_token("POST", "/api/commands/x")
        assert guard.needs_token("POST", "/api/ingest/x")  # any future POST route too
        assert not guard.needs_token("GET", "/api/health")
        assert not guard.needs_token("GET", "/metrics")
    assert not public.needs_token("GET", "/api/stats")
    assert private.needs_token("GET", "/api/stats")


def test_bearer_takes_the_token_of_the_bearer_scheme_only():
    assert bearer("Bearer abc") == "abc"
    assert bearer("bearer  abc ") == "abc"
    assert bearer("Basic abc") == "" and bearer(None) == "" and bearer("") == ""
