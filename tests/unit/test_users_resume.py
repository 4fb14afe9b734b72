"""Resume after reconnect, on the client side, against a scripted WebSocket server.

The gateway stamps every pushed frame with the id of the update in its Redis
Stream (STOMP header ``stream-id``, raw WebSocket JSON field ``stream_id``). A
subscriber that lost its connection resubscribes after the last id it read
(STOMP ``since`` header on SUBSCRIBE, raw WebSocket ``?since=`` on the URL) and
the gateway replays what it missed: the ledger counts the replayed messages as
delivered and late, never lost. The first connect asks for nothing.

The server here is a few lines of RFC 6455 (handshake, unmasking client frames,
unmasked server frames) and STOMP 1.2 framing, driven by a script per connection.
"""

from __future__ import annotations

import base64
import hashlib
import socket
import struct
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import gevent
import pytest
from locust.env import Environment
from locust.event import Events

import telemetry
from telemetry import envelope
from tests.harness import parse_options
from tests.helpers import wait_for
from users.stomp import StompSubscriber
from users.ws import WsSubscriber

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class Conn:
    """One accepted WebSocket connection of the scripted server."""

    def __init__(self, sock: socket.socket, path: str) -> None:
        self.sock = sock
        self.path = path
        self.buf = b""

    def _read(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("client went away")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def recv_text(self) -> str:
        """One client frame (masked, as RFC 6455 5.3 requires of clients), unmasked."""
        b0, b1 = self._read(2)
        assert b0 & 0x0F == 0x1, f"expected a text frame, opcode {b0 & 0x0F}"
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", self._read(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", self._read(8))
        mask = self._read(4)
        data = self._read(n)
        return bytes(c ^ mask[i % 4] for i, c in enumerate(data)).decode()

    def send_text(self, text: str) -> None:
        data = text.encode()
        head = (
            bytes([0x81, len(data)])
            if len(data) < 126
            else struct.pack("!BBH", 0x81, 126, len(data))
        )
        self.sock.sendall(head + data)

    def stomp_frame(self) -> tuple[str, dict[str, str]]:
        """The next STOMP frame from the client, skipping heart-beat EOLs."""
        text = ""
        while not text.strip("\r\n"):
            text = self.recv_text()
        head = text.split("\x00", 1)[0].split("\n\n", 1)[0].lstrip("\r\n")
        command, *lines = head.split("\n")
        headers = dict(line.split(":", 1) for line in lines if ":" in line)
        return command, headers

    def send_stomp(self, command: str, headers: dict[str, str], body: str = "") -> None:
        lines = [command, *(f"{k}:{v}" for k, v in headers.items())]
        self.send_text("\n".join(lines) + "\n\n" + body + "\x00")


class ScriptedServer:
    """Accepts WebSocket upgrades on 127.0.0.1:0 and runs ``scripts[n]`` on the n-th one."""

    def __init__(self, scripts: list[Callable[[Conn], None]]) -> None:
        self.scripts = scripts
        self.conns: list[Conn] = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self._acceptor = gevent.spawn(self._accept)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            sock, _ = self.sock.accept()
            gevent.spawn(self._serve, sock)

    def _serve(self, sock: socket.socket) -> None:
        request = b""
        while b"\r\n\r\n" not in request:
            request += sock.recv(65536)
        head = request.decode().split("\r\n")
        path = head[0].split(" ")[1]
        key = next(
            v.strip()
            for k, _, v in (h.partition(":") for h in head)
            if k.lower() == "sec-websocket-key"
        )
        accept = base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()
        sock.sendall(
            (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Accept: {accept}\r\n\r\n"
            ).encode()
        )
        conn = Conn(sock, path)
        n = len(self.conns)
        self.conns.append(conn)
        try:
            self.scripts[min(n, len(self.scripts) - 1)](conn)
        except (ConnectionError, OSError):
            pass
        finally:
            sock.close()

    def close(self) -> None:
        self._acceptor.kill()
        self.sock.close()


