"""Apache Kafka alone for ``kafka-scaling --kafka-only``: no Mosquitto, bridge, Redis or gateway.

The embedded stack's own broker (``Stack.start_service("kafka")``: same jars, same
server.properties, the topic created with ``partitions``) on free ports; C consumer
processes in one group (confluent-kafka, the pipeline consumer's fetch settings)
that only parse each record and time it; each step produced by paced producer
processes with the bridge's producer settings (idempotent, acks=all, linger 5 ms),
keyed by device id over ``devices`` keys.

A record's value is ``step,seq,t0,`` padded to 100 bytes; latency is receive minus
``t0``, the *intended* send time (coordinated omission stays visible, as in
``bench.soak``). Loss and duplicates are counted per step by ``seq``.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from pipeline._kafka import ensure_topics
from pipeline.config import DEFAULTS
from pipeline.stack import Stack

__all__ = ["KafkaAlone", "box_cpu"]

TOPIC = DEFAULTS.kafka_topic
VALUE_BYTES = 100
#: messages per second one producer process is given (confluent-kafka's produce()
#: plus formatting costs ~3 µs here; the rest is headroom on a shared box)
PER_PRODUCER = 60_000


def _consumer(bootstrap: str, topic: str, group: str, index: int, assigned: Any,
              received: Any, commands: Any, results: Any) -> None:  # fmt: skip
    """One group member: count and time every record until told to stop."""
    from confluent_kafka import Consumer

    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "client.id": f"kafka-scaling-{index}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": True,
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 2000,
            "fetch.wait.max.ms": 100,  # as pipeline/_consumer_kafka.py
            "queued.max.messages.kbytes": 16 * 1024,
        }
    )

    def on_assign(_: Any, parts: list[Any]) -> None:
        assigned[index] = len(parts)

    def on_revoke(_: Any, parts: list[Any]) -> None:
        assigned[index] = 0

    c.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke)
    seqs: dict[int, list[int]] = {}
    lats: dict[int, list[float]] = {}
    while True:
        # consume(n, timeout) waits until n records or the timeout: at low rates every
        # record would wait out the timeout. Wait for one, then take what is ready.
        first = c.poll(0.05)
        batch = [first, *c.consume(999, 0)] if first is not None else []
        now = time.time_ns()
        for m in batch:
            value = m.value()
            if m.error() or value is None:
                continue
            step, seq, t0, _ = value.split(b",", 3)
            s = int(step)
            seqs.setdefault(s, []).append(int(seq))
            lats.setdefault(s, []).append((now - int(t0)) / 1e6)
        received[index] += len(batch)
        try:
            cmd = commands.get_nowait()
        except queue.Empty:
            continue
        if cmd is None:
            break
        results.put(
            (
                np.asarray(seqs.pop(cmd, []), dtype=np.int64),
                np.asarray(lats.pop(cmd, []), dtype=np.float32),
            )
        )
    c.close()


def _producer(bootstrap: str, topic: str, step: int, rate: float, seconds: float,
              start: Any, go: Any, devices: int, first: int, stride: int,
              out: Any) -> None:  # fmt: skip
    """Produce ``rate * seconds`` records on an absolute schedule; report count, lag, CPU.

    It says it is ready (a ``None`` on ``out``) once its client exists, then waits for
    ``go``: a schedule that began while a slow spawn was still importing would show
    that start-up as latency."""
    from confluent_kafka import Producer

    p = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
        }
    )
    total = int(rate * seconds)
    lag_max = 0.0
    ready = os.times()
    out.put(None)
    go.wait(60)
    start_ns = start.value
    # Paced in chunks of ~1 ms of records (a sleep per record would cap the rate), so
    # a record leaves at most 1 ms before its t0 and its latency reads at most 1 ms low.
    chunk = max(1, int(rate / 1000))
    for n in range(total):
        if n % chunk == 0:
            t0 = start_ns + int(n * 1e9 / rate)
            now = time.time_ns()
            if t0 > now:
                time.sleep((t0 - now) / 1e9)
            else:
                lag_max = max(lag_max, (now - t0) / 1e6)
            p.poll(0)
        seq = first + n * stride
        t0 = start_ns + int(n * 1e9 / rate)
        head = f"{step},{seq},{t0},"
        value = head + "x" * (VALUE_BYTES - len(head))
        while True:
            try:
                p.produce(topic, value, key=f"dev-{seq % devices}")
                break
            except BufferError:  # librdkafka's queue is full: let it drain
                p.poll(0.01)
    left = p.flush(120)
    cpu = os.times()
    cpu_s = cpu.user + cpu.system - ready.user - ready.system  # producing, not importing
    out.put({"published": total - left, "lag_max_ms": lag_max, "cpu_s": cpu_s})


def _cpu_s(proc: psutil.Process) -> float:
    try:
        t = proc.cpu_times()
        return float(t.user + t.system)
    except psutil.Error:
        return 0.0


def box_cpu(before: Any, after: Any) -> float:
    """The whole machine's busy CPU between two ``psutil.cpu_times()``, % of one core."""
    busy = (sum(after) - after.idle) - (sum(before) - before.idle)
    return 100 * busy / max(1e-9, sum(after) - sum(before)) * (psutil.cpu_count() or 1)


