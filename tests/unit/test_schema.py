"""The checks at the edge (pipeline/_schema.py): every reason, and what passes."""

from __future__ import annotations

import json

import pytest

from pipeline import _schema
from pipeline._schema import Rejected, decode, device_from_topic, dumps, parse

LIMIT = 64 * 1024
#: The original IoT server's payload (mosquitto_pub -t sensors/robot1/coordinates -m ...).
ORIGINAL = b'{"x": 123.45, "y": 67.89, "timestamp": 1691234567}'


def reason_of(payload: bytes, device_id: str | None = "robot1", max_bytes: int = LIMIT) -> str:
    with pytest.raises(Rejected) as info:
        parse(payload, device_id, max_bytes)
    assert info.value.reason in _schema.REASONS
    return info.value.reason


def deep(levels: int) -> bytes:
    """A device message whose ``extra`` field is nested ``levels`` arrays deep."""
    head = b'{"x": 1, "y": 2, "timestamp": 3, "extra": '
    return head + b"[" * levels + b"]" * levels + b"}"


def test_the_original_payload_is_accepted_with_the_id_from_the_topic():
    msg, filled = decode(ORIGINAL, device_from_topic("sensors/robot1/coordinates"), LIMIT)
    assert filled is True
    assert msg == {"device_id": "robot1", "x": 123.45, "y": 67.89, "timestamp": 1691234567}
    assert json.loads(dumps(msg)) == msg


def test_a_matching_device_id_is_accepted_unchanged():
    payload = b'{"device_id": "robot1", "x": 1.5, "y": -2, "timestamp": 1.0, "trace": {"hops": {}}}'
    msg, filled = decode(payload, "robot1", LIMIT)
    assert filled is False
    assert msg == json.loads(payload)


def test_a_device_id_that_differs_from_the_topic_is_device_mismatch():
    assert reason_of(b'{"device_id": "robot2", "x": 1, "y": 2, "timestamp": 3}') == (
        "device_mismatch"
    )
    # Not a string at all is a mismatch too, never a silent overwrite.
    assert reason_of(b'{"device_id": 7, "x": 1, "y": 2, "timestamp": 3}') == "device_mismatch"


def test_without_a_transport_identity_the_payload_must_name_the_device():
    assert reason_of(b'{"x": 1, "y": 2, "timestamp": 3}', device_id=None) == "missing_device_id"
    assert reason_of(b'{"device_id": "", "x": 1, "y": 2, "timestamp": 3}', None) == (
        "missing_device_id"
    )
    assert (
        parse(b'{"device_id": "k", "x": 1, "y": 2, "timestamp": 3}', None, LIMIT)["device_id"]
        == "k"
    )


@pytest.mark.parametrize(
    "payload",
    [
        b'{"y": 2, "timestamp": 3}',  # x missing
        b'{"x": "1", "y": 2, "timestamp": 3}',  # a string
        b'{"x": true, "y": 2, "timestamp": 3}',  # bool is an int in Python, not a number here
        b'{"x": null, "y": 2, "timestamp": 3}',
        b'{"x": NaN, "y": 2, "timestamp": 3}',
        b'{"x": 1, "y": -Infinity, "timestamp": 3}',
        b'{"x": 1, "y": 2, "timestamp": 1e400}',  # decodes to inf
        b'{"x": 1, "y": 2, "timestamp": 3, "note": NaN}',  # non-finite anywhere
        b'{"x": 1, "y": 2, "timestamp": 3, "trace": {"t0": 1e999}}',
    ],
)
def test_missing_or_non_finite_coordinates_are_schema(payload):
    assert reason_of(payload) == "schema"


@pytest.mark.parametrize(
    "payload",
    [b"{this is not json", b"[1, 2, 3]", b'"just a string"', b"\xff\xfe{}", b""],
)
def test_what_is_not_a_json_object_is_malformed_json(payload):
    assert reason_of(payload) == "malformed_json"


def test_over_the_size_limit_is_oversize_before_anything_is_decoded():
    payload = b'{"x": 1, "y": 2, "timestamp": 3, "blob": "' + b"x" * 100 + b'"}'
    assert reason_of(payload, max_bytes=len(payload) - 1) == "oversize"
    assert parse(payload, "robot1", len(payload))["device_id"] == "robot1"


def test_nesting_is_limited_to_max_depth():
    # The message object is level 1, so extra may nest MAX_DEPTH - 1 arrays.
    assert parse(deep(_schema.MAX_DEPTH - 1), "r", LIMIT)["x"] == 1
    assert reason_of(deep(_schema.MAX_DEPTH)) == "too_deep"


def test_the_985_deep_2kb_message_is_too_deep_not_a_recursion_error():
    payload = deep(985)
    assert 1_900 < len(payload) < 2_100
    assert reason_of(payload) == "too_deep"


def test_brackets_inside_strings_do_not_count_as_nesting():
    payload = json.dumps(
        {"x": 1, "y": 2, "timestamp": 3, "note": "[[[{{{" * 20, "q": 'a\\"[[[[' * 10}
    ).encode()
    assert _schema.depth(payload) == 1
    assert parse(payload, "robot1", LIMIT)["note"] == "[[[{{{" * 20


@pytest.mark.parametrize(
    ("topic", "device"),
    [
        ("sensors/robot1/coordinates", "robot1"),
        ("sensors//coordinates", None),
        ("sensors/a/b/coordinates", None),
        ("orin/robot1/command", None),
    ],
)
def test_device_from_topic(topic, device):
    assert device_from_topic(topic) == device


def test_dumps_is_compact_and_round_trips():
    msg = {"device_id": "r", "x": 1.5, "y": 2, "timestamp": 3, "trace": {"hops": {"bridge": 9}}}
    assert dumps(msg) == json.dumps(msg, separators=(",", ":")).encode()
