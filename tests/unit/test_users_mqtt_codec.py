"""users._mqtt_codec: the packets a device sends, byte for byte, and what it decodes."""

from __future__ import annotations

import pytest

from users._mqtt_codec import (
    MQTT5,
    MQTT311,
    ProtocolError,
    Will,
    ack_packet,
    connect_packet,
    parse_properties,
    publish_packet,
    read_varint,
    subscribe_packet,
    topic_field,
    utf8,
    varint,
)


@pytest.mark.parametrize("n", [0, 1, 127, 128, 16383, 16384, 2097151, 2097152, 268435455])
def test_varint_round_trip(n):
    raw = varint(n)
    assert len(raw) == (1 if n < 128 else 2 if n < 16384 else 3 if n < 2097152 else 4)
    assert read_varint(raw + b"rest", 0) == (n, len(raw))


def test_varint_incomplete_and_too_long():
    assert read_varint(b"\x80", 0) is None
    with pytest.raises(ProtocolError):
        read_varint(b"\xff\xff\xff\xff\x01", 0)


def test_connect_311_minimal():
    # MQTT 3.1.1 §3.1: "MQTT", level 4, flags 0x02 (clean session), keepalive 60, client id
    assert connect_packet("a", keepalive=60) == b"\x10\x0d\x00\x04MQTT\x04\x02\x00\x3c\x00\x01a"


def test_connect_311_auth_will_persistent():
    raw = connect_packet(
        "dev",
        keepalive=30,
        clean=False,
        username="u",
        password="p",
        will=Will("w/t", b"gone", qos=1, retain=True),
    )
    flags = raw[9]
    assert (
        flags == 0x80 | 0x40 | 0x20 | 0x08 | 0x04
    )  # user, password, will retain, will QoS 1, will
    assert raw[12:] == utf8("dev") + utf8("w/t") + utf8(b"gone") + utf8("u") + utf8("p")


def test_connect_5_has_properties():
    raw = connect_packet("a", version=MQTT5, keepalive=60, clean=False, session_expiry=3600)
    assert raw[8] == MQTT5
    # properties: length 5, Session Expiry Interval (0x11) = 3600
    assert raw[12:18] == b"\x05\x11\x00\x00\x0e\x10"
    assert raw[18:] == utf8("a")
    raw = connect_packet("a", version=MQTT5, will=Will("w", b"x"))
    assert raw.endswith(utf8("a") + b"\x00" + utf8("w") + utf8(b"x"))  # empty will properties


@pytest.mark.parametrize("size", [10, 200, 20000])
@pytest.mark.parametrize("version", [MQTT311, MQTT5])
def test_publish_remaining_length(size, version):
    payload = b"p" * size
    te = topic_field("sensors/d/coordinates")
    raw = publish_packet(te, payload, 1, 0x0102, version)
    assert raw[0] == 0x32
    length, start = read_varint(raw, 1)
    assert start + length == len(raw)
    props = b"\x00" if version == MQTT5 else b""
    assert raw[start:] == te + b"\x01\x02" + props + payload
    assert publish_packet(te, payload, 0, 0, MQTT311)[0] == 0x30
    assert publish_packet(te, payload, 2, 1, MQTT311, dup=True)[0] == 0x3C


def test_acks_and_subscribe():
    assert ack_packet(4, 0x1234) == b"\x40\x02\x12\x34"
    assert ack_packet(6, 1) == b"\x62\x02\x00\x01"  # PUBREL carries flags 0010
    assert (
        subscribe_packet(7, "orin/d/command", 1, MQTT311)
        == b"\x82\x13\x00\x07" + utf8("orin/d/command") + b"\x01"
    )
    assert subscribe_packet(7, "t", 2, MQTT5) == b"\x82\x07\x00\x07\x00" + utf8("t") + b"\x02"


def test_parse_properties_skips_unknown_shapes():
    body = (
        b"\x21\x00\x0a"  # Receive Maximum 10
        + b"\x26"
        + utf8("k")
        + utf8("v")  # User Property (pair)
        + b"\x1f"
        + utf8("because")  # Reason String
        + b"\x27\x00\x01\x00\x00"  # Maximum Packet Size
    )
    data = b"xx" + varint(len(body)) + body + b"after"
    props, end = parse_properties(data, 2)
    assert props[0x21] == 10 and props[0x1F] == "because" and props[0x27] == 65536
    assert data[end:] == b"after"
    with pytest.raises(ProtocolError):
        parse_properties(b"\x02\x7e\x00", 0)  # unknown identifier
