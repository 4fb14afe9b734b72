"""Is the stack healthy: the checks behind `Stack.status` and the start-up waits.

A part is ``down`` (process gone), ``paused`` (SIGSTOP from `Stack.pause`),
``stalled`` (alive but not answering its own check, or with input waiting and no
progress over a window) or ``healthy``. Progress is read from outside the
stage where possible: the consumer's from the group's committed offsets in
Kafka, not from the consumer's own report.
"""

from __future__ import annotations

import logging
import socket
import time
import urllib.request
from collections.abc import Callable
from typing import TYPE_CHECKING

from pipeline._procs import accepts, http_ok
from pipeline.config import DEFAULTS

if TYPE_CHECKING:
    from pipeline.stack import Stack

#: Seconds a stage may show input waiting and no progress before `status` says stalled.
STALL_WINDOW_S = 2.0


def status(stack: Stack, names: list[str], window: float = STALL_WINDOW_S) -> dict[str, str]:
    """name -> ``healthy``, ``down``, ``paused`` or ``stalled``.

    ``down``: the process is gone (or never answered). ``paused``: stopped
    with `pause`. ``stalled``: alive but not answering its health check, or
    input waiting at both ends of ``window`` seconds with no progress in
    between (the consumer's lag read from Kafka itself, not from the
    consumer's own report).
    """
    out: dict[str, str] = {}
    for name in names:
        out[name] = liveness(stack, name)
    watched = [n for n in out if out[n] == "healthy" and n in ("bridge", "consumer")]
    if watched and window > 0:
        before = {n: progress(stack, n) for n in watched}
        time.sleep(window)
        after = {n: progress(stack, n) for n in watched}
        for n in watched:
            (waiting0, done0), (waiting1, done1) = before[n], after[n]
            if waiting0 > 0 and waiting1 > 0 and done1 <= done0:
                out[n] = "stalled"
    return out


def liveness(stack: Stack, name: str) -> str:
    proc = stack.procs.get(name)
    if name == "kafka" and stack.kafka_bootstrap:
        checks_ok = safe(lambda: kafka_answers(stack.urls["kafka"]))
        return "healthy" if checks_ok else "down"
    if proc is None or not proc.alive():
        return "down"
    if name in stack.paused:
        return "paused"
    return "healthy" if safe(health_check(stack, name)) else "stalled"


def health_check(stack: Stack, name: str) -> Callable[[], bool]:
    # the servers' own ports: a proxy in front of them accepts even when they are down
    if name == "mosquitto":
        return lambda: accepts(stack.listen_port("mqtt"))
    if name == "redis":
        return lambda: accepts(stack.listen_port("redis"))
    if name == "kafka":
        return lambda: kafka_answers(stack.urls["kafka"])
    if name == "rabbitmq":
        return lambda: amqp_answers(stack.urls["amqp"])
    if name == "gateway":
        return lambda: http_ok(stack.urls["gateway"] + "/api/health")
    marker = "pipeline_bridge_ready 1.0" if name == "bridge" else "pipeline_consumer_ready 1.0"
    return lambda: http_ok(f"http://127.0.0.1:{stack._metrics_port(name)}/metrics", marker)


def amqp_answers(url: str) -> bool:
    """RabbitMQ accepts an AMQP 0-9-1 connection with these credentials and opens a channel.

    An open port is not enough: the node listens a moment before it has booted, and
    a wrong password only shows in the handshake.
    """
    import pika  # only with `up --amqp`

    if not accepts_hostport(url.rsplit("@", 1)[-1].split("/")[0]):
        return False
    logging.getLogger("pika").setLevel(logging.CRITICAL)  # a refused probe is no error
    params = pika.URLParameters(url)
    params.socket_timeout = 2.0
    params.blocked_connection_timeout = 2.0
    params.connection_attempts = 1
    conn = pika.BlockingConnection(params)
    try:
        conn.channel().close()
    finally:
        conn.close()
    return True


def progress(stack: Stack, name: str) -> tuple[float, float]:
    """(input waiting, work done so far) of a stage; (0, 0) when unknown."""
    try:
        if name == "consumer":
            return group_lag(stack.urls["kafka"], DEFAULTS.consumer_group, DEFAULTS.kafka_topic)
        text = fetch(stack.urls["bridge_metrics"])
        waiting = metric(text, "pipeline_bridge_buffer_messages") + metric(
            text, "pipeline_bridge_inflight_messages"
        )
        return waiting, metric(text, "pipeline_bridge_produced_messages_total")
    except Exception:  # noqa: BLE001 - unknown progress is never called a stall
        return 0.0, 0.0


def safe(check: Callable[[], bool]) -> bool:
    try:
        return bool(check())
    except Exception:  # noqa: BLE001 - a health check reports, never raises
        return False


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=1.0) as resp:  # noqa: S310 - loopback only
        return resp.read().decode("utf-8", "replace")


def metric(text: str, name: str) -> float:
    """Sum of every sample of ``name`` in a Prometheus text exposition."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and line[len(name) : len(name) + 1] in (" ", "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def redis_loaded(port: int) -> bool:
    """Redis answers PING only once its AOF is loaded (LOADING before that)."""
    with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
        s.sendall(b"PING\r\n")
        return s.recv(64).startswith(b"+PONG")


def accepts_hostport(hostport: str) -> bool:
    host, _, port = hostport.strip().rpartition(":")
    try:
        return accepts(int(port), host or "127.0.0.1")
    except (OSError, ValueError):
        return False


def kafka_answers(bootstrap: str) -> bool:
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=2000, client_id="pipeswarm-probe"
    )
    try:
        admin.list_topics()
        return True
    finally:
        admin.close()


def group_lag(bootstrap: str, group: str, topic: str) -> tuple[float, float]:
    """(records not yet committed by the group, sum of its committed offsets)."""
    from kafka import KafkaAdminClient, KafkaConsumer

    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=2000, client_id="pipeswarm-probe"
    )
    try:
        committed = {
            tp: meta.offset
            for tp, meta in admin.list_consumer_group_offsets(group).items()
            if tp.topic == topic
        }
    finally:
        admin.close()
    probe = KafkaConsumer(
        bootstrap_servers=bootstrap, request_timeout_ms=3000, client_id="pipeswarm-probe"
    )
    try:
        from kafka import TopicPartition

        parts = probe.partitions_for_topic(topic) or set()
        ends = probe.end_offsets([TopicPartition(topic, p) for p in parts])
    finally:
        probe.close()
    lag = sum(end - max(committed.get(tp, 0), 0) for tp, end in ends.items())
    return float(lag), float(sum(max(o, 0) for o in committed.values()))
