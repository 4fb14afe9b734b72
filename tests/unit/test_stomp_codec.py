"""The STOMP 1.2 frame codec: round trips, escaping, content-length, partial and bad input."""

from __future__ import annotations

import pytest

from pipeline.gateway.stomp import (
    Frame,
    FrameParser,
    StompProtocolError,
    encode_frame,
    escape,
    unescape,
)


def parse_one(data: bytes) -> Frame:
    frames = FrameParser().feed(data)
    assert len(frames) == 1, frames
    return frames[0]


def test_round_trip_with_headers_and_body():
    wire = encode_frame("SEND", {"destination": "/topic/a", "x-k": "v"}, b'{"a":1}')
    assert wire == b'SEND\ndestination:/topic/a\nx-k:v\ncontent-length:7\n\n{"a":1}\x00'
    frame = parse_one(wire)
    assert frame == Frame(
        "SEND", {"destination": "/topic/a", "x-k": "v", "content-length": "7"}, b'{"a":1}'
    )


def test_frame_without_body_has_no_content_length():
    assert encode_frame("RECEIPT", {"receipt-id": "7"}) == b"RECEIPT\nreceipt-id:7\n\n\x00"
    assert parse_one(b"DISCONNECT\n\n\x00") == Frame("DISCONNECT", {}, b"")


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("a:b", "a\\cb"),
        ("line\nbreak", "line\\nbreak"),
        ("cr\rhere", "cr\\rhere"),
        ("back\\slash", "back\\\\slash"),
        ("all:\n\r\\", "all\\c\\n\\r\\\\"),
        ("plain", "plain"),
        ("ünïcode", "ünïcode"),
    ],
)
def test_header_escaping_round_trips(raw, escaped):
    assert escape(raw) == escaped
    assert unescape(escaped) == raw
    frame = parse_one(encode_frame("SEND", {raw: raw}))
    assert frame.headers == {raw: raw}


def test_undefined_escape_is_fatal():
    with pytest.raises(StompProtocolError) as err:
        FrameParser().feed(b"SEND\ndestination:/a\\tb\n\n\x00")
    assert err.value.reason == "bad_escape"
    with pytest.raises(StompProtocolError):
        unescape("trailing\\")


def test_connect_and_connected_headers_are_not_escaped():
    # Spec: CONNECT/CONNECTED keep 1.0 semantics, so a passcode may contain "\c" literally.
    frame = parse_one(b"CONNECT\naccept-version:1.2\npasscode:a\\cb:c\n\n\x00")
    assert frame.headers["passcode"] == "a\\cb:c"
    assert encode_frame("CONNECTED", {"server": "a:b"}) == b"CONNECTED\nserver:a:b\n\n\x00"


def test_stomp_10_parser_takes_values_literally():
    parser = FrameParser()
    parser.escaped = False
    (frame,) = parser.feed(b"SUBSCRIBE\nid:a\\nb\ndestination:/x\n\n\x00")
    assert frame.headers["id"] == "a\\nb"
    assert encode_frame("RECEIPT", {"receipt-id": "a:b"}, escaped=False).startswith(
        b"RECEIPT\nreceipt-id:a:b\n"
    )


def test_repeated_header_first_wins():
    frame = parse_one(b"SEND\nfoo:first\nfoo:second\n\n\x00")
    assert frame.headers == {"foo": "first"}


def test_content_length_body_may_hold_nul():
    body = b"a\x00b\x00\x00c"
    wire = encode_frame("SEND", {"destination": "/a"}, body)
    frame = parse_one(wire)
    assert frame.body == body
    assert frame.headers["content-length"] == str(len(body))


def test_content_length_counts_bytes_not_characters():
    body = "héllo✓".encode()
    frame = parse_one(encode_frame("SEND", {}, body))
    assert frame.body.decode() == "héllo✓"
    assert frame.headers["content-length"] == "9"


def test_content_length_must_be_followed_by_nul():
    with pytest.raises(StompProtocolError) as err:
        FrameParser().feed(b"SEND\ncontent-length:2\n\nabc\x00")
    assert err.value.reason == "missing_nul"


@pytest.mark.parametrize("value", ["-1", "abc", "1.5", "", "²"])
def test_bad_content_length(value):
    with pytest.raises(StompProtocolError) as err:
        FrameParser().feed(f"SEND\ncontent-length:{value}\n\n\x00".encode())
    assert err.value.reason == "bad_content_length"


