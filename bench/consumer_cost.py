"""What one record costs the consumer: CPU µs per record, and how fast it drains.

Starts Redis, the Kafka-protocol broker and one consumer of its own on free
ports (no MQTT, no bridge, no gateway). Once the consumer has its partitions it
is stopped (SIGSTOP), ``--messages`` traced records from 50 devices are
produced into a topic of the run's own with confluent-kafka (keyed by device id, as
the bridge and the load side's KafkaProducer do), and the consumer is let go
(SIGCONT). The consumer's CPU (user + system, every thread, read from the
process before and after) divided by the records is the cost; the records
divided by the time until Redis's ``pipeswarm:total`` counts all of them is the
rate it drained at. Redis's CPU per record is printed beside it.

With ``--rate`` the consumer runs throughout and the records are produced at
that rate instead (open loop, ``--messages`` of them); the latency from
``produce()`` (the envelope's ``tp``) to the XADD on the update stream (the
entry id's milliseconds) is printed as p50/p99/max, with the consumer's CPU per
record at that rate.

    .venv/bin/python -m bench.consumer_cost --messages 100000
    .venv/bin/python -m bench.consumer_cost --messages 40000 --rate 2000
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import tempfile
import time
from pathlib import Path

import psutil
import redis
from confluent_kafka import Producer

DEVICES = 50


def _cpu(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def _produce(bootstrap: str, topic: str, total: int, rate: float = 0, run: str = "consumer-cost"):
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "1"})
    seq = [0] * DEVICES
    start = time.monotonic()
    for n in range(total):
        if rate and n % 10 == 0:
            ahead = start + n / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
        d = n % DEVICES
        seq[d] += 1
        now = time.time_ns()
        device_id = f"cost-{d}"
        body = {
            "device_id": device_id,
            "x": 1.0 + n,
            "y": 2.0,
            "timestamp": now / 1e9,
            "trace": {"run": run, "seq": seq[d], "t0": now, "tp": now, "hops": {}},
        }
        while True:
            try:
                producer.produce(topic, json.dumps(body).encode(), device_id.encode())
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    left = producer.flush(60)
    if left:
        raise RuntimeError(f"{left} records not acknowledged by the broker")


def main(argv: list[str] | None = None) -> int:
    from pipeline._kafka import ensure_topics
    from pipeline.stack import Stack

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--messages", type=int, default=100_000)
    p.add_argument("--partitions", type=int, default=8)
    p.add_argument(
        "--kafka-bootstrap", default=None, help="an existing Kafka (default: the embedded broker)"
    )
    p.add_argument("--rate", type=float, default=0, help="msg/s, consumer running (0: backlog)")
    p.add_argument("--timeout", type=float, default=120, help="give up after this many seconds")
    args = p.parse_args(argv)
    if args.messages <= 0:
        p.error("--messages must be positive")

    stack = Stack.with_ports(
        auto=True,
        state_dir=Path(tempfile.mkdtemp(prefix="bench-consumer-")),
        partitions=args.partitions,
        kafka_bootstrap=args.kafka_bootstrap,
    )
    # A topic and group of this run's own: an existing Kafka keeps earlier runs' records.
    topic = f"bench-consumer-{time.time_ns()}"
    os.environ.update(KAFKA_TOPIC=topic, KAFKA_DLQ_TOPIC=topic + "-dlq", CONSUMER_GROUP=topic)
    try:
        for name in ("redis", "kafka"):
            stack.start_service(name)
        bootstrap = stack.urls["kafka"]
        ensure_topics(bootstrap, {topic: args.partitions, topic + "-dlq": 1})
        stack.start_service("consumer")
        consumer = psutil.Process(stack.procs["consumer"].pid)
        server = psutil.Process(stack.procs["redis"].pid)
        r = redis.Redis.from_url(stack.urls["redis"])
        if args.rate:
            # A fresh broker's JVM is cold for its first seconds: warm it (and the
            # consumer) with a burst that is not measured.
            _produce(bootstrap, topic, 20_000, run="warm-up")
            while int(r.get("pipeswarm:total") or 0) < 20_000:
                time.sleep(0.1)
        base = int(r.get("pipeswarm:total") or 0)
        if args.rate:
            cpu0, redis0, t0 = _cpu(consumer), _cpu(server), time.monotonic()
            _produce(bootstrap, topic, args.messages, args.rate)
        else:
            consumer.suspend()
            _produce(bootstrap, topic, args.messages)
            cpu0, redis0, t0 = _cpu(consumer), _cpu(server), time.monotonic()
            consumer.send_signal(signal.SIGCONT)
        deadline = t0 + args.timeout
        done = 0
        while time.monotonic() < deadline:
            done = int(r.get("pipeswarm:total") or 0) - base
            if done >= args.messages:
                break
            time.sleep(0.05)
        elapsed = time.monotonic() - t0
        cpu, redis_cpu = _cpu(consumer) - cpu0, _cpu(server) - redis0
        latencies, kafka_hop = [], []
        for entry_id, fields in r.xrange("pipeswarm:stream"):
            trace = json.loads(fields[b"m"])["trace"]
            if trace["run"] != "consumer-cost":
                continue
            latencies.append(int(entry_id.split(b"-")[0]) - trace["tp"] / 1e6)
            kafka_hop.append((trace["hops"]["consumer"] - trace["tp"]) / 1e6)
        latencies.sort()
        kafka_hop.sort()
    finally:
        stack.stop()
    print(
        f"records {args.messages} in {args.partitions} partitions, in Redis {done}"
        f"{'' if done >= args.messages else '  (INCOMPLETE: timed out)'}\n"
        f"drained in {elapsed:.2f} s -> {done / elapsed:,.0f} msg/s through the consumer\n"
        f"consumer CPU {cpu:.2f} s = {cpu / max(done, 1) * 1e6:.1f} µs/msg"
        f" ({cpu / elapsed * 100:.0f} % of a core); Redis CPU {redis_cpu:.2f} s"
        f" = {redis_cpu / max(done, 1) * 1e6:.1f} µs/msg"
    )
    if args.rate and latencies:
        for what, values in (("produce -> Redis stream", latencies),
                             ("  of which produce -> consumer", kafka_hop)):  # fmt: skip
            pct = lambda q, v=values: v[min(int(q * len(v)), len(v) - 1)]  # noqa: E731
            print(
                f"{what} at {args.rate:,.0f} msg/s: p50 {pct(0.5):.1f} ms,"
                f" p99 {pct(0.99):.1f} ms, max {values[-1]:.1f} ms ({len(values)} records)"
            )
    return 0 if done >= args.messages else 1


if __name__ == "__main__":
    raise SystemExit(main())
