"""One declaration per option: parser, typed reader, init check and docs table agree."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest
from locust.argument_parser import get_empty_argument_parser
from locust.env import Environment
from locust.event import Events

import users.shapes  # noqa: F401 - registers every load-side group
from telemetry import options as opts
from telemetry.exceptions import EXIT_USAGE, OptionError, SloError, exit_code
from telemetry.options_doc import render
from users import exceptions as users_exc

REPO = Path(__file__).resolve().parents[2]


def _all() -> list[opts.Option]:
    return [o for g in opts.GROUPS for o in g.options]


def test_every_load_side_option_is_declared_once():
    flags = [o.flag for o in _all()]
    assert len(flags) == len(set(flags)) == 48
    groups = {g.title for g in opts.GROUPS}
    assert groups == {
        "pipeswarm telemetry",
        "pipeswarm Prometheus exporter",
        "pipeswarm SLO check",
        "pipeswarm backends and devices",
        "pipeswarm Kafka producer",
        "pipeswarm STOMP subscriber",
        "pipeswarm load shape",
        "pipeswarm faults",
        "pipeswarm ingest comparison",
        "pipeswarm AMQP users",
    }


def test_the_docs_table_is_generated_from_the_declarations():
    assert (REPO / "docs" / "options.md").read_text(encoding="utf-8") == render(), (
        "docs/options.md is stale: python -m telemetry.options_doc > docs/options.md"
    )


def test_the_readme_names_the_declared_options_with_their_env_vars(monkeypatch, tmp_path):
    monkeypatch.setenv("PIPESWARM_STATE_DIR", str(tmp_path))  # no stack: the built-in defaults
    declared = {o.flag: o for o in _all()}
    rows = re.findall(r"^\| `(--[a-z-]+)` \| `(PIPESWARM_[A-Z_]+)` \| `([^`]*)`", _readme(), re.M)
    assert len(rows) == 6
    for flag, env, default in rows:
        assert declared[flag].env == env
        o = declared[flag]
        assert default in (str(o.current_default()), o.doc_default.strip("`")), flag
    table = _readme().split("| option | env | default |", 1)[1].split("\n\n", 1)[0]
    named = set(re.findall(r"`(--[a-z][a-z-]+)", table))
    assert len(named) == 27
    for flag in named - {"--step-", "--spike-"}:  # `--step-*`, `--spike-*` name groups
        assert flag in declared, flag


def _readme() -> str:
    return (REPO / "README.md").read_text(encoding="utf-8")


def test_each_option_registers_its_env_var_and_default(monkeypatch, tmp_path):
    monkeypatch.setenv("PIPESWARM_STATE_DIR", str(tmp_path))
    parser = get_empty_argument_parser()
    opts.add_all(parser)
    parsed = parser.parse_args([])
    for o in _all():
        assert getattr(parsed, o.dest) == o.default, o.flag
        assert o.read(parsed) == o.default, o.flag
    monkeypatch.setenv("PIPESWARM_KAFKA_MAX_MESSAGES", "7")
    monkeypatch.setenv("PIPESWARM_E2E_GRACE", "0.5")
    parsed = parser.parse_args(["--e2e-grace", "2"])
    assert parsed.kafka_max_messages == 7 and parsed.e2e_grace == 2.0  # CLI > env


def test_the_reader_converts_web_ui_strings_and_checks_in_one_sentence():
    ns = argparse.Namespace(e2e_grace="1.5", mqtt_qos="2", kafka_acks="1")
    from users import _config, kafka

    assert opts.E2E_GRACE.read(ns) == 1.5
    assert _config.MQTT_QOS.read(ns) == 2
    assert opts.E2E_GRACE.read(argparse.Namespace(e2e_grace="")) == 5.0  # empty: the default
    with pytest.raises(OptionError, match=r"^--e2e-grace 'soon': must be a number\.$"):
        opts.E2E_GRACE.read(argparse.Namespace(e2e_grace="soon"))
    with pytest.raises(users_exc.ConfigError, match=r"^--mqtt-qos 3: must be 0, 1 or 2\.$"):
        _config.MQTT_QOS.read(argparse.Namespace(mqtt_qos=3))
    with pytest.raises(users_exc.ConfigError, match=r"^--kafka-acks '2': must be all, 1 or 0\.$"):
        kafka.ACKS_OPTION.read(argparse.Namespace(kafka_acks="2"))


def test_one_error_tree_and_one_exit_code_for_a_user_mistake(capsys):
    assert issubclass(users_exc.ConfigError, OptionError) and issubclass(SloError, OptionError)
    assert issubclass(users_exc.ConfigError, users_exc.UsersError)
    for cls in (users_exc.MqttError, users_exc.StompError, users_exc.WsError):
        assert issubclass(cls, users_exc.UsersError) and not issubclass(cls, OptionError)
    assert issubclass(users_exc.KafkaTopicMissing, users_exc.UsersError)
    assert exit_code(users_exc.ConfigError("x")) == exit_code(SloError("y")) == EXIT_USAGE == 2
    assert exit_code(users_exc.ConnectFailed("z")) == 1
    env = Environment(events=Events(), parsed_options=argparse.Namespace(shape="stages"))
    with pytest.raises(SystemExit) as info:
        users.shapes.OPTIONS.validate(env)
    assert info.value.code == 2
    assert capsys.readouterr().err == (
        "pipeswarm: --shape stages needs --shape-stages SECONDS:USERS[:RATE],...\n"
    )


def test_every_users_error_is_defined_in_users_exceptions():
    import users

    for name in users_exc.__all__:
        obj = getattr(users_exc, name)
        if isinstance(obj, type) and issubclass(obj, Exception) and obj is not OptionError:
            assert obj.__module__ == "users.exceptions", name
            assert name in users_exc.__doc__, f"{name} is missing from the drawn tree"
    for name in users.__all__:
        obj = getattr(users, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert obj.__module__ == "users.exceptions", name


def test_an_unwritable_results_dir_is_one_sentence_before_the_run(tmp_path, monkeypatch):
    from telemetry.results import check_writable

    monkeypatch.chdir(tmp_path)
    assert check_writable(None) is None
    assert check_writable(str(tmp_path / "runs/{run_id}/out")) is None
    assert list(tmp_path.iterdir()) == []  # nothing made, no probe left behind
    (tmp_path / "a-file").write_text("")
    assert check_writable(str(tmp_path / "a-file/x")) == (
        f"--results-dir {tmp_path}/a-file/x: {tmp_path}/a-file is not a directory"
    )
    assert check_writable("/proc/nope/{run_id}") == (
        "--results-dir /proc/nope/{run_id}: cannot write to /proc (No such file or directory)"
    )


def test_a_secret_options_default_shows_no_password(monkeypatch, tmp_path):
    """The stack's URLs carry its generated password: --help and the web UI's labels mask it."""
    from users import _config

    (tmp_path / "stack.json").write_text('{"urls": {"mqtt": "mqtt://dev:s3cret@127.0.0.1:1884"}}')
    monkeypatch.setenv("PIPESWARM_STATE_DIR", str(tmp_path))
    parser = get_empty_argument_parser()
    _config.OPTIONS.add_arguments(parser)
    action = parser.args_included_in_web_ui["mqtt_url"]
    assert action.default == "mqtt://dev:s3cret@127.0.0.1:1884"  # still used as given
    assert "mqtt://dev:***@127.0.0.1:1884 (from .pipeswarm/stack.json)" in action.help
    assert "s3cret" not in action.help and action.is_secret
