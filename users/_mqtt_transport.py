"""One non-blocking TCP (optionally TLS) connection, driven by the process pump.

The byte-moving half of :class:`users._mqtt_client.DeviceClient`: open the socket
(TCP_NODELAY, optional source address), complete TCP and TLS, write with one
``send`` per flush and wait for writability only when the kernel buffer is
full, read whatever arrived, and time reconnect attempts. It knows nothing of
MQTT: the client implements the hooks ``_transport_up`` (send CONNECT),
``_feed`` (decode bytes), ``_attempt_failed``, ``_lost`` and ``_writable_again``.

TLS runs over ``ssl.MemoryBIO``: the TLS object never touches the socket, so
the handshake and records go through the same non-blocking reads and writes as
plain TCP, and no greenlet ever blocks in ``SSLSocket.recv``.

Every socket gets TCP_NODELAY: paho never sets it, and under gevent Nagle's
algorithm adds ~10 ms of false latency at p50 — measured on the 2-core dev
machine, publish -> receive at 1k msg/s over loopback: p50 10.1 ms with paho's
default sockets under gevent, 0.125 ms with TCP_NODELAY (``python -m bench
mqtt-latency`` measures this client's PUBACK time).
"""

from __future__ import annotations

import _socket
import errno
import ipaddress
import socket as _stdsocket
import ssl
import time
from dataclasses import dataclass
from typing import Any

from telemetry.wire import WireCount
from users._backoff import Backoff
from users._mqtt_codec import MQTT311
from users._mqtt_loop import READ, WRITE, Pump

__all__ = [
    "ClientConfig",
    "Transport",
    "IDLE",
    "CONNECTING",
    "HANDSHAKE",
    "WAIT_CONNACK",
    "CONNECTED",
    "CLOSING",
    "CLOSED",
    "CLOSE_WAIT_S",
]

# connection states
IDLE, CONNECTING, HANDSHAKE, WAIT_CONNACK, CONNECTED, CLOSING, CLOSED = range(7)
#: After DISCONNECT, how long to wait for the broker to close first (see DeviceClient.close).
CLOSE_WAIT_S = 2.0
# IP_BIND_ADDRESS_NO_PORT (Linux 4.2+, <linux/in.h>): bind() to a source address
# without reserving a port yet, so the port is chosen at connect() per 4-tuple and
# each 127.0.0.x source address gets the whole ephemeral range.
_IP_BIND_ADDRESS_NO_PORT = getattr(_stdsocket, "IP_BIND_ADDRESS_NO_PORT", 24)
_RECV_SIZE = 256 * 1024
#: Stop accepting publishes while this much is waiting for the socket.
HIGH_WATER = 1024 * 1024


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """Connection and session settings, shared by every client of one device class."""

    host: str
    port: int
    version: int = MQTT311
    username: str | None = None
    password: str | None = None
    tls: ssl.SSLContext | None = None
    keepalive: int = 60
    clean: bool = True
    session_expiry: int = 0  # v5: seconds the broker keeps a persistent session
    max_inflight: int = 20
    connect_timeout: float = 10.0
    reconnect_min: float = 0.2
    reconnect_max: float = 10.0


_resolved: dict[tuple[str, int], tuple[int, Any]] = {}


def resolve(host: str, port: int) -> tuple[int, Any]:
    """(family, sockaddr) of the broker, looked up once per process.

    gevent resolves through a small thread pool: 19,000 devices each asking
    took seconds here, so the first answer is shared (and an IP literal needs
    no lookup at all).
    """
    hit = _resolved.get((host, port))
    if hit is None:
        try:
            version = ipaddress.ip_address(host).version
            hit = (_socket.AF_INET6 if version == 6 else _socket.AF_INET, (host, port))
        except ValueError:
            info = _stdsocket.getaddrinfo(host, port, 0, _stdsocket.SOCK_STREAM)
            hit = (info[0][0], info[0][4])
        _resolved[(host, port)] = hit
    return hit


