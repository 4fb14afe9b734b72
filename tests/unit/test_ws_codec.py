"""users._ws_codec: the client side of RFC 6455, checked against wsproto's server side."""

from __future__ import annotations

import pytest
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    Request,
    TextMessage,
)

from users._ws_codec import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_TEXT,
    FrameReader,
    HandshakeError,
    WsProtocolError,
    close_payload,
    encode_frame,
    parse_close,
    parse_upgrade,
    upgrade_request,
)


def _server_accepting(request: bytes) -> tuple[WSConnection, bytes]:
    server = WSConnection(ConnectionType.SERVER)
    server.receive_data(request)
    (req,) = list(server.events())
    assert isinstance(req, Request)
    chosen = req.subprotocols[0] if req.subprotocols else None
    return server, server.send(AcceptConnection(subprotocol=chosen))


def test_the_upgrade_is_accepted_by_wsproto_and_its_answer_checks_out():
    request, key = upgrade_request(
        "127.0.0.1", 8081, "/ws", subprotocols=["v12.stomp"], headers=[("X-Token", "t")]
    )
    assert b"Host: 127.0.0.1:8081\r\n" in request and b"X-Token: t\r\n" in request
    server, answer = _server_accepting(request)
    # the 101 may arrive in pieces, with the first frame right behind it
    first = server.send(TextMessage(data="CONNECTED\n\n\x00"))
    assert parse_upgrade(answer[:20], key) is None
    headers, start = parse_upgrade(answer + first, key)
    assert headers["sec-websocket-protocol"] == "v12.stomp"
    assert FrameReader().feed((answer + first)[start:]) == [(OP_TEXT, b"CONNECTED\n\n\x00")]


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (b"HTTP/1.1 403 Forbidden\r\n\r\n", "403 Forbidden instead of 101"),
        (b"HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: x\r\n\r\n", "Accept"),
        (b"SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP answer"),
    ],
)
def test_a_refused_or_wrong_upgrade_is_one_sentence(answer, why):
    with pytest.raises(HandshakeError, match=why):
        parse_upgrade(answer, "key")


def test_client_frames_are_masked_and_wsproto_reads_them_back():
    request, _key = upgrade_request("h", 80, "/ws")
    server, _ = _server_accepting(request)
    payloads = [b"", b"x" * 125, b"y" * 126, b"z" * 70_000]
    data = b"".join(encode_frame(OP_BINARY, p) for p in payloads)
    data += encode_frame(OP_TEXT, b"SUBSCRIBE\nid:1\n\n\x00")
    data += encode_frame(OP_CLOSE, close_payload(1000, "bye"))
    server.receive_data(data)
    events = list(server.events())
    got = [e.data for e in events if isinstance(e, Message)]
    assert got == [*payloads, "SUBSCRIBE\nid:1\n\n\x00"]
    assert isinstance(events[-1], CloseConnection) and events[-1].code == 1000
    assert encode_frame(OP_TEXT, b"abc", mask=b"\x00\x00\x00\x00") == b"\x81\x83\x00\x00\x00\x00abc"


def test_fragmented_messages_are_reassembled_with_control_frames_in_between():
    request, _key = upgrade_request("h", 80, "/ws")
    server, _ = _server_accepting(request)
    wire = server.send(TextMessage(data="MESS", message_finished=False))
    wire += server.send(Ping(payload=b"p"))
    wire += server.send(TextMessage(data="AGE", message_finished=True))
    wire += server.send(BytesMessage(data=b"\x00" * 70_000))
    reader = FrameReader()
    out = []
    for i in range(len(wire)):  # one byte at a time: every split point
        out += reader.feed(wire[i : i + 1])
    assert out == [(OP_PING, b"p"), (OP_TEXT, b"MESSAGE"), (OP_BINARY, b"\x00" * 70_000)]
    assert reader.pending == 0


@pytest.mark.parametrize(
    ("wire", "why"),
    [
        (b"\x81\x81abcdx", "masked"),
        (b"\xc1\x01x", "reserved bits"),
        (b"\x80\x01x", "continuation frame without"),
        (b"\x01\x01x\x01\x01y", "new message began"),
        (b"\x09\x01x", "control frame fragmented"),
        (b"\x83\x00", "unknown opcode"),
    ],
)
def test_what_a_server_must_not_send_is_a_protocol_error(wire, why):
    with pytest.raises(WsProtocolError, match=why):
        FrameReader().feed(wire)


def test_close_payloads():
    assert parse_close(close_payload(1008, "policy")) == (1008, "policy")
    assert parse_close(b"") == (1005, "")
