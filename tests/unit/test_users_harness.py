"""The option parsing shared by the user tests (``tests/harness.py``): env vars, secrets."""

from __future__ import annotations

import argparse

from locust.argument_parser import get_empty_argument_parser

from tests.harness import parse_options
from users import _config as users_config


def test_every_pipeswarm_user_option_has_its_env_var(monkeypatch):
    opts = parse_options()
    assert opts.stomp_destination == "/topic/coordinates"
    assert opts.token == ""
    assert opts.stomp_device_count == 0
    assert (opts.kafka_interval, opts.kafka_acks, opts.kafka_linger_ms) == (0.1, "all", 5.0)
    assert (opts.kafka_compression, opts.kafka_max_messages) == ("none", 0)
    monkeypatch.setenv("PIPESWARM_STOMP_DESTINATION", "/topic/devices/{device_id}")
    monkeypatch.setenv("PIPESWARM_TOKEN", "jwt")
    monkeypatch.setenv("PIPESWARM_STOMP_DEVICE_COUNT", "10")
    monkeypatch.setenv("PIPESWARM_KAFKA_INTERVAL", "0.02")
    monkeypatch.setenv("PIPESWARM_KAFKA_ACKS", "1")
    monkeypatch.setenv("PIPESWARM_KAFKA_LINGER_MS", "0")
    monkeypatch.setenv("PIPESWARM_KAFKA_COMPRESSION", "lz4")
    monkeypatch.setenv("PIPESWARM_KAFKA_MAX_MESSAGES", "500")
    opts = parse_options()
    assert opts.stomp_destination == "/topic/devices/{device_id}"
    assert opts.token == "jwt"
    assert opts.stomp_device_count == 10
    assert (opts.kafka_interval, opts.kafka_acks, opts.kafka_linger_ms) == (0.02, "1", 0.0)
    assert (opts.kafka_compression, opts.kafka_max_messages) == ("lz4", 500)
    # the command line wins over the environment
    assert parse_options("--token", "cli").token == "cli"


def test_the_token_and_secret_are_masked_in_the_web_ui_and_in_run_json():
    parser = get_empty_argument_parser()
    users_config.OPTIONS.add_arguments(parser)
    for dest in ("token", "jwt_secret"):
        (action,) = [a for a in parser._actions if a.dest == dest]
        assert getattr(action, "is_secret", False) is True
    from telemetry.results import safe_options

    masked = safe_options(argparse.Namespace(token="jwt", jwt_secret="s"))
    assert masked == {"token": "***", "jwt_secret": "***"}


def test_the_minted_token_is_one_per_process_and_passes_the_gateways_check():
    from pipeline import auth
    from users._config import gateway_token
    from users._token import ISSUER as TOKEN_ISSUER

    secret = "load-side-secret-of-at-least-32-bytes"
    token = gateway_token("", secret)
    assert gateway_token("", secret) is token  # minted once per process
    claims = auth.verify_token(secret, token)  # what the gateway runs
    assert claims["sub"] == "pipeswarm-load" and claims["exp"] - claims["iat"] >= 3600
    assert TOKEN_ISSUER == auth.ISSUER
    assert gateway_token("given", secret) == "given" and gateway_token("", "") == ""
