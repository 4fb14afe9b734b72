"""Clients of a gateway under test: updates into the stream, STOMP and raw WebSocket out.

Shared by the gateway's component tests (``test_gateway.py``, ``test_gateway_stream.py``).
"""

from __future__ import annotations

import json
import threading
import time
import uuid

import redis
import stomp
import websocket

from pipeline.config import STREAM_FIELD, UPDATES_STREAM
from tests.harness import Gateway
from tests.helpers import wait_for


def device() -> str:
    return f"gw-{uuid.uuid4().hex[:10]}"


def update(device_id: str, seq: int, **extra) -> dict:
    """An update as the consumer publishes it: bridge and consumer hops stamped."""
    now = time.time_ns()
    return {
        "device_id": device_id,
        "x": float(seq),
        "y": -1.5,
        "timestamp": now / 1e9,
        "trace": {
            "run": "gw-test",
            "seq": seq,
            "t0": now - 3000,
            "tp": now - 2000,
            "hops": {"bridge": now - 1000, "consumer": now},
        },
        **extra,
    }


def publish(rds: redis.Redis, msg: dict | str | bytes) -> str:
    """Play the consumer: XADD one entry (field ``m``) to the update stream; its id."""
    raw = msg if isinstance(msg, (str, bytes)) else json.dumps(msg)
    return rds.xadd(UPDATES_STREAM, {STREAM_FIELD: raw}).decode()


def recv_json(conn: websocket.WebSocket, pred, limit: int = 10_000) -> dict:
    """Read frames until one satisfies `pred` (other tests' traffic may interleave)."""
    for _ in range(limit):
        msg = json.loads(conn.recv())
        if pred(msg):
            return msg
    raise AssertionError("no matching frame")


# -- STOMP helpers ----------------------------------------------------------------------
class StompListener(stomp.ConnectionListener):
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.messages: list[tuple[dict, str]] = []
        self.receipts: set[str] = set()
        self.errors: list[tuple[dict, str]] = []

    def on_message(self, frame) -> None:
        with self.lock:
            self.messages.append((dict(frame.headers), frame.body))

    def headers(self, subscription: str) -> list[dict]:
        with self.lock:
            return [h for h, _ in self.messages if h["subscription"] == subscription]

    def on_receipt(self, frame) -> None:
        with self.lock:
            self.receipts.add(frame.headers["receipt-id"])

    def on_error(self, frame) -> None:
        with self.lock:
            self.errors.append((dict(frame.headers), frame.body))

    def bodies(self, subscription: str, device_id: str | None = None) -> list[dict]:
        with self.lock:
            out = [json.loads(b) for h, b in self.messages if h["subscription"] == subscription]
        return [m for m in out if device_id is None or m.get("device_id") == device_id]


def stomp_client(gw: Gateway, **connect_kwargs) -> tuple[stomp.WSStompConnection, StompListener]:
    conn = stomp.WSStompConnection([("127.0.0.1", gw.port)], ws_path="/ws", timeout=10)
    listener = StompListener()
    conn.set_listener("test", listener)
    connect_kwargs.setdefault("passcode", gw.token)
    conn.connect(wait=True, **connect_kwargs)
    return conn, listener


def subscribe(conn, listener: StompListener, destination: str, sub_id: str) -> None:
    receipt = f"sub-{sub_id}"
    conn.subscribe(destination, id=sub_id, receipt=receipt)
    wait_for(lambda: receipt in listener.receipts, 10, f"RECEIPT {receipt}")


def raw_stomp(gw: Gateway, connect: bool = True) -> websocket.WebSocket:
    conn = gw.ws("/ws", subprotocols=["v12.stomp"])
    assert conn.getsubprotocol() == "v12.stomp"
    if connect:
        conn.send(f"CONNECT\naccept-version:1.2\nhost:test\npasscode:{gw.token}\n\n\x00")
        assert conn.recv().startswith("CONNECTED\n")
    return conn


def assert_closed_by_server(conn: websocket.WebSocket) -> None:
    """Read until the server's close frame (recv() gives "") or the socket ends."""
    for _ in range(1000):
        try:
            if conn.recv() == "":
                return
        except websocket.WebSocketConnectionClosedException:
            return
    raise AssertionError("the server kept the connection open")


def recv_frame(conn: websocket.WebSocket) -> str:
    """The next STOMP frame, skipping heart-beat EOLs."""
    while True:
        data = conn.recv()
        if data.strip("\r\n"):
            return data