def test_crlf_line_endings():
    frame = parse_one(b"SUBSCRIBE\r\nid:1\r\ndestination:/topic/x\r\n\r\n\x00")
    assert frame == Frame("SUBSCRIBE", {"id": "1", "destination": "/topic/x"}, b"")
    # mixed: CRLF headers then a bare LF blank line
    frame = parse_one(b"SEND\r\nk:v\r\n\nbody\x00")
    assert (frame.headers, frame.body) == ({"k": "v"}, b"body")


def test_body_may_contain_blank_lines_and_crlf():
    frame = parse_one(b"SEND\nk:v\n\nline1\r\n\r\nline2\n\n\x00")
    assert frame.body == b"line1\r\n\r\nline2\n\n"


def test_heartbeats_between_frames_are_counted_not_returned():
    parser = FrameParser()
    assert parser.feed(b"\n") == []
    assert parser.feed(b"\r\n\n") == []
    assert parser.heartbeats == 3
    frames = parser.feed(b"\nSEND\n\nx\x00\n\nSEND\n\ny\x00")
    assert [f.body for f in frames] == [b"x", b"y"]
    assert parser.heartbeats == 6  # EOLs after a NUL count as heart-beats too
    assert parser.pending == 0


def test_lone_cr_waits_for_its_lf():
    parser = FrameParser()
    assert parser.feed(b"\r") == []
    assert parser.pending == 1
    assert parser.feed(b"\n") == []
    assert parser.heartbeats == 1


def test_frames_split_at_every_byte():
    wire = (
        encode_frame("SUBSCRIBE", {"id": "0", "destination": "/topic/a:b"})
        + b"\n"
        + encode_frame("SEND", {"destination": "/q"}, b"x\x00y")
        + b"\r\n"
        + b"DISCONNECT\nreceipt:77\n\n\x00"
    )
    parser = FrameParser()
    frames = []
    for i in range(len(wire)):
        frames += parser.feed(wire[i : i + 1])
    assert [f.command for f in frames] == ["SUBSCRIBE", "SEND", "DISCONNECT"]
    assert frames[0].headers["destination"] == "/topic/a:b"
    assert frames[1].body == b"x\x00y"
    assert frames[2].headers == {"receipt": "77"}
    assert parser.pending == 0
    assert parser.heartbeats == 2


def test_many_frames_in_one_chunk():
    wire = b"".join(encode_frame("SEND", {"n": str(i)}, str(i)) for i in range(100))
    frames = FrameParser().feed(wire)
    assert [f.headers["n"] for f in frames] == [str(i) for i in range(100)]


def test_partial_frame_is_kept_until_complete():
    parser = FrameParser()
    assert parser.feed(b"SEND\ncontent-length:5\n\nab") == []
    assert parser.feed(b"cde") == []  # body complete, NUL still missing
    (frame,) = parser.feed(b"\x00")
    assert frame.body == b"abcde"


@pytest.mark.parametrize(
    "data",
    [
        b"HELLO\n\n\x00",
        b"hello world, this is not stomp at all",
        b"send\n\n\x00",
        b"CONNECT \n\n\x00",
        b'{"device_id": "x"}',
    ],
)
def test_unknown_command(data):
    with pytest.raises(StompProtocolError) as err:
        FrameParser().feed(data)
    assert err.value.reason == "unknown_command"


def test_garbage_is_rejected_as_soon_as_its_first_line_is_seen():
    with pytest.raises(StompProtocolError):
        FrameParser().feed(b"GET / HTTP/1.1\n")


def test_header_line_without_colon():
    with pytest.raises(StompProtocolError) as err:
        FrameParser().feed(b"SEND\nno-colon-here\n\n\x00")
    assert err.value.reason == "bad_header"


def test_headers_must_be_utf8():
    with pytest.raises(StompProtocolError) as err:
        FrameParser().feed(b"SEND\nk:\xff\xfe\n\n\x00")
    assert err.value.reason == "bad_encoding"


def test_size_limits():
    parser = FrameParser(max_header_bytes=64, max_body_bytes=16)
    with pytest.raises(StompProtocolError) as err:
        parser.feed(b"SEND\nk:" + b"v" * 100)
    assert err.value.reason == "too_large"
    with pytest.raises(StompProtocolError) as err:
        FrameParser(max_body_bytes=16).feed(b"SEND\ncontent-length:17\n\n")
    assert err.value.reason == "too_large"
    with pytest.raises(StompProtocolError) as err:
        FrameParser(max_body_bytes=16).feed(b"SEND\n\n" + b"x" * 17)
    assert err.value.reason == "too_large"