class Transport:
    """Socket, TLS, watchers, write buffering and reconnect timing (see module doc)."""

    __slots__ = (
        "cfg",
        "source_address",
        "state",
        "_pump",
        "_addr",
        "_family",
        "_sock",
        "_rw",
        "_ww",
        "_timer",
        "_tls",
        "_bio_in",
        "_bio_out",
        "_out",
        "_wpending",
        "_read_posted",
        "_t_attempt",
        "_m_attempt",
        "_last_tx",
        "_backoff",
        "wire",
        "_up",
    )

    def __init__(
        self,
        cfg: ClientConfig,
        pump: Pump,
        source_address: str | None = None,
        wire: WireCount | None = None,
    ) -> None:
        self.cfg = cfg
        self.source_address = source_address
        self.state = IDLE
        self._pump = pump
        self._addr: Any = None
        self._family = _socket.AF_INET
        self._sock: Any = None
        self._rw: Any = None
        self._ww: Any = None
        self._timer: Any = None
        self._tls: ssl.SSLObject | None = None
        self._bio_in: ssl.MemoryBIO | None = None
        self._bio_out: ssl.MemoryBIO | None = None
        self._out: list[bytes] = []  # packets queued for the next flush
        self._wpending: bytes | None = None  # bytes the kernel did not take yet
        self._read_posted = False
        self._t_attempt = 0.0  # perf_counter at the attempt's start (for timings)
        self._m_attempt = 0.0  # monotonic at the attempt's start (for timeouts)
        self._last_tx = 0.0
        self._backoff = Backoff(cfg.reconnect_min, cfg.reconnect_max)
        #: bytes this connection's socket sent and received (shared by a protocol's clients)
        self.wire = wire if wire is not None else WireCount()
        self._up = False  # TCP established (counted in wire.opened) and not yet closed

    # --- hooks the protocol implements --------------------------------------------------
    def _transport_up(self) -> None:
        raise NotImplementedError

    def _feed(self, data: bytes) -> None:
        raise NotImplementedError

    def _attempt_failed(self, reason: str, ms: float | None = None) -> None:
        raise NotImplementedError

    def _lost(self, reason: str) -> None:
        raise NotImplementedError

    def _writable_again(self) -> None:
        raise NotImplementedError

    # --- writing ------------------------------------------------------------------------
    def flush(self) -> None:
        """Write everything queued with one ``send``; the rest waits for writability."""
        out = self._out
        if not out or self._wpending is not None or self._sock is None or self.state == HANDSHAKE:
            return  # (during the TLS handshake, CONNECT waits for it to finish)
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        tls = self._tls
        if tls is not None:
            assert self._bio_out is not None
            tls.write(data)
            data = self._bio_out.read()
        self._send_raw(data)

    def _send_raw(self, data: bytes) -> None:
        if self._wpending is not None:
            self._wpending += data
            return
        try:
            n = self._sock.send(data)
        except BlockingIOError:
            n = 0
        except OSError as err:
            self._lost(f"write failed: {err}")
            return
        self.wire.sent += n
        self._last_tx = time.monotonic()
        if n < len(data):
            self._wpending = data[n:]
            self._ww.start(self._write_ready)

    @property
    def backlogged(self) -> bool:
        """The kernel refused more than :data:`HIGH_WATER` bytes: stop producing."""
        return self._wpending is not None and len(self._wpending) >= HIGH_WATER

    # libev watchers are level-triggered: until the pump has handled a ready
    # socket, every hub iteration reports it again (19,000 connecting sockets
    # queued 3.5 million callbacks that way). Writability is one-shot (the watcher
    # stops when it fires; a handler that still needs it restarts it),
    # readability is posted once until handled (no epoll_ctl per read).
    def _write_ready(self) -> None:  # in the hub
        self._ww.stop()
        self._pump.post(self._on_writable)

    def _read_ready(self) -> None:  # in the hub
        if not self._read_posted:
            self._read_posted = True
            self._pump.post(self._on_readable)

    def _on_writable(self) -> None:
        if self._sock is None:
            return
        if self.state == CONNECTING:
            self._tcp_connected()
            return
        data = self._wpending
        if data is not None:
            try:
                n = self._sock.send(data)
            except BlockingIOError:
                self._ww.start(self._write_ready)
                return
            except OSError as err:
                self._lost(f"write failed: {err}")
                return
            self.wire.sent += n
            self._last_tx = time.monotonic()
            if n < len(data):
                self._wpending = data[n:]
                self._ww.start(self._write_ready)
                return
            self._wpending = None
        if self._out:
            self.flush()
        if self._wpending is None:
            self._writable_again()

    # --- reading ------------------------------------------------------------------------
    def _on_readable(self) -> None:
        self._read_posted = False
        sock = self._sock
        if sock is None:
            return
        try:
            data = sock.recv(_RECV_SIZE)
        except BlockingIOError:
            return
        except OSError as err:
            self._lost(f"read failed: {err}")
            return
        if not data:
            self._lost("the broker closed the connection")
            return
        self.wire.received += len(data)
        if self.state == CLOSING:  # late acks after DISCONNECT: the user has stopped
            return
        if self._tls is not None:
            data = self._tls_read(data)
            if not data:
                return
        self._feed(data)

    def _tls_read(self, data: bytes) -> bytes:
        assert self._tls is not None and self._bio_in is not None
        self._bio_in.write(data)
        if self.state == HANDSHAKE:
            self._handshake()
            if self.state == HANDSHAKE or self._tls is None:
                return b""
        chunks = []
        while True:
            try:
                chunk = self._tls.read(_RECV_SIZE)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLError as err:
                self._lost(f"TLS error: {err}")
                return b""
            if not chunk:  # close_notify
                break
            chunks.append(chunk)
        return b"".join(chunks)

    # --- connecting -----------------------------------------------------------------------
    def _start_attempt(self) -> None:
        self._timer = None
        if self.state in (CLOSING, CLOSED):
            return
        if self._addr is None:
            self._family, self._addr = resolve(self.cfg.host, self.cfg.port)
        self._t_attempt = time.perf_counter()
        self._m_attempt = time.monotonic()
        self.state = CONNECTING
        try:
            sock = _socket.socket(self._family, _socket.SOCK_STREAM)
        except OSError as exc:  # EMFILE: the open-files limit
            self._attempt_failed(f"cannot open a socket: {exc}")
            return
        self._sock = sock
        sock.setblocking(False)
        sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
        try:
            if self.source_address:
                sock.setsockopt(_socket.SOL_IP, _IP_BIND_ADDRESS_NO_PORT, 1)
                sock.bind((self.source_address, 0))
            code = sock.connect_ex(self._addr)
        except OSError as exc:
            code = exc.errno or errno.EIO
        if code not in (0, errno.EINPROGRESS):
            self._attempt_failed(self._refused(code))
            return
        fd = sock.fileno()
        self._rw = self._pump.io(fd, READ)
        self._ww = self._pump.io(fd, WRITE)
        self._ww.start(self._write_ready)

    def _refused(self, code: int) -> str:
        return (
            f"connect to {self.cfg.host}:{self.cfg.port} failed: {errno.errorcode.get(code, code)}"
        )

    def _tcp_connected(self) -> None:
        code = self._sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_ERROR)
        if code:
            self._attempt_failed(self._refused(code))
            return
        self._up = True
        self.wire.opened += 1
        self._rw.start(self._read_ready)
        tls = self.cfg.tls
        if tls is None:
            self._transport_up()
            return
        self.state = HANDSHAKE
        self._bio_in = ssl.MemoryBIO()
        self._bio_out = ssl.MemoryBIO()
        self._tls = tls.wrap_bio(self._bio_in, self._bio_out, server_hostname=self.cfg.host)
        self._handshake()

    def _handshake(self) -> None:
        assert self._tls is not None and self._bio_out is not None
        try:
            self._tls.do_handshake()
        except ssl.SSLWantReadError:
            pending = self._bio_out.read()
            if pending:
                self._send_raw(pending)
            return
        except ssl.SSLError as err:
            self._attempt_failed(
                f"TLS handshake with {self.cfg.host}:{self.cfg.port} failed: {err}"
            )
            return
        pending = self._bio_out.read()
        if pending:
            self._send_raw(pending)
        self._transport_up()

    # --- reconnect timing and teardown ----------------------------------------------------
    def _schedule_reconnect(self) -> None:
        if self.state in (CLOSING, CLOSED):
            return
        self._timer = self._pump.timer(self._backoff.next())
        self._timer.start(self._pump.post, self._start_attempt)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.stop()
            self._timer.close()
            self._timer = None

    def _teardown(self) -> None:
        """Close the socket; what was queued and not written is gone, as on the wire."""
        for w in (self._rw, self._ww):
            if w is not None:
                w.stop()
                w.close()
        self._rw = self._ww = None
        if self._up:
            self._up = False
            self.wire.closed += 1
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
            self._sock = None
        self._tls = self._bio_in = self._bio_out = None
        self._out.clear()
        self._wpending = None
