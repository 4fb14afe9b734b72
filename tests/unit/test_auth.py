"""pipeline.auth: the stack secret, derived MQTT passwords, and JWTs checked for
signature, issuer and expiry."""

from __future__ import annotations

import stat
import time

import pytest

from pipeline import auth

SECRET = "x" * 43


def test_the_secret_is_private_and_kept_across_calls(tmp_path):
    path = auth.create_secret(tmp_path)
    first = auth.read_secret(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first) >= 40
    assert auth.read_secret(auth.create_secret(tmp_path)) == first


def test_mqtt_passwords_are_derived_per_user():
    a = auth.mqtt_password(SECRET, "dev-1")
    assert a == auth.mqtt_password(SECRET, "dev-1")
    assert a != auth.mqtt_password(SECRET, "dev-2")
    assert a != auth.mqtt_password("y" * 43, "dev-1")


def test_a_minted_token_verifies_with_its_claims():
    claims = auth.verify_token(SECRET, auth.mint_token(SECRET, "alice"))
    assert claims["sub"] == "alice" and claims["iss"] == auth.ISSUER
    assert claims["exp"] - claims["iat"] == auth.TOKEN_TTL_S


@pytest.mark.parametrize(
    "token, why",
    [
        (lambda: auth.mint_token("z" * 43), "signature"),
        (lambda: auth.mint_token(SECRET, now=time.time() - 2 * auth.TOKEN_TTL_S), "expired"),
        (lambda: auth.mint_token(SECRET, issuer="someone-else"), "issuer"),
        (lambda: "not.a.jwt", "malformed"),
        (lambda: "", "no bearer token"),
    ],
)
def test_bad_tokens_are_rejected_saying_why(token, why):
    with pytest.raises(auth.InvalidToken, match=why):
        auth.verify_token(SECRET, token())


def test_the_load_sides_token_is_one_the_gateway_accepts():
    from users._token import mint_token

    claims = auth.verify_token(SECRET, mint_token(SECRET, "pipeswarm-load"))
    assert claims["sub"] == "pipeswarm-load"
    with pytest.raises(auth.InvalidToken, match="signature"):
        auth.verify_token("z" * 43, mint_token(SECRET))
