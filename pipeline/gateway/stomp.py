"""STOMP 1.2 frame codec: bytes in, frames out, and back. No I/O.

The wire format (https://stomp.github.io/stomp-specification-1.2.html#STOMP_Frames):

    COMMAND EOL  *(header EOL)  EOL  body  NUL  *(EOL)

where EOL is ``\\n`` or ``\\r\\n``. A lone EOL between frames is a heart-beat.
Header names and values are UTF-8 and escaped (``\\r \\n \\c \\\\``) in every frame
except CONNECT and CONNECTED; an undefined escape is a fatal protocol error. When
a frame repeats a header, the first one wins. With ``content-length`` the body is
exactly that many bytes (it may hold NULs) and a NUL must follow; without it the
body runs to the first NUL.

    >>> parser = FrameParser()
    >>> [f.command for f in parser.feed(b"\\nSUBSCRIBE\\nid:0\\ndestination:/topic/a\\n\\n\\x00")]
    ['SUBSCRIBE']
    >>> parser.heartbeats
    1
    >>> encode_frame("RECEIPT", {"receipt-id": "r:1"})
    b'RECEIPT\\nreceipt-id:r\\\\c1\\n\\n\\x00'
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from pipeline.exceptions import StompProtocolError

__all__ = [
    "CLIENT_COMMANDS",
    "SERVER_COMMANDS",
    "Frame",
    "FrameParser",
    "StompProtocolError",
    "encode_frame",
    "escape",
    "unescape",
]

CLIENT_COMMANDS = frozenset(
    {
        "CONNECT",
        "STOMP",
        "SEND",
        "SUBSCRIBE",
        "UNSUBSCRIBE",
        "ACK",
        "NACK",
        "BEGIN",
        "COMMIT",
        "ABORT",
        "DISCONNECT",
    }
)
SERVER_COMMANDS = frozenset({"CONNECTED", "MESSAGE", "RECEIPT", "ERROR"})
_COMMANDS = CLIENT_COMMANDS | SERVER_COMMANDS
# Spec, "Value Encoding": CONNECT and CONNECTED frames do not escape (1.0 compatibility).
_RAW_HEADER_COMMANDS = frozenset({"CONNECT", "CONNECTED"})
_LONGEST_COMMAND = max(len(c) for c in _COMMANDS)

_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", ":": "\\c"}
_UNESCAPES = {"\\": "\\", "n": "\n", "r": "\r", "c": ":"}
_ESCAPE_TABLE = str.maketrans(_ESCAPES)


@dataclass
class Frame:
    command: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


def escape(value: str) -> str:
    """Escape a header name or value for every frame but CONNECT/CONNECTED."""
    return value.translate(_ESCAPE_TABLE)


def unescape(value: str) -> str:
    r"""Undo :func:`escape`; an undefined escape (``\t``, a trailing ``\``) is fatal."""
    if "\\" not in value:
        return value
    out: list[str] = []
    i = 0
    n = len(value)
    while i < n:
        ch = value[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        nxt = value[i + 1] if i + 1 < n else ""
        if nxt not in _UNESCAPES:
            raise StompProtocolError(
                "bad_escape", f"undefined escape sequence {value[i : i + 2]!r}"
            )
        out.append(_UNESCAPES[nxt])
        i += 2
    return "".join(out)


def encode_frame(
    command: str,
    headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
    body: bytes | str = b"",
    *,
    escaped: bool = True,
) -> bytes:
    """Serialize one frame, adding ``content-length`` when there is a body.

    Headers are escaped unless the command is CONNECT or CONNECTED, or ``escaped``
    is False (STOMP 1.0 has no escaping).
    """
    if isinstance(body, str):
        body = body.encode()
    items = list(headers.items() if isinstance(headers, Mapping) else headers)
    raw = command in _RAW_HEADER_COMMANDS or not escaped
    lines = [command]
    names = set()
    for name, value in items:
        names.add(name)
        if raw:
            lines.append(f"{name}:{value}")
        else:
            lines.append(f"{escape(name)}:{escape(str(value))}")
    if body and "content-length" not in names:
        lines.append(f"content-length:{len(body)}")
    return ("\n".join(lines) + "\n\n").encode() + body + b"\x00"


class FrameParser:
    """Incremental parser: :meth:`feed` bytes as they arrive, get whole frames back.

    Frames may be split across or packed into WebSocket messages in any way.
    ``heartbeats`` counts the EOLs seen between frames. A frame whose headers or
    body exceed the limits raises :class:`StompProtocolError`, as does anything
    outside the grammar; after an error the parser is unusable (the connection
    must be closed, as the spec requires after ERROR).
    """

    def __init__(self, max_header_bytes: int = 16 * 1024, max_body_bytes: int = 64 * 1024):
        #: False for a STOMP 1.0 session, whose header values are taken literally.
        self.escaped = True
        self.max_header_bytes = max_header_bytes
        self.max_body_bytes = max_body_bytes
        self.heartbeats = 0
        self._buf = bytearray()

    @property
    def pending(self) -> int:
        """Bytes received that do not yet form a whole frame."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame]:
        self._buf += data
        frames: list[Frame] = []
        while True:
            frame = self._next()
            if frame is None:
                return frames
            frames.append(frame)

    def _skip_eols(self) -> None:
        buf = self._buf
        i = 0
        n = len(buf)
        while i < n:
            if buf[i] == 0x0A:
                i += 1
            elif buf[i] == 0x0D and i + 1 < n and buf[i + 1] == 0x0A:
                i += 2
            else:
                break
            self.heartbeats += 1
        if i:
            del buf[:i]

    def _next(self) -> Frame | None:
        self._skip_eols()
        buf = self._buf
        if not buf or buf == b"\r":
            return None
        self._check_command(buf)
        end = buf.find(b"\n\n")
        end_crlf = buf.find(b"\n\r\n")
        if end < 0 and end_crlf < 0:
            if len(buf) > self.max_header_bytes:
                raise StompProtocolError("too_large", "frame headers exceed the size limit")
            return None
        if end < 0 or (0 <= end_crlf < end):
            body_start = end_crlf + 3
            head_end = end_crlf
        else:
            body_start = end + 2
            head_end = end
        if head_end > self.max_header_bytes:
            raise StompProtocolError("too_large", "frame headers exceed the size limit")
        try:
            head = bytes(buf[:head_end]).decode()
        except UnicodeDecodeError:
            raise StompProtocolError("bad_encoding", "frame headers are not UTF-8") from None
        lines = [line[:-1] if line.endswith("\r") else line for line in head.split("\n")]
        command = lines[0]
        headers = self._headers(command, lines[1:])

        length_raw = headers.get("content-length")
        if length_raw is not None:
            if not (length_raw.isascii() and length_raw.isdigit()):
                raise StompProtocolError("bad_content_length", f"content-length {length_raw!r}")
            length = int(length_raw)
            if length > self.max_body_bytes:
                raise StompProtocolError("too_large", "frame body exceeds the size limit")
            nul = body_start + length
            if len(buf) <= nul:
                return None
            if buf[nul] != 0:
                raise StompProtocolError(
                    "missing_nul", "the frame does not end with NUL after content-length bytes"
                )
        else:
            nul = buf.find(b"\x00", body_start)
            if nul < 0:
                if len(buf) - body_start > self.max_body_bytes:
                    raise StompProtocolError("too_large", "frame body exceeds the size limit")
                return None
        body = bytes(buf[body_start:nul])
        del buf[: nul + 1]
        return Frame(command, headers, body)

    @staticmethod
    def _check_command(buf: bytearray) -> None:
        # Reject garbage as soon as its first line is visible, not at the size limit.
        nl = buf.find(b"\n", 0, _LONGEST_COMMAND + 2)
        if nl < 0:
            if len(buf) > _LONGEST_COMMAND + 1:
                raise StompProtocolError("unknown_command", f"unknown command {bytes(buf[:32])!r}")
            return
        line = bytes(buf[:nl])
        if line.endswith(b"\r"):
            line = line[:-1]
        if line.decode("latin-1") not in _COMMANDS:
            raise StompProtocolError("unknown_command", f"unknown command {line[:32]!r}")

    def _headers(self, command: str, lines: list[str]) -> dict[str, str]:
        raw = command in _RAW_HEADER_COMMANDS or not self.escaped
        headers: dict[str, str] = {}
        for line in lines:
            name, sep, value = line.partition(":")
            if not sep or not name:
                raise StompProtocolError("bad_header", f"header line {line[:64]!r} has no name")
            if not raw:
                name = unescape(name)
                value = unescape(value)
            headers.setdefault(name, value)
        return headers
