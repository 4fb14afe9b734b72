"""The two candidate engines for MqttDevice, side by side, in a child process.

    python -m bench._engines --engine paho|lean --mode throughput --qos 1 --port P
    python -m bench._engines --engine paho|lean --mode idle --clients 5000 --port P

``paho`` is paho-mqtt 2.2 on an external loop driven from gevent socket
readiness, the way its docs allow: ``on_socket_open`` / ``on_socket_close`` /
``on_socket_register_write`` / ``on_socket_unregister_write`` start and stop
libev io watchers on gevent's hub, whose callbacks call ``loop_read`` /
``loop_write``; one greenlet calls ``loop_misc`` every second; TCP_NODELAY set
in ``on_socket_open``. ``lean`` is ``users._mqtt_client.DeviceClient``.

Both get the same driver: one greenlet round-robins over the clients, builds the
envelope payload and publishes whenever a client has room (20 in flight at
QoS 1), one message per call (no batching), and every acknowledgement fires a
Locust request event into a real ``Environment``'s stats. Throughput mode prints
``START``/``END`` lines around the measured window for the parent's counting
subscriber, then a JSON line; idle mode prints a JSON line with RSS per client.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from typing import Any  # noqa: E402

import gevent  # noqa: E402
import psutil  # noqa: E402
from gevent.hub import get_hub  # noqa: E402
from locust.env import Environment  # noqa: E402

from telemetry import envelope  # noqa: E402
from users._mqtt_client import ClientConfig, DeviceClient  # noqa: E402

warnings.filterwarnings("ignore", category=DeprecationWarning)
WINDOW = 20


def _cpu(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


class PahoHub:
    """paho-mqtt on gevent's hub: io watchers call loop_read/loop_write (no loop thread)."""

    def __init__(self, env: Environment, port: int, client_id: str, qos: int) -> None:
        import paho.mqtt.client as mqtt

        self.fire = env.events.request.fire
        self.name = f"publish:{qos}:sensors/+/coordinates"
        self.loop = get_hub().loop
        self.rw: Any = None
        self.ww: Any = None
        self.inflight: dict[int, tuple[float, int]] = {}
        self.connected = False
        c = self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
        c.on_socket_open = self._open
        c.on_socket_close = self._close
        c.on_socket_register_write = lambda cl, ud, sock: self.ww.start(self._write)
        c.on_socket_unregister_write = lambda cl, ud, sock: self.ww.stop()
        c.on_publish = self._acked
        c.on_connect = lambda *a: setattr(self, "connected", True)
        c.connect("127.0.0.1", port, keepalive=60)

    def _open(self, client: Any, userdata: Any, sock: Any) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.rw = self.loop.io(sock.fileno(), 1)
        self.ww = self.loop.io(sock.fileno(), 2)
        self.rw.start(self.client.loop_read)

    def _close(self, client: Any, userdata: Any, sock: Any) -> None:
        for w in (self.rw, self.ww):
            if w is not None:
                w.stop()

    def _write(self) -> None:
        self.client.loop_write()

    def _acked(self, client: Any, userdata: Any, mid: int, rc: Any, props: Any) -> None:
        start, size = self.inflight.pop(mid, (0.0, 0))
        if start:
            self.fire(
                request_type="MQTT",
                name=self.name,
                response_time=(time.perf_counter() - start) * 1000,
                response_length=size,
                exception=None,
                context={},
            )

    def room(self, qos: int) -> bool:
        return self.connected and (qos == 0 or len(self.inflight) < WINDOW)

    def publish(self, topic: str, payload: bytes, qos: int) -> None:
        info = self.client.publish(topic, payload, qos)
        if qos:
            self.inflight[info.mid] = (time.perf_counter(), len(payload))
        else:
            self.fire(
                request_type="MQTT",
                name=self.name,
                response_time=None,
                response_length=len(payload),
                exception=None,
                context={},
            )

    def misc(self) -> None:
        self.client.loop_misc()


