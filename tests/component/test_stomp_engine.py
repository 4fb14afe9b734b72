"""StompClient (StompSubscriber's engine) against a scripted STOMP-over-WebSocket server.

The server is independent of the client's codecs: wsproto does its WebSocket
side and the gateway's codec (``pipeline.gateway.stomp``) its STOMP side. Each
test scripts what the server sends: fragmented and packed frames, pings,
ERROR frames, heart-beats, a dropped connection. The real gateway is in
``test_stomp_user.py``.
"""

from __future__ import annotations

import csv
import gc
import json
import socket
import time
from collections.abc import Callable

import gevent
import pytest
from gevent.server import StreamServer
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Ping,
    Pong,
    Request,
    TextMessage,
)

from pipeline.gateway.stomp import Frame, FrameParser, encode_frame
from telemetry import envelope
from tests.harness import LocustRun
from tests.helpers import wait_for
from users.exceptions import WsConnectFailed
from users.stomp import StompClient, StompConnectFailed, StompSubscribeFailed, StompSubscriber
from users.ws import WsConnection


class Conn:
    """One server-side connection: wsproto + the gateway's STOMP parser."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.ws = WSConnection(ConnectionType.SERVER)
        self.parser = FrameParser()

    def send(self, command: str, headers: dict[str, str], body: bytes = b"") -> None:
        self.text(encode_frame(command, headers, body))

    def text(self, data: bytes, last: bool = True) -> None:
        self.sock.sendall(self.ws.send(TextMessage(data=data.decode(), message_finished=last)))

    def close(self) -> None:
        self.sock.sendall(self.ws.send(CloseConnection(code=1000)))
        self.sock.close()


class FakeStomp:
    """A scripted server: ``on_frame(conn, frame)`` answers each client frame."""

    def __init__(self, on_frame: Callable[[Conn, Frame], None], heartbeat: str = "0,0") -> None:
        self.on_frame = on_frame
        self.heartbeat = heartbeat
        self.frames: list[Frame] = []
        self.heartbeats = 0
        self.pongs = 0
        self.upgrade_headers: dict[str, str] = {}
        self.subprotocols: list[str] = []
        self.server = StreamServer(("127.0.0.1", 0), self._handle)
        self.server.start()
        self.port = self.server.server_port

    def _handle(self, sock: socket.socket, _addr: object) -> None:
        conn = Conn(sock)
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    return
                conn.ws.receive_data(data)
                for event in conn.ws.events():
                    if isinstance(event, Request):
                        self.upgrade_headers = {
                            k.decode().lower(): v.decode() for k, v in event.extra_headers
                        }
                        self.subprotocols = list(event.subprotocols)
                        sock.sendall(conn.ws.send(AcceptConnection(subprotocol="v12.stomp")))
                    elif isinstance(event, TextMessage):
                        before = conn.parser.heartbeats
                        for frame in conn.parser.feed(event.data.encode()):
                            self.frames.append(frame)
                            if frame.command == "CONNECT":
                                hb = {"version": "1.2", "heart-beat": self.heartbeat}
                                if frame.headers.get("Authorization") == "Bearer bad":
                                    conn.send("ERROR", {"message": "authentication failed"}, b"no")
                                    conn.close()
                                    return
                                conn.send("CONNECTED", hb)
                            else:
                                self.on_frame(conn, frame)
                        self.heartbeats += conn.parser.heartbeats - before
                    elif isinstance(event, Pong):
                        self.pongs += 1
                    elif isinstance(event, CloseConnection):
                        if conn.ws.state is not ConnectionState.CLOSED:  # not after our own
                            sock.sendall(conn.ws.send(event.response()))
                        sock.close()
                        return
        except OSError:
            return

    def commands(self) -> list[str]:
        return [f.command for f in self.frames]

    def stop(self) -> None:
        self.server.stop(timeout=1)


def message(sid: str, body: bytes, stream_id: str, msg_id: int = 1) -> bytes:
    headers = {"destination": "/topic/coordinates", "subscription": sid}
    headers.update({"message-id": str(msg_id), "stream-id": stream_id})
    return encode_frame("MESSAGE", headers, body)


@pytest.fixture
def fake():
    servers: list[FakeStomp] = []

    def make(on_frame: Callable[[Conn, Frame], None], **kwargs: str) -> FakeStomp:
        servers.append(FakeStomp(on_frame, **kwargs))
        return servers[-1]

    yield make
    for s in servers:
        s.stop()


def receipt(conn: Conn, frame: Frame) -> None:
    if "receipt" in frame.headers:
        conn.send("RECEIPT", {"receipt-id": frame.headers["receipt"]})
    if frame.command == "DISCONNECT":
        conn.close()


def test_fragmented_packed_and_split_frames_arrive_whole_in_order_after_the_receipt(fake):
    def script(conn: Conn, frame: Frame) -> None:
        receipt(conn, frame)
        if frame.command != "SUBSCRIBE":
            return
        sid = frame.headers["id"]
        one = message(sid, b'{"n":1}', "1-1")
        # one STOMP frame in three WebSocket fragments, a ping between them
        conn.text(one[:10], last=False)
        conn.sock.sendall(conn.ws.send(Ping(payload=b"are you there")))
        conn.text(one[10:20], last=False)
        conn.text(one[20:])
        # two frames in one WebSocket message, with heart-beat EOLs around
        conn.text(b"\n" + message(sid, b'{"n":2}', "1-2") + b"\n" + message(sid, b'{"n":3}', "1-3"))
        # one frame split over two WebSocket messages
        four = message(sid, b'{"n":4}', "1-4")
        conn.text(four[:30])
        conn.text(four[30:])

    server = fake(script)
    events: list[object] = []
    client = StompClient(
        "127.0.0.1",
        server.port,
        "/ws",
        on_message=lambda body, ns: events.append((json.loads(body)["n"], ns)),
        token="jwt-1",
    )
    client.on_subscribed = lambda: events.append("subscribed")
    try:
        assert client.connect() > 0
        assert client.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        assert client.subscribe("/topic/coordinates", since="0-5") > 0
        wait_for(lambda: len(events) == 5, 5, "four messages")
        assert events[0] == "subscribed"
        assert [e[0] for e in events[1:]] == [1, 2, 3, 4]  # type: ignore[index]
        assert all(0 < e[1] <= time.time_ns() for e in events[1:])  # type: ignore[index]
        assert client.messages == 4 and client.last_stream_id == "1-4"
        wait_for(lambda: server.pongs == 1, 5, "the pong")
    finally:
        client.close()
    connect, subscribe, disconnect = server.frames
    assert connect.headers["Authorization"] == "Bearer jwt-1"
    assert connect.headers["accept-version"] == "1.2"
    assert server.subprotocols == ["v12.stomp"]
    assert subscribe.headers["destination"] == "/topic/coordinates"
    assert subscribe.headers["since"] == "0-5" and subscribe.headers["ack"] == "auto"
    assert disconnect.command == "DISCONNECT" and "receipt" in disconnect.headers
    assert client.lost.is_set() and not client.up


def test_an_error_frame_fails_connect_or_subscribe_with_the_servers_message(fake):
    def script(conn: Conn, frame: Frame) -> None:
        if frame.command == "SUBSCRIBE":
            headers = {"message": "unknown destination", "receipt-id": frame.headers["receipt"]}
            conn.send("ERROR", headers, b"known: /topic/coordinates")
            conn.close()

    server = fake(script)
    bad = StompClient("127.0.0.1", server.port, "/ws", on_message=print, token="bad")
    with pytest.raises(StompConnectFailed, match="authentication failed: no"):
        bad.connect()
    assert bad.lost.is_set()
    client = StompClient("127.0.0.1", server.port, "/ws", on_message=print)
    client.connect()
    with pytest.raises(StompSubscribeFailed, match="unknown destination: known: /topic"):
        client.subscribe("/topic/nope")
    wait_for(client.lost.is_set, 5, "the end of the connection")
    assert "unknown destination" in client.last_error


def test_failed_attempts_leave_no_reference_cycle(fake):
    """A subscriber retries for as long as the gateway is away. The load side freezes
    what survives a second (``telemetry._gc``), so a cycle per failed attempt would be
    kept to the end of the run: ~30 objects each, through gevent's reraise frame, until
    the clients raised their failures without that traceback."""

    def script(conn: Conn, frame: Frame) -> None:
        if frame.command == "SUBSCRIBE":
            conn.send("ERROR", {"message": "no", "receipt-id": frame.headers["receipt"]})
            conn.close()

    server = fake(script)
    nobody = socket.socket()
    nobody.bind(("127.0.0.1", 0))  # bound, never listening: connects there are refused
    refused = nobody.getsockname()[1]

    def attempts() -> None:
        stomp = StompClient("127.0.0.1", refused, "/ws", on_message=print)
        with pytest.raises(StompConnectFailed):
            stomp.connect()
        ws = WsConnection("127.0.0.1", refused, "/coordinates", on_frame=lambda b, ns: None)
        with pytest.raises(WsConnectFailed):
            ws.connect("/coordinates", 5)
        stomp = StompClient("127.0.0.1", server.port, "/ws", on_message=print)
        stomp.connect()
        with pytest.raises(StompSubscribeFailed):
            stomp.subscribe("/topic/coordinates")
        stomp.close()

    attempts()  # first-use imports and caches
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for _ in range(5):
            attempts()
        gc.collect()
        cycles = [type(o).__name__ for o in gc.garbage]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        nobody.close()
    assert cycles == []


def test_heart_beats_go_out_at_the_agreed_rate_and_a_silent_server_ends_the_connection(fake):
    server = fake(receipt, heartbeat="1000,1000")  # it could send every 1 s, and never does
    client = StompClient("127.0.0.1", server.port, "/ws", on_message=print, heartbeats=(1000, 1000))
    start = time.monotonic()
    client.connect()
    assert client.negotiated == (1000, 1000)
    wait_for(lambda: server.heartbeats >= 1, 3, "a heart-beat from the client")
    wait_for(client.lost.is_set, 5, "the heart-beat timeout")
    # silent for twice the agreed interval (2 s), seen by the once-a-second ticker
    assert 2.0 <= time.monotonic() - start < 4.5
    assert client.last_error == "heart-beat timeout"


def test_a_dropped_subscriber_reconnects_and_resumes_after_the_last_stream_id(fake, tmp_path):
    sessions: list[Frame] = []
    runs: list[LocustRun] = []

    def script(conn: Conn, frame: Frame) -> None:
        receipt(conn, frame)
        if frame.command != "SUBSCRIBE":
            return
        sessions.append(frame)
        first = len(sessions) == 1
        for seq in (1, 2, 3) if first else (4, 5):
            body = envelope.build(
                "eng-1", 1.0, 2.0, run=runs[0].ledger.run_id, seq=seq, t0=time.time_ns()
            )
            conn.text(message(frame.headers["id"], body, f"9-{seq}", seq))
        if first:
            gevent.sleep(0.05)
            conn.sock.close()  # no close frame: the connection just drops

    server = fake(script)

    class Quick(StompSubscriber):
        url = f"http://127.0.0.1:{server.port}"
        reconnect_min = 0.05
        reconnect_max = 0.1

    with LocustRun([Quick], results=tmp_path) as run:
        runs.append(run)
        run.start(1)
        run.wait(lambda: run.delivered("mqtt→stomp") == 5, 10, "five deliveries")
        assert run.count("connection lost", "STOMP") == 1
        assert run.count("connect", "STOMP") == 2
        assert run.count("subscribe:/topic/coordinates", "STOMP") == 2
        assert run.env.stats.total.num_failures == 1  # the loss, nothing else
    assert "since" not in sessions[0].headers
    assert sessions[1].headers["since"] == "9-3"
    # the run's metric,value,unit summary (the Go STOMP load tool's load_test_result.csv)
    (summary,) = tmp_path.glob("*/summary.csv")
    rows = {m: (v, u) for m, v, u in csv.reader(summary.read_text().splitlines()[1:])}
    assert rows["stomp_connect_count"] == ("2", "requests")
    assert rows["mqtt_to_stomp_delivered"] == ("5", "messages")
    assert rows["mqtt_to_stomp_lost"] == ("0", "messages")
    assert float(rows["mqtt_to_stomp_latency_p99"][0]) >= 0 and "stomp_connect_p95" in rows
