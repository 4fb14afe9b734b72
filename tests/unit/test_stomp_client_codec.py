"""users._stomp_codec (the subscriber's STOMP 1.2 codec), checked against the gateway's codec."""

from __future__ import annotations

import pytest

from pipeline.gateway import stomp as server_codec
from users._stomp_codec import FrameReader, StompProtocolError, encode, unescape

MESSAGE = server_codec.encode_frame(
    "MESSAGE",
    {
        "destination": "/topic/devices/a:b",
        "subscription": "1",
        "message-id": "7",
        "stream-id": "1700000000000-3",
    },
    b'{"x":1}\x00{"y":2}',  # content-length: the body may hold NULs
)


def test_frames_split_at_every_byte_and_packed_together_come_out_whole():
    receipt = server_codec.encode_frame("RECEIPT", {"receipt-id": "sub-1"})
    wire = b"\n" + receipt + b"\r\n" + MESSAGE + MESSAGE + b"\n\n"
    reader = FrameReader()
    frames = []
    for i in range(len(wire)):
        frames += reader.feed(wire[i : i + 1])
    assert [f.command for f in frames] == ["RECEIPT", "MESSAGE", "MESSAGE"]
    assert frames[0].headers == {"receipt-id": "sub-1"}
    msg = frames[1]
    assert msg.headers["destination"] == "/topic/devices/a:b"  # \c unescaped
    assert msg.headers["stream-id"] == "1700000000000-3"
    assert msg.body == b'{"x":1}\x00{"y":2}'
    assert reader.heartbeats == 4 and reader.pending == 0
    # and all in one piece
    whole = FrameReader().feed(wire)
    assert [(f.command, f.headers, f.body) for f in whole] == [
        (f.command, f.headers, f.body) for f in frames
    ]


def test_crlf_lines_no_content_length_first_header_wins_and_raw_connected():
    reader = FrameReader()
    (connected, error) = reader.feed(
        b"CONNECTED\r\nversion:1.2\r\nheart-beat:0,1000\r\nsession:a\\cb\r\n\r\n\x00"
        b"ERROR\nmessage:first\nmessage:second\n\nbad token\x00"
    )
    assert connected.headers == {"version": "1.2", "heart-beat": "0,1000", "session": "a\\cb"}
    assert error.headers["message"] == "first" and error.body == b"bad token"


def test_client_frames_are_what_the_gateway_parses():
    parser = server_codec.FrameParser()
    (connect, subscribe) = parser.feed(
        encode("CONNECT", {"accept-version": "1.2", "Authorization": "Bearer a:b"})
        + encode("SUBSCRIBE", {"id": "1", "destination": "/topic/devices/x:y", "since": "1-0"})
    )
    assert connect.headers["Authorization"] == "Bearer a:b"  # CONNECT is never escaped
    assert subscribe.headers == {"id": "1", "destination": "/topic/devices/x:y", "since": "1-0"}
    (send,) = parser.feed(encode("SEND", {"destination": "/q"}, b"\x00body"))
    assert send.body == b"\x00body"


@pytest.mark.parametrize(
    ("wire", "why"),
    [
        (b"SEND\ndestination:/q\n\n\x00", "unknown server command"),
        (b"GARBAGE-GARBAGE-GARBAGE", "unknown server command"),
        (b"MESSAGE\nno-colon\n\n\x00", "has no ':'"),
        (b"MESSAGE\ncontent-length:2\n\nabc\x00", "no NUL"),
        (b"MESSAGE\ncontent-length:-1\n\n\x00", "content-length"),
        (b"MESSAGE\nx:a\\tb\n\n\x00", "undefined escape"),
    ],
)
def test_what_a_server_must_not_send_is_a_protocol_error(wire, why):
    with pytest.raises(StompProtocolError, match=why):
        FrameReader().feed(wire)


def test_unescape_matches_the_gateway():
    for raw in ("a:b", "line\nbreak\r", "back\\slash", "plain"):
        assert unescape(server_codec.escape(raw)) == raw
