"""MQTT 3.1.1 and 5 packets: the few a device sends and receives, encoded by hand.

Only what :class:`users.mqtt.MqttDevice` needs: CONNECT (auth, will, clean
session / session expiry), PUBLISH QoS 0/1/2 and its acknowledgements, SUBSCRIBE,
PINGREQ, DISCONNECT; and the decoding of CONNACK, SUBACK, PUBLISH, the acks and a
server DISCONNECT. Section numbers refer to the OASIS standards:
MQTT 3.1.1 (http://docs.oasis-open.org/mqtt/mqtt/v3.1.1/os/mqtt-v3.1.1-os.html)
and MQTT 5.0 (https://docs.oasis-open.org/mqtt/mqtt/v5.0/os/mqtt-v5.0-os.html).
Properties we send are always empty; properties we receive are decoded
generically (v5 §2.2.2.2) so unknown ones are skipped, not misread.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from users.exceptions import ProtocolError

__all__ = [
    "MQTT311",
    "MQTT5",
    "CONNACK",
    "PUBLISH",
    "PUBACK",
    "PUBREC",
    "PUBREL",
    "PUBCOMP",
    "SUBACK",
    "PINGRESP",
    "DISCONNECT",
    "PINGREQ_PACKET",
    "DISCONNECT_PACKET",
    "Will",
    "ProtocolError",
    "varint",
    "read_varint",
    "utf8",
    "connect_packet",
    "publish_packet",
    "topic_field",
    "ack_packet",
    "subscribe_packet",
    "parse_properties",
    "CONNACK_V3",
    "reason_text",
]

MQTT311 = 4  # protocol level byte of 3.1.1 (§3.1.2.2)
MQTT5 = 5

# control packet types, the high nibble of the first byte (v3.1.1 §2.2.1)
CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT, AUTH = range(8, 16)

PINGREQ_PACKET = b"\xc0\x00"
#: v5 allows a remaining length of 0 for "normal disconnection" (v5 §3.14.2.1).
DISCONNECT_PACKET = b"\xe0\x00"

#: CONNACK return codes of 3.1.1 (§3.2.2.3).
CONNACK_V3 = {
    1: "unacceptable protocol version",
    2: "identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorized",
}
_V5_REASONS = {
    0x10: "no matching subscribers",
    0x80: "unspecified error",
    0x81: "malformed packet",
    0x82: "protocol error",
    0x83: "implementation specific error",
    0x84: "unsupported protocol version",
    0x85: "client identifier not valid",
    0x86: "bad user name or password",
    0x87: "not authorized",
    0x88: "server unavailable",
    0x89: "server busy",
    0x8A: "banned",
    0x8B: "server shutting down",
    0x8C: "bad authentication method",
    0x8D: "keep alive timeout",
    0x8E: "session taken over",
    0x8F: "topic filter invalid",
    0x90: "topic name invalid",
    0x91: "packet identifier in use",
    0x92: "packet identifier not found",
    0x93: "receive maximum exceeded",
    0x94: "topic alias invalid",
    0x95: "packet too large",
    0x96: "message rate too high",
    0x97: "quota exceeded",
    0x98: "administrative action",
    0x99: "payload format invalid",
    0x9A: "retain not supported",
    0x9B: "QoS not supported",
    0x9C: "use another server",
    0x9D: "server moved",
    0x9E: "shared subscriptions not supported",
    0x9F: "connection rate exceeded",
    0xA0: "maximum connect time",
    0xA1: "subscription identifiers not supported",
    0xA2: "wildcard subscriptions not supported",
}


def reason_text(code: int, version: int = MQTT5) -> str:
    """Human text of a CONNACK return code (3.1.1) or a v5 reason code."""
    if version != MQTT5:
        return CONNACK_V3.get(code, f"return code {code}")
    return _V5_REASONS.get(code, f"reason code 0x{code:02x}")


@dataclass(frozen=True, slots=True)
class Will:
    """The last will the broker publishes when a device vanishes without DISCONNECT."""

    topic: str
    payload: bytes = b""
    qos: int = 0
    retain: bool = False


def varint(n: int) -> bytes:
    """Variable Byte Integer (v3.1.1 §2.2.3), 1-4 bytes."""
    if n < 128:
        return bytes((n,))
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        if n:
            out.append(digit | 0x80)
        else:
            out.append(digit)
            return bytes(out)


def read_varint(data: bytes, i: int) -> tuple[int, int] | None:
    """Decode a Variable Byte Integer at ``data[i]``: (value, next index), None if incomplete."""
    value = 0
    shift = 0
    for k in range(4):
        if i + k >= len(data):
            return None
        b = data[i + k]
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i + k + 1
        shift += 7
    raise ProtocolError("variable byte integer longer than 4 bytes")


def utf8(text: str | bytes) -> bytes:
    """UTF-8 string / binary data with its 2-byte length prefix (§1.5.3)."""
    raw = text.encode() if isinstance(text, str) else text
    if len(raw) > 0xFFFF:
        raise ValueError("MQTT strings are at most 65535 bytes")
    return struct.pack("!H", len(raw)) + raw


def _packet(first: int, body: bytes) -> bytes:
    return bytes((first,)) + varint(len(body)) + body


def connect_packet(
    client_id: str,
    *,
    version: int = MQTT311,
    keepalive: int = 60,
    clean: bool = True,
    username: str | None = None,
    password: str | None = None,
    will: Will | None = None,
    session_expiry: int = 0,
) -> bytes:
    """CONNECT (3.1.1 §3.1, 5 §3.1). ``session_expiry`` is v5 only (clean=False keeps it)."""
    flags = 0
    if clean:
        flags |= 0x02
    if will is not None:
        flags |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
    if username is not None:
        flags |= 0x80
    if password is not None:
        flags |= 0x40
    body = bytearray(utf8("MQTT"))
    body += bytes((version, flags)) + struct.pack("!H", keepalive)
    if version == MQTT5:
        props = b""
        if session_expiry:
            props = b"\x11" + struct.pack("!I", session_expiry)  # Session Expiry Interval
        body += varint(len(props)) + props
    body += utf8(client_id)
    if will is not None:
        if version == MQTT5:
            body += b"\x00"  # no will properties
        body += utf8(will.topic) + utf8(will.payload)
    if username is not None:
        body += utf8(username)
    if password is not None:
        body += utf8(password)
    return _packet(CONNECT << 4, bytes(body))


def topic_field(topic: str) -> bytes:
    """The encoded topic name of a PUBLISH, worth caching per topic."""
    return utf8(topic)


def publish_packet(
    topic_enc: bytes, payload: bytes, qos: int, mid: int, version: int, dup: bool = False
) -> bytes:
    """PUBLISH (§3.3) with an already encoded topic (see :func:`topic_field`)."""
    first = 0x30 | (qos << 1) | (0x08 if dup else 0)
    head = (
        topic_enc
        + (mid.to_bytes(2, "big") if qos else b"")
        + (b"\x00" if version == MQTT5 else b"")
    )
    n = len(head) + len(payload)
    if n < 128:
        return bytes((first, n)) + head + payload
    if n < 16384:
        return bytes((first, (n & 0x7F) | 0x80, n >> 7)) + head + payload
    return bytes((first,)) + varint(n) + head + payload


def ack_packet(ptype: int, mid: int) -> bytes:
    """PUBACK / PUBREC / PUBREL / PUBCOMP for ``mid``; v5 may omit reason 0 (§3.4.2.1)."""
    first = (ptype << 4) | (0x02 if ptype == PUBREL else 0)  # PUBREL flags are 0010 (§3.6.1)
    return bytes((first, 2, mid >> 8, mid & 0xFF))


def subscribe_packet(mid: int, topic: str, qos: int, version: int) -> bytes:
    """SUBSCRIBE to one topic filter (§3.8); v5 options byte = max QoS only."""
    body = mid.to_bytes(2, "big")
    if version == MQTT5:
        body += b"\x00"
    body += utf8(topic) + bytes((qos,))
    return _packet((SUBSCRIBE << 4) | 0x02, body)  # SUBSCRIBE flags are 0010 (§3.8.1)


# v5 §2.2.2.2: property identifier -> value type
_BYTE, _U16, _U32, _VARINT, _STR, _BIN, _PAIR = range(7)
_PROP_TYPES = {
    0x01: _BYTE,
    0x02: _U32,
    0x03: _STR,
    0x08: _STR,
    0x09: _BIN,
    0x0B: _VARINT,
    0x11: _U32,
    0x12: _STR,
    0x13: _U16,
    0x15: _STR,
    0x16: _BIN,
    0x17: _BYTE,
    0x18: _U32,
    0x19: _BYTE,
    0x1A: _STR,
    0x1C: _STR,
    0x1F: _STR,
    0x21: _U16,
    0x22: _U16,
    0x23: _U16,
    0x24: _BYTE,
    0x25: _BYTE,
    0x26: _PAIR,
    0x27: _U32,
    0x28: _BYTE,
    0x29: _BYTE,
    0x2A: _BYTE,
}
RECEIVE_MAXIMUM = 0x21
ASSIGNED_CLIENT_ID = 0x12
SERVER_KEEP_ALIVE = 0x13
MAXIMUM_QOS = 0x24
REASON_STRING = 0x1F


def parse_properties(data: bytes, i: int) -> tuple[dict[int, object], int]:
    """Decode a v5 property block at ``data[i]`` (its length first): (props, next index).

    A repeated property (User Property) keeps its last value; we only read the
    single-valued ones.
    """
    got = read_varint(data, i)
    if got is None:
        raise ProtocolError("truncated property length")
    length, i = got
    end = i + length
    if end > len(data):
        raise ProtocolError("property block longer than the packet")
    props: dict[int, object] = {}
    while i < end:
        ident = data[i]
        kind = _PROP_TYPES.get(ident)
        i += 1
        value: object
        if kind == _BYTE:
            value = data[i]
            i += 1
        elif kind == _U16:
            value = int.from_bytes(data[i : i + 2], "big")
            i += 2
        elif kind == _U32:
            value = int.from_bytes(data[i : i + 4], "big")
            i += 4
        elif kind == _VARINT:
            got = read_varint(data, i)
            if got is None:
                raise ProtocolError("truncated property")
            value, i = got
        elif kind in (_STR, _BIN):
            n = int.from_bytes(data[i : i + 2], "big")
            raw = data[i + 2 : i + 2 + n]
            value = raw.decode(errors="replace") if kind == _STR else raw
            i += 2 + n
        elif kind == _PAIR:
            for _ in range(2):
                n = int.from_bytes(data[i : i + 2], "big")
                i += 2 + n
            value = None
        else:
            raise ProtocolError(f"unknown property identifier 0x{ident:02x}")
        props[ident] = value
    if i != end:
        raise ProtocolError("property block length mismatch")
    return props, end
