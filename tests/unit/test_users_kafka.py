"""KafkaProducer without a broker: producer settings, device keys, payload, options."""

from __future__ import annotations

import argparse

import pytest
from locust.env import Environment
from locust.event import Events

from telemetry import envelope
from tests.harness import parse_options
from users.exceptions import ConfigError
from users.kafka import OPTIONS, KafkaProducer, kafka_settings


class Producer(KafkaProducer):
    pass


class Tuned(KafkaProducer):
    acks = "1"
    linger_ms = 0
    compression = "lz4"
    interval = 0.0
    producer_config = {"message.timeout.ms": 5000, "batch.size": 1000}


def env(*args: str) -> Environment:
    return Environment(events=Events(), parsed_options=parse_options(*args))


def test_producer_settings_come_from_the_options():
    user = Producer(
        env(
            "--kafka-bootstrap", "kafka://10.0.0.5:9093",
            "--kafka-acks", "0",
            "--kafka-linger-ms", "20",
            "--kafka-compression", "zstd",
            "--kafka-interval", "0.25",
        )
    )  # fmt: skip
    assert user.conf["bootstrap.servers"] == "10.0.0.5:9093"
    assert (user.conf["acks"], user.conf["linger.ms"], user.conf["compression.type"]) == (
        "0",
        20.0,
        "zstd",
    )
    assert user.interval_ns == 250_000_000
    assert user.produce_name == "produce:mqtt-messages"


def test_class_attributes_win_over_the_options():
    user = Tuned(env("--kafka-acks", "all", "--kafka-interval", "1"))
    assert (user.conf["acks"], user.conf["linger.ms"], user.conf["compression.type"]) == (
        "1",
        0.0,
        "lz4",
    )
    assert user.conf["message.timeout.ms"] == 5000 and user.conf["batch.size"] == 1000
    assert user.interval_ns == 0


def test_each_user_is_one_device_key_and_its_payload_is_a_kafka_envelope():
    e = env()
    a, b = Producer(e), Producer(e)
    assert (a.device_id, b.device_id) == ("kafka-0001", "kafka-0002")  # per Environment
    assert a.key == a.device_id.encode()
    body = a.payload(7, 1_000, 2_000)
    tr = envelope.parse(body)
    assert tr is not None
    assert (tr.device_id, tr.seq, tr.t0, tr.tp, tr.src) == (a.device_id, 7, 1_000, 2_000, "kafka")
    assert {"x", "y", "timestamp"} <= set(tr.fields)


@pytest.mark.parametrize(
    ("args", "what"),
    [
        (("--kafka-interval", "-1"), "--kafka-interval"),
        (("--kafka-linger-ms", "-5"), "--kafka-linger-ms"),
        (("--kafka-max-messages", "-2"), "--kafka-max-messages"),
    ],
)
def test_bad_values_are_one_sentence(args, what):
    with pytest.raises(ConfigError, match=what):
        kafka_settings(env(*args))


def test_a_bad_option_exits_2_at_init(capsys):
    e = Environment(events=Events(), parsed_options=argparse.Namespace(kafka_compression="brotli"))
    with pytest.raises(SystemExit) as exit_info:
        OPTIONS.validate(e)
    assert exit_info.value.code == 2
    assert "--kafka-compression 'brotli'" in capsys.readouterr().err
