"""``python -m bench amqp-engines``: pika's BlockingConnection under gevent vs the users' engine.

Both publish persistent messages with publisher confirms to a topic exchange on
the same RabbitMQ, from greenlets of one gevent process (monkey-patched, as
Locust runs), for ``--seconds``; a ticker greenlet measures the event-loop lag
(how late a 10 ms sleep wakes up: what every latency measured in that worker
would be off by). pika: ``basic_publish`` on a channel in confirm mode blocks
its greenlet until the ``Basic.Ack`` (pika's BlockingConnection has no other
way to see a confirm). Ours (``users._amqp_client``): up to 20 unconfirmed per
connection, confirms read by a reader greenlet.

    python -m bench amqp-engines --connections 10 --seconds 10   # its own RabbitMQ
    python -m bench amqp-engines --url amqp://user:pw@host:5672/%2F  # or yours
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402
import pika  # noqa: E402
from pika import spec  # noqa: E402

from users._amqp_client import AmqpConnection  # noqa: E402
from users.amqp import parse_amqp_url  # noqa: E402

BODY = b'{"device_id":"robot-0001","x":1.0,"y":2.0,"trace":{"run":"bench","seq":1}}' + b" " * 100


def _lag(stop: list[bool], out: list[float]) -> None:
    while not stop[0]:
        t = time.perf_counter()
        gevent.sleep(0.01)
        out.append((time.perf_counter() - t - 0.01) * 1e3)


def _pika(url: str, n: int, seconds: float) -> tuple[int, list[float]]:
    count = [0]
    stop = [False]
    lags: list[float] = []

    def one(i: int) -> None:
        conn = pika.BlockingConnection(pika.URLParameters(url))
        ch = conn.channel()
        ch.exchange_declare("bench", "topic", durable=True)
        ch.confirm_delivery()
        props = pika.BasicProperties(delivery_mode=2)
        while not stop[0]:
            ch.basic_publish("bench", f"sensors.{i}.coordinates", BODY, props)
            count[0] += 1
        conn.close()

    return _run(one, n, seconds, stop, lags, count)


def _ours(url: str, n: int, seconds: float) -> tuple[int, list[float]]:
    u = parse_amqp_url(url)
    count = [0]
    stop = [False]
    lags: list[float] = []

    def one(i: int) -> None:
        window = gevent.event.Event()
        inflight: set[int] = set()

        def acked(tag: int, multiple: bool, nack: bool) -> None:
            done = [t for t in inflight if t <= tag] if multiple else [tag]
            for t in done:
                inflight.discard(t)
                count[0] += 1
            window.set()

        conn = AmqpConnection(u.host, u.port, u.username, u.password, u.vhost, on_ack=acked)
        conn.connect([spec.Exchange.Declare(exchange="bench", type="topic", durable=True),
                      spec.Confirm.Select()])  # fmt: skip
        props = spec.BasicProperties(delivery_mode=2)
        key = f"sensors.{i}.coordinates"
        while not stop[0]:
            while len(inflight) < 20:
                inflight.add(conn.publish("bench", key, BODY, props, flush=False))
            conn.flush()
            window.clear()
            window.wait(1.0)
        conn.close()

    return _run(one, n, seconds, stop, lags, count)


def _run(one, n, seconds, stop, lags, count) -> tuple[int, list[float]]:
    ticker = gevent.spawn(_lag, stop, lags)
    workers = [gevent.spawn(one, i) for i in range(n)]
    gevent.sleep(1.0)  # connected and warm
    lags.clear()
    start = count[0]
    gevent.sleep(seconds)
    done = count[0] - start
    stop[0] = True
    gevent.joinall([*workers, ticker], timeout=10)
    return done, lags


def frame_bytes(payload: int, topic_id: str = "robot-0001") -> dict[str, int]:
    """Bytes on the wire of one message, publisher to subscriber, computed from both encoders.

    MQTT 3.1.1: PUBLISH in and out of the broker (+ a PUBACK each at QoS 1). AMQP 0-9-1:
    Basic.Publish + content header + body; Basic.Deliver + header + body to the consumer,
    whose Basic.Ack we send once per read (``multiple``: 0-21 bytes a message, 21 at worst);
    a publisher confirm is a 21-byte Basic.Ack (RabbitMQ may confirm several at once).
    """
    from pika import frame as pframe

    from users.broker_compare import mqtt_wire_bytes

    body = 7 + payload + 1
    key = f"sensors.{topic_id}.coordinates"
    out = {}
    for qos in (0, 1):
        pub, ack = mqtt_wire_bytes(f"sensors/{topic_id}/coordinates", payload, qos)
        out[f"mqtt_qos{qos}"] = 2 * (pub + ack)
    ack = len(pframe.Method(1, spec.Basic.Ack(1, False)).marshal())
    deliver = len(pframe.Method(1, spec.Basic.Deliver("c1", 1, False, "sensors", key)).marshal())
    for mode, confirm in ((2, ack), (1, 0)):
        props = spec.BasicProperties(delivery_mode=mode)
        header = len(pframe.Header(1, payload, props).marshal())
        publish = len(pframe.Method(1, spec.Basic.Publish(0, "sensors", key)).marshal())
        # a consumer acknowledges either way (the subscriber's durable queue)
        out["amqp_confirm" if confirm else "amqp_noconfirm"] = (
            publish + header + body + confirm + deliver + header + body + ack
        )
    return out


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench amqp-engines", description=__doc__)
    p.add_argument("--url", default="", help="a RabbitMQ of your own (default: start one)")
    p.add_argument("--connections", type=int, default=10)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--bytes-only", action="store_true", help="only the computed bytes table")
    args = p.parse_args(argv)
    print("bytes on the wire per message, publisher -> broker -> subscriber, acks included")
    print(f"{'payload':>8} {'MQTT QoS0':>10} {'AMQP':>6} {'ratio':>6} {'MQTT QoS1':>10} "
          f"{'AMQP+confirms':>14} {'ratio':>6}")  # fmt: skip
    for size in (16, 64, 187, 512, 1024):
        b = frame_bytes(size)
        print(
            f"{size:>8} {b['mqtt_qos0']:>10} {b['amqp_noconfirm']:>6} "
            f"{b['amqp_noconfirm'] / b['mqtt_qos0']:>5.2f}x {b['mqtt_qos1']:>10} "
            f"{b['amqp_confirm']:>14} {b['amqp_confirm'] / b['mqtt_qos1']:>5.2f}x"
        )
    if args.bytes_only:
        return 0
    print()
    stack = None
    if not args.url:
        import tempfile
        from pathlib import Path

        from pipeline.stack import Stack

        stack = Stack.with_ports(auto=True, amqp=True, state_dir=Path(tempfile.mkdtemp()))
        t = time.monotonic()
        stack.start_service("rabbitmq")
        print(f"RabbitMQ started on its own ports in {time.monotonic() - t:.1f} s")
        args.url = stack.urls["amqp"]
    try:
        return _engines(args)
    finally:
        if stack is not None:
            stack.stop(remove_data=True)


def _engines(args: argparse.Namespace) -> int:
    print(f"{args.connections} connections, {args.seconds:.0f} s each, persistent + confirms")
    print(f"{'engine':<28} {'msg/s':>9} {'loop lag p50':>13} {'p99':>9} {'max':>9}")
    for name, fn in (("pika BlockingConnection", _pika), ("users._amqp_client", _ours)):
        done, lags = fn(args.url, args.connections, args.seconds)
        print(
            f"{name:<28} {done / args.seconds:>9,.0f} {_pct(lags, 0.5):>10.2f} ms"
            f" {_pct(lags, 0.99):>6.2f} ms {max(lags, default=float('nan')):>6.2f} ms"
        )
    return 0