class Lean:
    def __init__(self, env: Environment, cfg: ClientConfig, client_id: str, qos: int) -> None:
        self.client = DeviceClient(env, cfg, client_id)
        self.name = f"publish:{qos}:sensors/+/coordinates"
        self.client.connect()

    @property
    def connected(self) -> bool:
        return self.client.connected

    def room(self, qos: int) -> bool:
        return self.client.can_publish(qos)

    def publish(self, topic: str, payload: bytes, qos: int) -> None:
        self.client.publish(topic, payload, qos, name=self.name)

    def misc(self) -> None:
        pass


def _clients(args: argparse.Namespace, env: Environment) -> list[Any]:
    cfg = ClientConfig("127.0.0.1", args.port, max_inflight=WINDOW)
    out: list[Any] = []
    for i in range(args.clients):
        cid = f"{args.engine}-{i:05d}"
        out.append(
            PahoHub(env, args.port, cid, args.qos)
            if args.engine == "paho"
            else Lean(env, cfg, cid, args.qos)
        )
        if i % 500 == 499:
            gevent.sleep(0)
    return out


def _misc_loop(clients: list[Any]) -> None:
    while True:
        gevent.sleep(1)
        for c in clients:
            c.misc()


def throughput(args: argparse.Namespace) -> None:
    proc = psutil.Process()
    env = Environment()
    env.create_local_runner()  # its stats listen to the request events
    clients = _clients(args, env)
    gevent.spawn(_misc_loop, clients)
    deadline = time.monotonic() + 10
    while not all(c.connected for c in clients) and time.monotonic() < deadline:
        gevent.sleep(0.05)
    topics = [f"sensors/{args.engine}-{i:05d}/coordinates" for i in range(len(clients))]
    seqs = [0] * len(clients)
    qos = args.qos
    stop_at = [0.0]

    def drive() -> None:
        while not stop_at[0] or time.monotonic() < stop_at[0]:
            for i, c in enumerate(clients):
                if c.room(qos):
                    seqs[i] += 1
                    now = time.time_ns()
                    payload = envelope.build(
                        topics[i][8:-12], 1.5, 2.5, run="bench", seq=seqs[i], t0=now, tp=now
                    )
                    c.publish(topics[i], payload, qos)
            gevent.sleep(0)

    driver = gevent.spawn(drive)
    gevent.sleep(args.warmup)
    cpu0, t0 = _cpu(proc), time.time()
    print(f"START {t0:.6f}", flush=True)
    gevent.sleep(args.seconds)
    cpu1, t1 = _cpu(proc), time.time()
    print(f"END {t1:.6f}", flush=True)
    driver.kill()
    print(
        json.dumps(
            {"engine": args.engine, "wall_s": t1 - t0, "cpu_s": cpu1 - cpu0, "published": sum(seqs)}
        )
    )


def idle(args: argparse.Namespace) -> None:
    proc = psutil.Process()
    env = Environment()
    env.create_local_runner()
    gc.collect()
    rss0 = proc.memory_info().rss
    t0 = time.time()
    clients = _clients(args, env)
    gevent.spawn(_misc_loop, clients)
    deadline = time.monotonic() + 60
    while sum(c.connected for c in clients) < len(clients) and time.monotonic() < deadline:
        gevent.sleep(0.05)
    up = sum(c.connected for c in clients)
    elapsed = time.time() - t0
    gevent.sleep(1)
    gc.collect()
    rss1 = proc.memory_info().rss
    cpu0 = _cpu(proc)
    gevent.sleep(3)
    print(
        json.dumps(
            {
                "engine": args.engine,
                "clients": len(clients),
                "connected": up,
                "kb_per_client": (rss1 - rss0) / max(up, 1) / 1024,
                "connects_per_s": up / elapsed,
                "idle_cpu_pct": (_cpu(proc) - cpu0) / 3 * 100,
            }
        )
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench._engines")
    p.add_argument("--engine", choices=("paho", "lean"), required=True)
    p.add_argument("--mode", choices=("throughput", "idle"), required=True)
    p.add_argument("--qos", type=int, choices=(0, 1), default=1)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--clients", type=int, default=100)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--warmup", type=float, default=1.0)
    args = p.parse_args(argv)
    throughput(args) if args.mode == "throughput" else idle(args)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
