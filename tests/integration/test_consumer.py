"""The consumer in the real stack: poison records straight into Kafka, the update stream,
Redis killed under load, several instances of one group.

Records are produced straight into Kafka with confluent-kafka, as the load
side's KafkaProducer does (key = device id), so these tests exercise the
consumer alone, whatever the bridge does.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
import redis
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from pipeline._procs import free_port, http_ok, spawn, wait_until
from pipeline._schema import REASONS
from pipeline.config import COUNTS_KEY, LATEST_KEY, STREAM_FIELD, TOTAL_KEY, UPDATES_STREAM
from tests.helpers import metric_value, scraped, traced, wait_for

pytestmark = pytest.mark.integration

TOPIC = "mqtt-messages"


# -- helpers ---------------------------------------------------------------------
def produce(bootstrap: str, items: list[tuple[bytes | None, bytes, int]], topic: str = TOPIC):
    """Produce (key, value, partition) in order; return each one's (partition, offset)."""
    where: dict[int, tuple[int, int]] = {}
    errors: list = []

    def delivered(err, msg, n: int) -> None:
        if err is not None:
            errors.append(err)
        else:
            where[n] = (msg.partition(), msg.offset())

    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 2, "message.max.bytes": 2 << 20})
    for n, (key, value, partition) in enumerate(items):
        p.produce(topic, value, key, partition=partition,
                  on_delivery=lambda err, msg, n=n: delivered(err, msg, n))  # fmt: skip
        p.poll(0)
    assert p.flush(30) == 0 and not errors, errors
    return [where[n] for n in range(len(items))]


def dead_letters(bootstrap: str, dlq: str, wanted: set[tuple[int, int]], timeout: float = 30):
    """The consumer's DLQ records for the (partition, offset) of ``wanted``."""
    reader = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"dlq-reader-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
        }  # fmt: skip
    )
    reader.assign([TopicPartition(dlq, 0, OFFSET_BEGINNING)])
    found: dict[tuple[int, int], dict] = {}
    deadline = time.monotonic() + timeout
    try:
        while set(found) != wanted and time.monotonic() < deadline:
            for msg in reader.consume(500, 0.5):
                if msg.error():
                    continue
                rec = json.loads(msg.value())
                where = (rec.get("partition"), rec.get("offset"))
                if rec.get("topic") == TOPIC and where in wanted:
                    found[where] = rec
    finally:
        reader.close()
    return found


class KafkaLoad:
    """Traced records straight into Kafka at ``rate`` msg/s from a thread, every one
    counted on delivery; ``seq`` per device from 1."""

    producer: Producer | None

    def __init__(self, bootstrap: str, devices: list[str], rate: float, topic: str = TOPIC):
        # idempotent: a broker restart must not make retried records appear twice in the log
        self.producer = Producer(
            {"bootstrap.servers": bootstrap, "linger.ms": 2, "enable.idempotence": True}
        )
        self.devices, self.rate, self.topic = devices, rate, topic
        self.sent: collections.Counter[str] = collections.Counter()
        self.delivered = 0
        self.errors: list = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _delivered(self, err, _msg) -> None:
        if err is None:
            self.delivered += 1
        else:
            self.errors.append(err)

    def _run(self) -> None:
        start, n = time.monotonic(), 0
        while not self._stop.is_set():
            device = self.devices[n % len(self.devices)]
            seq = self.sent[device] + 1
            producer = self.producer
            assert producer is not None
            producer.produce(self.topic, traced(device, seq), device.encode(),
                             on_delivery=self._delivered)  # fmt: skip
            self.sent[device] = seq
            n += 1
            producer.poll(0)
            ahead = start + n / self.rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)

    def start(self) -> KafkaLoad:
        self._thread.start()
        return self

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(10)
        assert self.producer is not None
        left = self.producer.flush(30)
        self.producer = None  # librdkafka's threads go with it, before the stack does
        assert left == 0 and not self.errors, self.errors
        return sum(self.sent.values())


def lag(metrics_url: str) -> float:
    return scraped(metrics_url, "pipeline_consumer_lag_messages")