def _env(server: ScriptedServer) -> Environment:
    env = Environment(
        events=Events(),
        parsed_options=parse_options("--gateway-url", server.url, "--e2e-grace", "0.05"),
    )
    env.create_local_runner()  # its stats listen to the request events
    telemetry.install(env).start_run("resume-run")
    return env


def _message(ledger: telemetry.Ledger, seq: int, t0: int) -> str:
    return envelope.build("robot-0001", 1.0, 2.0, run=ledger.run_id, seq=seq, t0=t0).decode()


def _hold(conn: Conn) -> None:
    gevent.sleep(30)  # the test ends first


@contextmanager
def resumed(user: WsSubscriber | StompSubscriber, server: ScriptedServer) -> Iterator[None]:
    """Start the user, let its first connection end, run one turn of its reconnect loop."""
    env = user.environment
    try:
        user.on_start()
        wait_for(lambda: user.lost_event().is_set(), 5, "the first connection to end")
        user.keep_connected()  # reports the loss, backs off, resumes
        wait_for(lambda: len(server.conns) == 2, 5, "the second connection")
        yield
    finally:
        user.on_stop()
        telemetry.get_plugin(env).probe.stop()
        env.runner.quit()  # type: ignore[union-attr]


@pytest.fixture
def scripted():
    servers: list[ScriptedServer] = []

    def start(*scripts: Callable[[Conn], None]) -> ScriptedServer:
        servers.append(ScriptedServer(list(scripts)))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


class Watcher(WsSubscriber):
    reconnect_min = 0.01
    reconnect_max = 0.02


class StompWatcher(StompSubscriber):
    reconnect_min = 0.01
    reconnect_max = 0.02
    heartbeats = (0, 0)
    connect_timeout = 5.0
    receipt_timeout = 5.0


def test_ws_resumes_after_the_last_stream_id_and_the_replay_counts_as_late_not_lost(scripted):
    due = time.time_ns() - 1_000_000_000  # 1 s ago: older than the 50 ms grace on arrival
    env_box: list[Environment] = []

    def first(conn: Conn) -> None:
        ledger = telemetry.get_ledger(env_box[0])
        conn.send_text('{"stream_id": "1700000000000-0", ' + _message(ledger, 1, due)[1:])
        gevent.sleep(0.1)  # then the connection drops (seq 2 and 3 are published meanwhile)

    def replay(conn: Conn) -> None:
        ledger = telemetry.get_ledger(env_box[0])
        for seq, sid in ((2, "1700000000001-0"), (3, "1700000000002-0")):
            conn.send_text(f'{{"stream_id": "{sid}", ' + _message(ledger, seq, due)[1:])
        _hold(conn)

    server = scripted(first, replay)
    env = _env(server)
    env_box.append(env)
    user = Watcher(env)
    with resumed(user, server):
        wait_for(lambda: user.frames == 3, 5, "the replayed frames")
        assert [c.path for c in server.conns] == [
            "/coordinates",
            "/coordinates?since=1700000000000-0",
        ]
        assert user.last_stream_id == "1700000000002-0"
        assert user.last_url.endswith("/coordinates?since=1700000000000-0")
        sub = user.sub
        assert sub is not None and sub.resumed_ns > 0
        delivered, duplicated, reordered, late, _, _ = sub._counters["mqtt→ws"]
        assert (delivered, duplicated, reordered, late) == (3, 0, 0, 2)
        stream = sub.streams["robot-0001"]
        assert (stream.first, stream.hi, stream.missing()) == (1, 3, 0)  # nothing lost
        assert env.stats.entries[("connection lost", "WS")].num_failures == 1
        assert env.stats.entries[("connect:/coordinates", "WS")].num_requests == 2


def test_ws_appends_since_to_a_path_that_has_a_query(scripted):
    def first(conn: Conn) -> None:
        conn.send_text('{"stream_id": "42-1", "x": 1}')
        gevent.sleep(0.1)

    class Filtered(Watcher):
        path = "/coordinates?devices=robot-0001"

    server = scripted(first, _hold)
    env = _env(server)
    user = Filtered(env)
    with resumed(user, server):
        assert [c.path for c in server.conns] == [
            "/coordinates?devices=robot-0001",
            "/coordinates?devices=robot-0001&since=42-1",
        ]
        assert user.connect_name == "connect:/coordinates"


