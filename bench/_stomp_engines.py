"""The candidate STOMP receive engines, one per child process, against one frame source.

    python -m bench._stomp_engines --engine ours|wsproto|stomppy --mode throughput --port P
    python -m bench._stomp_engines --engine ours|stomppy|users --mode idle --clients 10000 --port P

``ours`` is ``users._stomp_client.StompClient`` (sans-IO WebSocket + STOMP codecs,
read by the process pump); ``stomppy`` is stomp.py 9 on websocket-client with
its receiver greenlet (``users._stomp_stomppy.StompPyClient``, tuned: UTF-8
check off, TCP_NODELAY); ``wsproto`` is wsproto 1.3 (sans-IO) on a gevent
socket with a reader greenlet per connection and our STOMP codec. ``users``
(idle only) is whole ``StompSubscriber`` Locust users on ``ours``.

Every MESSAGE goes to a real ledger subscriber (``Subscriber.received``: JSON
decode, sequence accounting, HDR histograms, the ``E2E`` request events into a
``LocalRunner``'s stats), as in a Locust run. Throughput mode prints one JSON
line: frames received and the process's CPU seconds over the window.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import gevent  # noqa: E402
import gevent.pool  # noqa: E402
import gevent.select  # noqa: E402
import psutil  # noqa: E402
from gevent.event import AsyncResult, Event  # noqa: E402
from locust.env import Environment  # noqa: E402

import telemetry  # noqa: E402
from users._mqtt_loop import get_pump  # noqa: E402
from users._stomp_client import StompClient  # noqa: E402
from users._stomp_codec import FrameReader, encode  # noqa: E402
from users._stomp_stomppy import StompPyClient  # noqa: E402

RUN = "bench"
#: the bearer token CONNECT carries (a real gateway wants one; the fake source ignores it)
_TOKEN = os.environ.get("PIPESWARM_TOKEN", "")


def _cpu(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


class WsprotoClient:
    """wsproto on a gevent socket, a reader greenlet per connection, our STOMP codec."""

    def __init__(self, host: str, port: int, on_message: Any, **_: Any) -> None:
        self.host, self.port, self.on_message = host, port, on_message
        self.messages = 0
        self.lost = Event()
        self._waiters: dict[str, AsyncResult] = {}
        self._connected = AsyncResult()

    def connect(self) -> float:
        from wsproto import ConnectionType, WSConnection
        from wsproto.events import Request

        start = time.time_ns()
        sock = socket.create_connection((self.host, self.port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.stomp = FrameReader()
        sock.sendall(
            self.ws.send(Request(host=self.host, target="/ws", subprotocols=["v12.stomp"]))
        )
        self.reader = gevent.spawn(self._read)
        return (self._connected.get(timeout=10) - start) / 1e6

    def _send_stomp(self, data: bytes) -> None:
        from wsproto.events import TextMessage

        self.sock.sendall(self.ws.send(TextMessage(data=data.decode())))

    def _read(self) -> None:
        from wsproto.events import (
            AcceptConnection,
            BytesMessage,
            CloseConnection,
            Ping,
            TextMessage,
        )

        sock, ws = self.sock, self.ws
        while True:
            gevent.sleep(0)  # fairness: a flooded socket never blocks, so never yields
            data = sock.recv(256 * 1024)
            recv_ns = time.time_ns()
            if not data:
                self.lost.set()
                return
            ws.receive_data(data)
            for event in ws.events():
                if isinstance(event, (TextMessage, BytesMessage)):
                    payload = event.data.encode() if isinstance(event.data, str) else event.data
                    for frame in self.stomp.feed(payload):
                        if frame.command == "MESSAGE":
                            self.messages += 1
                            self.on_message(frame.body, recv_ns)
                        elif frame.command == "RECEIPT":
                            self._waiters.pop(frame.headers["receipt-id"]).set(recv_ns)
                        elif frame.command == "CONNECTED":
                            self._connected.set(recv_ns)
                elif isinstance(event, AcceptConnection):
                    headers = {"accept-version": "1.2", "host": "h"}
                    if _TOKEN:
                        headers["passcode"] = _TOKEN
                    self._send_stomp(encode("CONNECT", headers))
                elif isinstance(event, Ping):
                    sock.sendall(ws.send(event.response()))
                elif isinstance(event, CloseConnection):
                    self.lost.set()
                    return

    def subscribe(self, destination: str) -> float:
        waiter = self._waiters["r1"] = AsyncResult()
        start = time.time_ns()
        self._send_stomp(
            encode("SUBSCRIBE", {"id": "1", "destination": destination, "receipt": "r1"})
        )
        return (waiter.get(timeout=10) - start) / 1e6

    def close(self) -> None:
        self.reader.kill()
        self.sock.close()


def _yielding_stomppy() -> None:
    """stomp.py's receiver greenlet yields once per read, as the wsproto reader does.

    A flooded socket never blocks, so a reader greenlet that only reads would
    never let the hub run (the window's timer included); ours yields per batch
    by design (the pump parks after each round).
    """
    from users import _stomp_stomppy

    receive = _stomp_stomppy._StampingTransport.receive

    def yielding(self: Any) -> bytes:
        gevent.sleep(0)
        return receive(self)

    _stomp_stomppy._StampingTransport.receive = yielding  # type: ignore[method-assign]


def _env(hop_events: str = "true") -> tuple[Environment, Any]:
    # --e2e-hop-events false: one E2E request event per message instead of one per hop
    # (the ledger's HDR histograms keep every hop either way)
    env = Environment(parsed_options=argparse.Namespace(e2e_hop_events=hop_events))
    env.create_local_runner()  # its stats listen to the E2E request events
    plugin = telemetry.install(env)
    plugin.start_run(RUN)
    return env, plugin


def _discard(body: bytes, recv_ns: int) -> None:
    pass


def _client(engine: str, env: Environment, port: int, ledger: Any, no_ledger: bool = False) -> Any:
    on_message = _discard if no_ledger else ledger.subscriber("stomp").received
    # (0, 0): no heart-beats either way, so only MESSAGE frames are on the wire
    kwargs: dict[str, Any] = {"on_message": on_message, "heartbeats": (0, 0), "token": _TOKEN}
    if engine == "ours":
        return StompClient("127.0.0.1", port, "/ws", pump=get_pump(env), **kwargs)
    if engine == "stomppy":
        return StompPyClient("127.0.0.1", port, "/ws", **kwargs)
    return WsprotoClient("127.0.0.1", port, **kwargs)


def throughput(args: argparse.Namespace) -> None:
    proc = psutil.Process()
    env, plugin = _env(args.hop_events)
    ledger = telemetry.get_ledger(env)
    clients = [
        _client(args.engine, env, args.port, ledger, args.no_ledger) for _ in range(args.clients)
    ]
    for c in clients:
        c.connect()
        c.subscribe(args.destination)
    if args.wait_start:
        # every client is subscribed: say so, and take the window's start from the parent,
        # which feeds only once every process is ready (under a flood, the last connects
        # of an overloaded process took longer than a fixed head start)
        print(json.dumps({"ready": sum(1 for c in clients if c.up)}), flush=True)
        gevent.select.select([sys.stdin], [], [])
        gevent.sleep(max(0.0, float(sys.stdin.readline()) - time.time()))
    elif args.start_at:  # the parent's clock: every engine measures the same window
        gevent.sleep(max(0.0, args.start_at - time.time()))
    else:
        gevent.sleep(args.warmup)
    n0, cpu0, t0 = sum(c.messages for c in clients), _cpu(proc), time.monotonic()
    up0 = sum(1 for c in clients if not c.lost.is_set())
    gevent.sleep(args.seconds)
    n1, cpu1, t1 = sum(c.messages for c in clients), _cpu(proc), time.monotonic()
    up1 = sum(1 for c in clients if not c.lost.is_set())
    plugin.probe.stop()
    print(
        json.dumps(
            {
                "engine": args.engine,
                "frames": n1 - n0,
                "wall_s": t1 - t0,
                "cpu_s": cpu1 - cpu0,
                "clients": len(clients),
                "up": [up0, up1],
                "before": n0,
            }
        ),
        flush=True,
    )


def idle(args: argparse.Namespace) -> None:
    proc = psutil.Process()
    if args.engine == "users":
        _idle_users(args, proc)
        return
    env, plugin = _env()
    ledger = telemetry.get_ledger(env)
    gc.collect()
    rss0 = proc.memory_info().rss
    t0 = time.monotonic()
    clients = []
    failures = 0

    def one() -> None:
        nonlocal failures
        c = _client(args.engine, env, args.port, ledger)
        try:
            c.connect()
            c.subscribe("/topic/idle")
            clients.append(c)
        except Exception:
            failures += 1

    pool = gevent.pool.Pool(args.concurrency)
    for _ in range(args.clients):
        pool.spawn(one)
    pool.join(timeout=args.timeout)
    up_s = time.monotonic() - t0
    gevent.sleep(1)
    gc.collect()
    rss1 = proc.memory_info().rss
    cpu0 = _cpu(proc)
    gevent.sleep(3)
    print(
        json.dumps(
            {
                "engine": args.engine,
                "clients": args.clients,
                "connected": len(clients),
                "failures": failures,
                "kb_per_client": (rss1 - rss0) / max(len(clients), 1) / 1024,
                "connects_per_s": len(clients) / up_s,
                "idle_cpu_pct": (_cpu(proc) - cpu0) / 3 * 100,
            }
        ),
        flush=True,
    )
    plugin.probe.stop()


def _idle_users(args: argparse.Namespace, proc: psutil.Process) -> None:
    from users.stomp import StompSubscriber

    class Idle(StompSubscriber):
        url = f"http://127.0.0.1:{args.port}"
        destination = "/topic/devices/{device_id}"  # the source keeps these idle
        heartbeats = (10_000, 10_000)
        connect_timeout = 60.0

    env = Environment(user_classes=[Idle])
    runner = env.create_local_runner()
    plugin = telemetry.install(env)
    plugin.start_run(RUN)
    gevent.sleep(0.5)
    gc.collect()
    rss0 = proc.memory_info().rss
    t0 = time.monotonic()
    runner.start(args.clients, spawn_rate=args.spawn_rate)

    def subscribed() -> int:
        e = env.stats.entries.get(("subscribe:/topic/devices/{id}", "STOMP"))
        return 0 if e is None else e.num_requests - e.num_failures

    deadline = time.monotonic() + args.timeout
    while subscribed() < args.clients and time.monotonic() < deadline:
        gevent.sleep(0.05)
    up, up_s = subscribed(), time.monotonic() - t0
    gevent.sleep(1)
    gc.collect()
    rss1 = proc.memory_info().rss
    cpu0 = _cpu(proc)
    gevent.sleep(3)
    conn = env.stats.entries.get(("connect", "STOMP"))
    print(
        json.dumps(
            {
                "engine": "users",
                "clients": args.clients,
                "connected": up,
                "failures": sum(e.num_failures for e in env.stats.entries.values()),
                "kb_per_client": (rss1 - rss0) / max(up, 1) / 1024,
                "connects_per_s": up / up_s,
                "idle_cpu_pct": (_cpu(proc) - cpu0) / 3 * 100,
                "connect_ms": {
                    p: conn.get_response_time_percentile(p / 100) if conn else 0
                    for p in (50, 90, 99, 100)
                },
            }
        ),
        flush=True,
    )
    runner.quit()
    plugin.probe.stop()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench._stomp_engines")
    p.add_argument("--engine", choices=("ours", "wsproto", "stomppy", "users"), required=True)
    p.add_argument("--mode", choices=("throughput", "idle"), required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--clients", type=int, default=10)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--concurrency", type=int, default=200)
    p.add_argument("--spawn-rate", type=float, default=20000.0)
    p.add_argument("--timeout", type=float, default=120.0)
    p.add_argument("--destination", default="/topic/stream")
    p.add_argument("--start-at", type=float, default=0.0, help="epoch s the window starts")
    p.add_argument(
        "--wait-start",
        action="store_true",
        help='print {"ready": n} once subscribed, then read the window\'s start (epoch s) from stdin',
    )
    p.add_argument("--fair-yield", action="store_true", help="stomp.py yields per read")
    p.add_argument("--no-ledger", action="store_true", help="drop the bodies: the engine alone")
    p.add_argument("--hop-events", choices=("true", "false"), default="true")
    args = p.parse_args(argv)
    if args.engine == "stomppy" and args.fair_yield:
        _yielding_stomppy()
    throughput(args) if args.mode == "throughput" else idle(args)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