def assert_exactly_once(r: redis.Redis, load: KafkaLoad, counts_key: str = COUNTS_KEY) -> None:
    counts = {k.decode(): int(v) for k, v in r.hgetall(counts_key).items()}
    assert {d: counts.get(d) for d in load.devices} == dict(load.sent)
    for device in load.devices:
        latest = json.loads(r.get(LATEST_KEY.format(device_id=device)))
        assert latest["trace"]["seq"] == load.sent[device]


# -- poison ------------------------------------------------------------------------
def test_poison_records_are_dead_lettered_and_good_ones_around_them_delivered(stack):
    bootstrap, metrics = stack.urls["kafka"], stack.urls["consumer_metrics"]
    r = redis.Redis.from_url(stack.urls["redis"])
    pid = stack.procs["consumer"].pid
    uid = uuid.uuid4().hex[:8]
    before = httpx.get(metrics).text
    for reason in REASONS:  # every reason exported before any record needed it
        assert f'pipeline_consumer_dlq_messages_total{{reason="{reason}"}}' in before
    stream_from = (r.xrevrange(UPDATES_STREAM, count=1) or [(b"0-0", {})])[0][0]

    def body(device_id: str | None, **extra) -> bytes:
        msg = {"x": 1.0, "y": 2.0, "timestamp": time.time(), **extra}
        if device_id is not None:
            msg["device_id"] = device_id
        return json.dumps(msg).encode()

    name = f"poison-{uid}"
    deep = body(name)[:-1] + b', "a": ' + b"[" * 985 + b"]" * 985 + b"}"  # ~2 KB, 986 deep
    poison = [  # (key, value, reason)
        (name.encode(), deep, "too_deep"),
        (name.encode(), b'{"device_id": "%s", "x": 1,' % name.encode(), "malformed_json"),
        (name.encode(), b"\xff\xfe\x00binary", "malformed_json"),
        (name.encode(), b"[1, 2, 3]", "malformed_json"),
        (name.encode(), b"", "malformed_json"),
        (None, body(None), "missing_device_id"),
        (name.encode(), body("somebody-else"), "device_mismatch"),
        (b"\xff" + name.encode(), body(None), "device_mismatch"),
        (name.encode(), body(name).replace(b'"x": 1.0', b'"x": NaN'), "schema"),
        (name.encode(), body(name, extra=float("inf")), "schema"),  # Infinity outside x/y/ts
        (name.encode(), body(name, x="1"), "schema"),
        (name.encode(), body(name, pad="p" * 70_000), "oversize"),
    ]
    devices = [f"good-{uid}-{i}" for i in range(8)]
    per_device = 40
    items: list[tuple[bytes | None, bytes, int]] = []
    for seq in range(1, per_device // 2 + 1):
        items += [(d.encode(), traced(d, seq), i) for i, d in enumerate(devices)]
    items += [(key, value, n % 8) for n, (key, value, _) in enumerate(poison)]
    for seq in range(per_device // 2 + 1, per_device + 1):
        items += [(d.encode(), traced(d, seq), i) for i, d in enumerate(devices)]
    where = produce(bootstrap, items)
    first_poison = per_device // 2 * len(devices)
    expected = {where[first_poison + n]: reason for n, (_, _, reason) in enumerate(poison)}

    def delivered() -> bool:
        counts = r.hmget(COUNTS_KEY, devices)
        return all(c is not None and int(c) == per_device for c in counts)

    wait_for(delivered, 30, "every good record in Redis")
    found = dead_letters(bootstrap, "mqtt-messages-dlq", set(expected))
    assert {w: rec["reason"] for w, rec in found.items()} == expected
    for n, (key, value, reason) in enumerate(poison):
        rec = found[where[first_poison + n]]
        assert rec["size"] == len(value)
        assert rec["truncated"] is (len(value) > 64 * 1024)
        if key is not None and key.startswith(b"\xff"):
            assert "key_base64" in rec
        else:
            assert rec["key"] == (key.decode() if key else None)
        if reason == "oversize":
            assert len(rec["payload"]) == 64 * 1024
        elif value.startswith(b"\xff"):
            assert "payload_base64" in rec
        else:
            assert rec["payload"].encode() == value
    after = httpx.get(metrics).text
    reasons = collections.Counter(reason for _, _, reason in poison)
    for reason in REASONS:
        series = f'pipeline_consumer_dlq_messages_total{{reason="{reason}"}}'
        assert metric_value(after, series) - metric_value(before, series) == reasons[reason]
    assert r.get(LATEST_KEY.format(device_id=name)) is None
    # every good record became one stream entry, with the consumer's hop stamp
    entries = r.xrange(UPDATES_STREAM, min=b"(" + stream_from)
    mine = [json.loads(f[STREAM_FIELD]) for _, f in entries]
    mine = [m for m in mine if m["device_id"] in devices]
    assert len(mine) == per_device * len(devices)
    assert all(m["trace"]["hops"]["consumer"] >= m["trace"]["tp"] for m in mine)
    for d in devices:
        assert [m["trace"]["seq"] for m in mine if m["device_id"] == d] == list(
            range(1, per_device + 1)
        )
    # ...and the consumer never went down
    assert stack.procs["consumer"].pid == pid and stack.procs["consumer"].alive()
    assert scraped(metrics, "pipeline_consumer_ready") == 1.0
    r.close()


# -- Redis killed under load -----------------------------------------------------------
def _aof_tail(stack) -> Path:
    aof_dir = stack.state_dir / f"redis-{stack.ports['redis']}" / "appendonlydir"
    return max(aof_dir.glob("*.incr.aof"), key=lambda p: int(p.name.split(".")[-3]))


def test_redis_killed_under_load_loses_nothing_and_applies_nothing_twice(own_stack):
    """kill -9 Redis for 5 s under load and restart it from its AOF; then kill it
    again and cut the AOF's last 48 KB first (what `appendfsync everysec` can lose
    in a power cut), so Redis comes back without records the consumer wrote."""
    s = own_stack
    metrics = s.urls["consumer_metrics"]
    pid = s.procs["consumer"].pid
    load = KafkaLoad(s.urls["kafka"], [f"kill-{i}" for i in range(20)], rate=800).start()
    r = redis.Redis.from_url(s.urls["redis"], socket_timeout=2)
    try:
        wait_for(lambda: load.delivered >= 2000, 15, "2,000 records produced")
        s.procs.pop("redis").signal(signal.SIGKILL)
        killed = time.monotonic()
        wait_for(lambda: scraped(metrics, "pipeline_consumer_breaker_state") == 1.0, 10, "open")
        # The lag keeps counting what Redis has not got while the partitions are paused.
        first = wait_for(lambda: lag(metrics) > 200 and lag(metrics), 5, "lag to grow")
        wait_for(lambda: lag(metrics) > first + 800, 5, "lag to keep growing (stays current)")
        time.sleep(max(0.0, killed + 5 - time.monotonic()))  # the rest of the 5 s outage
        s.start_service("redis")
        wait_for(lambda: scraped(metrics, "pipeline_consumer_breaker_state") == 0.0, 20, "closed")
        wait_for(lambda: lag(metrics) < 200, 20, "the consumer to catch up")

        written = scraped(metrics, "pipeline_consumer_written_messages_total")
        wait_for(lambda: scraped(metrics, "pipeline_consumer_written_messages_total")
                 > written + 1500, 10, "2 s more of traffic written")  # fmt: skip
        s.procs.pop("redis").signal(signal.SIGKILL)
        tail = _aof_tail(s)
        size = tail.stat().st_size
        assert size > 100_000, size
        os.truncate(tail, size - 48_000)
        s.start_service("redis")
        time.sleep(1)
    finally:
        produced = load.stop()

    wait_for(lambda: int(r.get(TOTAL_KEY) or 0) >= produced, 30, "every record in Redis")
    time.sleep(1)  # anything applied twice would show up by now
    assert int(r.get(TOTAL_KEY)) == produced
    assert_exactly_once(r, load)
    assert scraped(metrics, "pipeline_consumer_rewinds_total") >= 1
    wait_for(lambda: lag(metrics) == 0, 5, "lag 0 once everything is in Redis")
    assert s.procs["consumer"].pid == pid and s.procs["consumer"].alive()
    assert scraped(metrics, "pipeline_consumer_ready") == 1.0
    r.close()


def test_kafka_killed_under_load_the_consumer_resumes_and_loses_nothing(own_stack):
    """kill -9 the broker for 5 s under load (records wait in the producer), restart it
    from its log: the same consumer process carries on, every record exactly once."""
    s = own_stack
    metrics = s.urls["consumer_metrics"]
    pid = s.procs["consumer"].pid
    load = KafkaLoad(s.urls["kafka"], [f"kkill-{i}" for i in range(20)], rate=500).start()
    r = redis.Redis.from_url(s.urls["redis"])
    try:
        wait_for(lambda: load.delivered >= 1500, 15, "1,500 records produced")
        s.kill("kafka")
        killed = time.monotonic()
        written = wait_for(lambda: int(r.get(TOTAL_KEY) or 0) >= 1000 and int(r.get(TOTAL_KEY)),
                           10, "the records before the kill in Redis")  # fmt: skip
        time.sleep(max(0.0, killed + 5 - time.monotonic()))
        assert scraped(metrics, "pipeline_consumer_ready") == 1.0  # waiting, not wedged
        s.start_service("kafka")
        delivered = load.delivered
        wait_for(lambda: load.delivered > delivered + 1000, 30, "Kafka taking records again")
    finally:
        produced = load.stop()
    assert produced > written + 2500  # records produced during and after the outage
    wait_for(lambda: int(r.get(TOTAL_KEY) or 0) >= produced, 60, "every record in Redis")
    time.sleep(1)  # anything applied twice would show up by now
    assert int(r.get(TOTAL_KEY)) == produced
    assert_exactly_once(r, load)
    assert s.procs["consumer"].pid == pid and s.procs["consumer"].alive()
    wait_for(lambda: lag(metrics) == 0, 10, "lag 0 once everything is in Redis")
    r.close()


# -- several instances of one group ----------------------------------------------------
def test_instances_of_one_group_share_the_work_and_a_rebalance_applies_nothing_twice(
    stack, tmp_path
):
    """Instance 1 alone, instance 2 joins, instance 1 is paused past its session
    (its partitions move) and let go, then killed: every record exactly once."""
    uid = uuid.uuid4().hex[:8]
    db_url = stack.urls["redis"].rsplit("/", 1)[0] + "/6"
    r = redis.Redis.from_url(db_url)
    r.flushdb()
    topic = f"group-{uid}"
    env = {
        **stack.service_env(),
        "KAFKA_TOPIC": topic,
        "KAFKA_DLQ_TOPIC": f"{topic}-dlq",
        "KAFKA_PARTITIONS": "6",
        "CONSUMER_GROUP": f"group-{uid}",
        "REDIS_URL": db_url,
    }
    procs = {}

    def start(instance: int) -> str:
        port = free_port()
        proc, popen = spawn(f"consumer-{instance}", [sys.executable, "-m", "pipeline.consumer"],
                            tmp_path, env={**env, "CONSUMER_INSTANCE": str(instance),
                                           "CONSUMER_METRICS_PORT": str(port)})  # fmt: skip
        procs[instance] = proc
        url = f"http://127.0.0.1:{port}/metrics"
        wait_until(lambda: http_ok(url, "pipeline_consumer_ready 1.0"), 60, "a consumer", popen)
        return url

    def written(url: str) -> float:
        return scraped(url, "pipeline_consumer_written_messages_total")

    try:
        one = start(1)
        load = KafkaLoad(stack.urls["kafka"], [f"g-{uid}-{i}" for i in range(12)], 600, topic)
        load.start()
        try:
            wait_for(lambda: written(one) > 1000, 15, "instance 1 writing")
            two = start(2)
            wait_for(lambda: written(two) > 300 and written(one) > 1500, 20, "both writing")
            procs[1].signal(signal.SIGSTOP)  # a hung instance: its partitions move to 2
            mark = written(two)
            wait_for(lambda: written(two) > mark + 2500, 30, "instance 2 taking over")
            procs[1].signal(signal.SIGCONT)  # wakes up with a stale batch, then rejoins
            time.sleep(3)
            procs[1].signal(signal.SIGKILL)  # and dies: everything back to instance 2
            time.sleep(2)
        finally:
            produced = load.stop()
        wait_for(lambda: int(r.get(TOTAL_KEY) or 0) >= produced, 40, "every record in Redis")
        time.sleep(1)
        assert int(r.get(TOTAL_KEY)) == produced
        assert_exactly_once(r, load)
    finally:
        for proc in procs.values():
            proc.stop()
        r.flushdb()
        r.close()