def test_ws_without_a_stream_id_reconnects_without_since(scripted):
    def first(conn: Conn) -> None:
        conn.send_text('{"x": 1}')  # an older gateway: no stream ids
        gevent.sleep(0.1)

    server = scripted(first, _hold)
    env = _env(server)
    user = Watcher(env)
    with resumed(user, server):
        assert [c.path for c in server.conns] == ["/coordinates", "/coordinates"]


def _stomp_session(conn: Conn, subscribes: list[dict[str, str]]) -> None:
    command, _ = conn.stomp_frame()
    assert command == "CONNECT"
    conn.send_stomp("CONNECTED", {"version": "1.2", "heart-beat": "0,0"})
    command, headers = conn.stomp_frame()
    assert command == "SUBSCRIBE"
    subscribes.append(headers)
    conn.send_stomp("RECEIPT", {"receipt-id": headers["receipt"]})


def test_stomp_resubscribes_with_since_and_the_replay_counts_as_late_not_lost(scripted):
    due = time.time_ns() - 1_000_000_000
    subscribes: list[dict[str, str]] = []
    env_box: list[Environment] = []

    def message(conn: Conn, seq: int, sid: str) -> None:
        body = _message(telemetry.get_ledger(env_box[0]), seq, due)
        headers = {
            "destination": "/topic/coordinates",
            "subscription": subscribes[-1]["id"],
            "message-id": f"m-{seq}",
            "stream-id": sid,
            "content-length": str(len(body.encode())),
        }
        conn.send_stomp("MESSAGE", headers, body)

    def first(conn: Conn) -> None:
        _stomp_session(conn, subscribes)
        message(conn, 1, "1700000000000-0")
        gevent.sleep(0.1)  # then the connection drops

    def replay(conn: Conn) -> None:
        _stomp_session(conn, subscribes)
        message(conn, 2, "1700000000001-0")
        message(conn, 3, "1700000000002-0")
        _hold(conn)

    server = scripted(first, replay)
    env = _env(server)
    env_box.append(env)
    user = StompWatcher(env)
    with resumed(user, server):
        wait_for(lambda: user.client.messages == 3, 5, "the replayed MESSAGEs")
        assert len(subscribes) == 2
        assert "since" not in subscribes[0]  # the first SUBSCRIBE resumes nothing
        assert subscribes[1]["since"] == "1700000000000-0"
        assert user.client.last_stream_id == "1700000000002-0"
        sub = user.sub
        assert sub is not None
        delivered, duplicated, reordered, late, _, _ = sub._counters["mqtt→stomp"]
        assert (delivered, duplicated, reordered, late) == (3, 0, 0, 2)
        assert sub.streams["robot-0001"].missing() == 0
        assert env.stats.entries[("connection lost", "STOMP")].num_failures == 1
        assert env.stats.entries[("subscribe:/topic/coordinates", "STOMP")].num_requests == 2


def test_stomp_resume_can_be_switched_off(scripted):
    subscribes: list[dict[str, str]] = []

    def first(conn: Conn) -> None:
        _stomp_session(conn, subscribes)
        conn.send_stomp(
            "MESSAGE",
            {"destination": "/topic/coordinates", "subscription": subscribes[-1]["id"],
             "message-id": "m-1", "stream-id": "9-0"},
            "{}",
        )  # fmt: skip
        gevent.sleep(0.1)

    def second(conn: Conn) -> None:
        _stomp_session(conn, subscribes)
        _hold(conn)

    class NoResume(StompWatcher):
        resume = False

    server = scripted(first, second)
    env = _env(server)
    user = NoResume(env)
    with resumed(user, server):
        wait_for(lambda: len(subscribes) == 2, 5, "the second SUBSCRIBE")
        assert user.client.last_stream_id == "9-0"
        assert "since" not in subscribes[0] and "since" not in subscribes[1]
