"""STOMP 1.2 frames for a subscriber, sans-IO: client frames out, server frames in.

Spec: https://stomp.github.io/stomp-specification-1.2.html ("STOMP Frames",
"Value Encoding", "Heart-beating"). A frame is ``COMMAND EOL *(header EOL) EOL
body NUL``; EOL is ``\\n`` or ``\\r\\n``; a lone EOL between frames is a
heart-beat. Header values are escaped (``\\r \\n \\c \\\\``) in every frame but
CONNECT and CONNECTED; when a header repeats, the first one wins; with
``content-length`` the body is exactly that long (it may hold NULs).

Frames may be split over WebSocket messages or packed several to one: the
reader keeps what does not yet form a frame. The gateway has a codec of its
own (``pipeline/gateway/stomp.py``, the server side); the load side does not
import the system under test, and ``tests/unit/test_stomp_client_codec.py``
checks the two against each other.

    >>> reader = FrameReader()
    >>> reader.feed(b"\\nMESSAGE\\nstream-id:7-0\\ncontent-length:2\\n\\n{}")
    []
    >>> [(f.command, f.headers["stream-id"], f.body) for f in reader.feed(b"\\x00\\n")]
    [('MESSAGE', '7-0', b'{}')]
    >>> reader.heartbeats
    2
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["Frame", "FrameReader", "StompProtocolError", "encode", "escape", "unescape"]

#: What a server may send (the reader rejects anything else at once).
SERVER_COMMANDS = frozenset({"CONNECTED", "MESSAGE", "RECEIPT", "ERROR"})
_RAW = frozenset({"CONNECT", "STOMP", "CONNECTED"})
_ESCAPE = str.maketrans({"\\": "\\\\", "\n": "\\n", "\r": "\\r", ":": "\\c"})
_UNESCAPE = {"\\": "\\", "n": "\n", "r": "\r", "c": ":"}
MAX_HEADER = 64 * 1024
MAX_BODY = 16 * 1024 * 1024


class StompProtocolError(Exception):
    """The server sent something outside STOMP 1.2's grammar."""


class Frame:
    """One server frame: its command, headers (first occurrence wins) and body bytes."""

    __slots__ = ("command", "headers", "body")

    def __init__(self, command: str, headers: dict[str, str], body: bytes) -> None:
        self.command = command
        self.headers = headers
        self.body = body

    def __repr__(self) -> str:
        return f"Frame({self.command!r}, {self.headers!r}, {self.body[:40]!r})"


def escape(value: str) -> str:
    return value.translate(_ESCAPE)


def unescape(value: str) -> str:
    r"""Undo :func:`escape`; an undefined escape (``\t``) is a protocol error (spec)."""
    if "\\" not in value:
        return value
    out = []
    i = 0
    while i < len(value):
        ch = value[i]
        if ch == "\\":
            nxt = _UNESCAPE.get(value[i + 1 : i + 2])
            if nxt is None:
                raise StompProtocolError(f"undefined escape {value[i : i + 2]!r} in a header")
            out.append(nxt)
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def encode(command: str, headers: Mapping[str, str] = {}, body: bytes = b"") -> bytes:
    """One client frame; ``content-length`` added when there is a body.

    >>> encode("SUBSCRIBE", {"id": "1", "destination": "/topic/a:b"})
    b'SUBSCRIBE\\nid:1\\ndestination:/topic/a\\\\cb\\n\\n\\x00'
    """
    raw = command in _RAW
    lines = [command]
    for name, value in headers.items():
        lines.append(f"{name}:{value}" if raw else f"{escape(name)}:{escape(value)}")
    if body and "content-length" not in headers:
        lines.append(f"content-length:{len(body)}")
    return ("\n".join(lines) + "\n\n").encode() + body + b"\x00"


class FrameReader:
    """Bytes in (any split), whole server frames out; EOLs between frames are heart-beats."""

    __slots__ = ("_buf", "heartbeats")

    def __init__(self) -> None:
        self._buf = b""
        #: EOLs seen between frames (the server's heart-beats)
        self.heartbeats = 0

    @property
    def pending(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[Frame]:
        buf = self._buf + data if self._buf else data
        frames: list[Frame] = []
        i = 0
        n = len(buf)
        while i < n:
            c = buf[i]
            if c == 0x0A:  # heart-beat
                self.heartbeats += 1
                i += 1
                continue
            if c == 0x0D:
                if i + 1 >= n:
                    break
                if buf[i + 1] != 0x0A:
                    raise StompProtocolError("a CR not followed by LF between frames")
                self.heartbeats += 1
                i += 2
                continue
            head_end = buf.find(b"\n\n", i)
            crlf = buf.find(b"\n\r\n", i, head_end if head_end >= 0 else n)
            if crlf >= 0:
                head_end, body_start = crlf, crlf + 3
            elif head_end >= 0:
                body_start = head_end + 2
            else:
                self._check_command(buf, i, n)
                if n - i > MAX_HEADER:
                    raise StompProtocolError("frame headers over the size limit")
                break
            head = buf[i:head_end].decode()
            lines = head.split("\n")
            command = lines[0].rstrip("\r")
            if command not in SERVER_COMMANDS:
                raise StompProtocolError(f"unknown server command {command[:32]!r}")
            raw = command == "CONNECTED"
            headers: dict[str, str] = {}
            for line in lines[1:]:
                if line.endswith("\r"):
                    line = line[:-1]
                name, sep, value = line.partition(":")
                if not sep:
                    raise StompProtocolError(f"header line {line[:64]!r} has no ':'")
                if not raw and "\\" in line:
                    name, value = unescape(name), unescape(value)
                if name not in headers:
                    headers[name] = value
            length = headers.get("content-length")
            if length is not None:
                if not length.isdigit():
                    raise StompProtocolError(f"content-length {length[:32]!r}")
                nul = body_start + int(length)
                if nul > body_start + MAX_BODY:
                    raise StompProtocolError("frame body over the size limit")
                if nul >= n:
                    break
                if buf[nul] != 0:
                    raise StompProtocolError("no NUL after content-length bytes of body")
            else:
                nul = buf.find(b"\x00", body_start)
                if nul < 0:
                    if n - body_start > MAX_BODY:
                        raise StompProtocolError("frame body over the size limit")
                    break
            frames.append(Frame(command, headers, buf[body_start:nul]))
            i = nul + 1
        self._buf = buf[i:] if i < n else b""
        return frames

    @staticmethod
    def _check_command(buf: bytes, i: int, n: int) -> None:
        # garbage is an error as soon as its first line is in, not at the size limit
        nl = buf.find(b"\n", i, i + 12)
        if nl >= 0:
            command = buf[i:nl].rstrip(b"\r").decode("latin-1")
            if command not in SERVER_COMMANDS:
                raise StompProtocolError(f"unknown server command {command[:32]!r}")
        elif n - i > 11:
            raise StompProtocolError(f"unknown server command {buf[i : i + 32]!r}")
