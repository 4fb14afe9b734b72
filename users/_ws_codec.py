"""The client side of RFC 6455 (WebSocket), sans-IO: bytes in, messages out, and back.

What a subscriber needs and nothing more: the upgrade request and the check of
its answer (section 4.1), masked client frames (5.3: every client frame is
masked), and an incremental reader of server frames that reassembles
fragmented messages (5.4) and hands control frames (close, ping, pong; 5.5)
through, even between the fragments of a message. No extensions
(``permessage-deflate`` is never offered), no I/O: ``users._stomp_client`` moves
the bytes on the process pump and ``bench stomp-engines`` measures this against
wsproto and websocket-client.

    >>> reader = FrameReader()
    >>> reader.feed(b"\\x01\\x03MES") + reader.feed(b"\\x80\\x04SAGE")
    [(1, b'MESSAGE')]
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Iterable

__all__ = [
    "OP_CONT",
    "OP_TEXT",
    "OP_BINARY",
    "OP_CLOSE",
    "OP_PING",
    "OP_PONG",
    "WsProtocolError",
    "FrameReader",
    "HandshakeError",
    "accept_key",
    "close_payload",
    "encode_frame",
    "parse_close",
    "upgrade_request",
    "parse_upgrade",
]

OP_CONT, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA
_CONTROL = frozenset({OP_CLOSE, OP_PING, OP_PONG})
_DATA = frozenset({OP_TEXT, OP_BINARY})
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3
#: Largest message the reader assembles (the gateway's own limit is 1 MiB).
MAX_MESSAGE = 16 * 1024 * 1024
#: The most an upgrade answer's header may take.
MAX_HEADER = 64 * 1024


class WsProtocolError(Exception):
    """The server broke RFC 6455 (a masked frame, a bad opcode, a fragmented control frame…)."""


class HandshakeError(Exception):
    """The upgrade was refused or answered wrongly; ``str()`` says how."""


def accept_key(key: str) -> str:
    """``Sec-WebSocket-Accept`` for a ``Sec-WebSocket-Key`` (section 4.2.2, step 5.4)."""
    return base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()


def upgrade_request(
    host: str,
    port: int,
    path: str,
    *,
    tls: bool = False,
    subprotocols: Iterable[str] = (),
    headers: Iterable[tuple[str, str]] = (),
) -> tuple[bytes, str]:
    """The HTTP/1.1 upgrade request and the key its answer must echo (section 4.1)."""
    key = base64.b64encode(os.urandom(16)).decode()
    default_port = 443 if tls else 80
    authority = host if port == default_port else f"{host}:{port}"
    if ":" in host and not host.startswith("["):  # an IPv6 literal
        authority = f"[{host}]" if port == default_port else f"[{host}]:{port}"
    lines = [
        f"GET {path or '/'} HTTP/1.1",
        f"Host: {authority}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    protos = ", ".join(subprotocols)
    if protos:
        lines.append(f"Sec-WebSocket-Protocol: {protos}")
    lines.extend(f"{name}: {value}" for name, value in headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode(), key


def parse_upgrade(buf: bytes, key: str) -> tuple[dict[str, str], int] | None:
    """The answer's headers (names lower-cased) and where its frames start, once it is whole.

    None while the header is incomplete. Raises :class:`HandshakeError` unless
    it is ``101`` with the right ``Sec-WebSocket-Accept`` (section 4.1, the
    client's checks).
    """
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if len(buf) > MAX_HEADER:
            raise HandshakeError("the upgrade answer's header is too large")
        return None
    lines = buf[:end].decode("latin-1").split("\r\n")
    status = lines[0].split(" ", 2)
    if len(status) < 2 or not status[0].startswith("HTTP/"):
        raise HandshakeError(f"not an HTTP answer: {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), value.strip())
    if status[1] != "101":
        raise HandshakeError(f"the server answered {' '.join(status[1:])} instead of 101")
    if headers.get("upgrade", "").lower() != "websocket":
        raise HandshakeError("the 101 answer has no 'Upgrade: websocket'")
    if headers.get("sec-websocket-accept") != accept_key(key):
        raise HandshakeError("the 101 answer has a wrong Sec-WebSocket-Accept")
    if headers.get("sec-websocket-extensions"):
        raise HandshakeError("the server chose an extension this client never offered")
    return headers, end + 4


def encode_frame(opcode: int, payload: bytes = b"", *, mask: bytes | None = None) -> bytes:
    """One final client frame, masked (section 5.3); ``mask`` fixed only in tests."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 1 << 16:
        head = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    key = mask if mask is not None else os.urandom(4)
    if not n:
        return head + key
    # XOR as one big integer: ~20x faster than a byte loop in pure Python
    repeated = (key * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(n, "big")
    return head + key + masked


def close_payload(code: int = 1000, reason: str = "") -> bytes:
    """The body of a close frame (section 5.5.1): a 2-byte code, then UTF-8 text."""
    return code.to_bytes(2, "big") + reason.encode()[:123]


def parse_close(payload: bytes) -> tuple[int, str]:
    """(code, reason) of a close frame; 1005 when it carries none (section 7.1.5)."""
    if len(payload) < 2:
        return 1005, ""
    return int.from_bytes(payload[:2], "big"), payload[2:].decode(errors="replace")


class FrameReader:
    """Server frames in, whole messages out: ``feed(data) -> [(opcode, payload), ...]``.

    Data messages come out once their last fragment is in, with the opcode of
    the first; control frames come out as they arrive. Raises
    :class:`WsProtocolError` on anything section 5 forbids a server.
    """

    __slots__ = ("_buf", "_parts", "_part_op", "_part_len")

    def __init__(self) -> None:
        self._buf = b""
        self._parts: list[bytes] | None = None  # fragments of the message being assembled
        self._part_op = 0
        self._part_len = 0

    @property
    def pending(self) -> int:
        """Bytes held: an incomplete frame plus the fragments of an incomplete message."""
        return len(self._buf) + self._part_len

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        buf = self._buf + data if self._buf else data
        out: list[tuple[int, bytes]] = []
        i = 0
        n = len(buf)
        while n - i >= 2:
            b0 = buf[i]
            b1 = buf[i + 1]
            if b1 & 0x80:
                raise WsProtocolError("the server masked a frame (RFC 6455 section 5.1)")
            if b0 & 0x70:
                raise WsProtocolError("reserved bits set without a negotiated extension")
            length = b1 & 0x7F
            start = i + 2
            if length == 126:
                if n - start < 2:
                    break
                length = int.from_bytes(buf[start : start + 2], "big")
                start += 2
            elif length == 127:
                if n - start < 8:
                    break
                length = int.from_bytes(buf[start : start + 8], "big")
                start += 8
            if length > MAX_MESSAGE:
                raise WsProtocolError(f"a {length}-byte frame exceeds the {MAX_MESSAGE} limit")
            end = start + length
            if end > n:
                break
            payload = buf[start:end]
            i = end
            opcode = b0 & 0x0F
            fin = b0 & 0x80
            if opcode in _DATA:
                if self._parts is not None:
                    raise WsProtocolError("a new message began inside a fragmented one")
                if fin:
                    out.append((opcode, payload))
                else:
                    self._parts = [payload]
                    self._part_op = opcode
                    self._part_len = length
            elif opcode == OP_CONT:
                parts = self._parts
                if parts is None:
                    raise WsProtocolError("a continuation frame without a message to continue")
                parts.append(payload)
                self._part_len += length
                if self._part_len > MAX_MESSAGE:
                    raise WsProtocolError(f"a message exceeds the {MAX_MESSAGE}-byte limit")
                if fin:
                    out.append((self._part_op, b"".join(parts)))
                    self._parts = None
                    self._part_len = 0
            elif opcode in _CONTROL:
                if not fin or length > 125:
                    raise WsProtocolError("a control frame fragmented or over 125 bytes")
                out.append((opcode, payload))
            else:
                raise WsProtocolError(f"unknown opcode {opcode:#x}")
        self._buf = buf[i:] if i < n else b""
        return out