class KafkaAlone:
    """The broker, a topic of ``partitions`` and ``consumers`` group members, for steps.

    With ``bootstrap`` a running Kafka is used instead of one of our own, and
    ``topic`` is created there with ``partitions`` (the tests do this).
    """

    def __init__(self, partitions: int, consumers: int, devices: int = 1000,
                 bootstrap: str | None = None, topic: str = TOPIC) -> None:  # fmt: skip
        self.partitions, self.consumers, self.devices = partitions, consumers, devices
        self.given, self.topic = bootstrap, topic
        self.ctx = mp.get_context("spawn")
        self.step_no = 0
        self.published = 0
        self.procs: list[Any] = []

    def __enter__(self) -> KafkaAlone:
        self.dir = Path(tempfile.mkdtemp(prefix="kafka-scaling-"))
        self.stack = Stack.with_ports(auto=True, state_dir=self.dir, partitions=self.partitions)
        try:
            if self.given is None:  # the stack creates the pipeline's topic with `partitions`
                self.stack.start_service("kafka")
                self.bootstrap = self.stack.urls["kafka"]
            else:
                self.bootstrap = self.given
                ensure_topics(self.bootstrap, {self.topic: self.partitions})
            self.assigned = self.ctx.Array("i", self.consumers, lock=False)
            self.received = self.ctx.Array("q", self.consumers, lock=False)
            self.results = self.ctx.Queue()
            self.commands = [self.ctx.Queue() for _ in range(self.consumers)]
            group = f"kafka-scaling-{time.time_ns()}"
            for i in range(self.consumers):
                args = (self.bootstrap, self.topic, group, i, self.assigned, self.received,
                        self.commands[i], self.results)  # fmt: skip
                proc = self.ctx.Process(target=_consumer, args=args, daemon=True)
                proc.start()
                self.procs.append(proc)
            self._wait_assigned()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _wait_assigned(self, timeout: float = 60.0) -> None:
        """Until every partition has an owner, and the group has been still for 2 s."""
        deadline = time.monotonic() + timeout
        still_since, last = time.monotonic(), None
        while time.monotonic() < deadline:
            now = list(self.assigned)
            if now != last:
                still_since, last = time.monotonic(), now
            elif sum(now) == self.partitions and time.monotonic() - still_since > 2:
                return
            time.sleep(0.1)
        raise RuntimeError(f"consumer group never owned all {self.partitions} partitions: {last}")

    def cpu_pids(self) -> dict[str, psutil.Process]:
        named = {"kafka": self.stack.procs["kafka"].pid} if "kafka" in self.stack.procs else {}
        named.update({f"consumer-{i + 1}": p.pid for i, p in enumerate(self.procs)})
        return {n: psutil.Process(pid) for n, pid in named.items()}

    def step(self, rate: float, seconds: float, drain_s: float = 15.0) -> dict[str, Any]:
        """Offer ``rate`` msg/s for ``seconds``; loss, latency and CPU of that step."""
        self.step_no += 1
        step = self.step_no
        n_pub = 1 + int(rate // PER_PRODUCER)
        out = self.ctx.Queue()
        start, go = self.ctx.Value("q", 0), self.ctx.Event()
        watch = self.cpu_pids()
        pubs = [
            self.ctx.Process(
                target=_producer,
                args=(
                    self.bootstrap,
                    self.topic,
                    step,
                    rate / n_pub,
                    seconds,
                    start,
                    go,
                    self.devices,
                    i,
                    n_pub,
                    out,
                ),  # fmt: skip
            )
            for i in range(n_pub)
        ]
        for p in pubs:
            p.start()
        for _ in pubs:
            out.get(timeout=60)
        before = {n: _cpu_s(p) for n, p in watch.items()}
        box = psutil.cpu_times()
        t_start = time.monotonic()
        start.value = time.time_ns() + 100_000_000
        go.set()
        reports = [out.get(timeout=seconds + 180) for _ in pubs]
        for p in pubs:
            p.join(30)
        published = sum(r["published"] for r in reports)
        self.published += published
        deadline = time.monotonic() + drain_s
        while sum(self.received) < self.published and time.monotonic() < deadline:
            time.sleep(0.05)
        elapsed = time.monotonic() - t_start
        cpu = {n: 100 * (_cpu_s(p) - before[n]) / elapsed for n, p in watch.items()}
        cpu["producer"] = 100 * sum(r["cpu_s"] for r in reports) / elapsed
        for c in self.commands:
            c.put(step)
        parts = [self.results.get(timeout=60) for _ in self.commands]
        seqs = np.concatenate([s for s, _ in parts])
        lats = np.concatenate([lat for _, lat in parts])
        distinct = len(np.unique(seqs))
        return {
            "rate": rate,
            "published": published,
            "lost": published - distinct,
            "duplicated": len(seqs) - distinct,
            "p50": float(np.percentile(lats, 50)) if len(lats) else float("nan"),
            "p99": float(np.percentile(lats, 99)) if len(lats) else float("nan"),
            "lag_max_ms": max(r["lag_max_ms"] for r in reports),
            "cpu": cpu,
            "box_cpu": box_cpu(box, psutil.cpu_times()),
        }

    def __exit__(self, *_: Any) -> None:
        for c in getattr(self, "commands", []):
            c.put(None)
        for p in self.procs:
            p.join(15)
            if p.is_alive():
                p.kill()
                p.join(5)
        if hasattr(self, "stack"):
            self.stack.stop(remove_data=True)
        shutil.rmtree(self.dir, ignore_errors=True)
