"""The consumer's Redis transaction against a real redis-server (a database of its own)."""

from __future__ import annotations

import json

import pytest
import redis

from pipeline._consumer_redis import Record, RedisBatchWriter, command
from pipeline.config import (
    COUNTS_KEY,
    DEVICES_KEY,
    LATEST_KEY,
    OFFSETS_KEY,
    STREAM_FIELD,
    TOTAL_KEY,
    UPDATES_STREAM,
)
from tests.helpers import closed_port

pytestmark = pytest.mark.integration

TOPIC, GROUP = "mqtt-messages", "writer-test"


@pytest.fixture
def db_url(servers):
    url = servers.urls["redis"].rsplit("/", 1)[0] + "/7"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


@pytest.fixture
def db(db_url):
    client = redis.Redis.from_url(db_url)
    yield client
    client.close()


def writer(url: str, maxlen: int = 1000) -> RedisBatchWriter:
    return RedisBatchWriter(url, TOPIC, GROUP, ttl_s=60, stream_maxlen=maxlen)


def records(partition: int, first: int, n: int, devices: int = 3) -> list[Record]:
    out = []
    for i in range(n):
        offset = first + i
        device = f"w-{offset % devices}"
        value = json.dumps({"device_id": device, "x": float(offset), "y": 0.0}).encode()
        out.append(Record(partition, offset, device.encode(), value, 1_700_000_000_000 + offset))
    return out


def test_command_is_what_redis_parses(db, db_url):
    w = writer(db_url)
    w.conn.send_packed_command([command(b"SET", b"k\r\n", b"v\x00\xff" * 100)])
    assert w.conn.read_response() == b"OK"
    assert db.get("k\r\n") == b"v\x00\xff" * 100
    w.close()


def test_a_batch_is_applied_whole_with_its_offsets(db, db_url):
    w = writer(db_url)
    batch = records(2, 10, 9) + records(5, 100, 3)
    assert w.offsets([2, 5], watch=True) == {2: None, 5: None}
    assert w.execute(w.encode(batch, {2: 18, 5: 104}))  # 5: offsets 103-104 dead-lettered

    assert int(db.get(TOTAL_KEY)) == 12
    counts = {k.decode(): int(v) for k, v in db.hgetall(COUNTS_KEY).items()}
    assert counts == {"w-0": 4, "w-1": 4, "w-2": 4}
    newest = {r.device_id: r for r in batch}  # the last record of each device
    for device_id, r in newest.items():
        assert db.get(LATEST_KEY.format(device_id=device_id.decode())) == r.value
        assert 0 < db.ttl(LATEST_KEY.format(device_id=device_id.decode())) <= 60
        assert db.zscore(DEVICES_KEY, device_id) == r.ts_ms
    entries = db.xrange(UPDATES_STREAM)
    assert [fields[STREAM_FIELD] for _, fields in entries] == [r.value for r in batch]
    offsets = db.hgetall(OFFSETS_KEY.format(topic=TOPIC, group=GROUP))
    assert offsets == {b"2": b"18", b"5": b"104"}
    assert w.offsets([2, 5, 7]) == {2: 18, 5: 104, 7: None}
    w.close()


def test_the_stream_is_trimmed_to_about_maxlen(db, db_url):
    w = writer(db_url, maxlen=100)
    for n in range(10):
        w.offsets([0], watch=True)
        assert w.execute(w.encode(records(0, n * 100, 100), {0: n * 100 + 99}))
    length = db.xlen(UPDATES_STREAM)
    # MAXLEN ~ trims whole macro nodes (100 entries each by default): never below 100
    assert 100 <= length < 300, length
    assert int(db.get(TOTAL_KEY)) == 1000
    last = json.loads(db.xrevrange(UPDATES_STREAM, count=1)[0][1][STREAM_FIELD])
    assert last["x"] == 999.0
    w.close()


def test_a_write_by_another_instance_between_read_and_exec_aborts_the_batch(db, db_url):
    w = writer(db_url)
    assert w.offsets([0], watch=True) == {0: None}
    db.hset(OFFSETS_KEY.format(topic=TOPIC, group=GROUP), "0", 50)  # the other instance
    assert w.execute(w.encode(records(0, 0, 10), {0: 9})) is False
    assert db.get(TOTAL_KEY) is None and db.xlen(UPDATES_STREAM) == 0
    assert w.offsets([0], watch=True) == {0: 50}  # read again: nothing left to apply
    w.unwatch()
    w.close()


def test_an_error_inside_the_transaction_is_raised_and_the_connection_still_works(db, db_url):
    w = writer(db_url)
    db.set(DEVICES_KEY, "not a sorted set")  # someone else's write: ZADD fails in EXEC
    w.offsets([0], watch=True)
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        w.execute(w.encode(records(0, 0, 3), {0: 2}))
    assert w.offsets([0]) == {0: 2}  # Redis applied the rest, offsets included
    w.close()


def test_an_unreachable_redis_raises_connection_error_at_once():
    w = writer(f"redis://127.0.0.1:{closed_port()}/0")
    with pytest.raises(redis.ConnectionError):
        w.offsets([0], watch=True)
    w.close()
