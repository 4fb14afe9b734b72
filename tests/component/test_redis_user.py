"""RedisUser against a real redis-server: every operation reported, and really done."""

from __future__ import annotations

from locust import constant

from tests.harness import LocustRun
from users.redis import REQUEST_TYPE, RedisUser

NAMES = ("SET latest", "GET latest", "HINCRBY counts", "XADD stream", "MULTI batch")


def test_every_operation_is_a_request_and_leaves_what_the_pipeline_would(redis_url, rds, tmp_path):
    prefix = f"pipeswarm:test-{tmp_path.name}:"

    class Ops(RedisUser):
        key_prefix = prefix
        wait_time = constant(0.002)
        devices = 20
        stream_maxlen = 500
        batch = 5

    with LocustRun([Ops], "--redis-url", redis_url, results=tmp_path) as run:
        # users finish the operation they are in: a user killed between the server's
        # answer and the request event would leave one write that no request counts
        run.env.stop_timeout = 10
        run.start(3)

        def added() -> int:
            return run.count("XADD stream", REQUEST_TYPE) + 5 * run.count(
                "MULTI batch", REQUEST_TYPE
            )

        run.wait(lambda: all(run.count(n, REQUEST_TYPE) >= 20 for n in NAMES), 20, "20 of each")
        run.wait(lambda: added() > 1500, 30, "3x the stream's MAXLEN added")
        run.stop()
        counts = {n: run.entry(n, REQUEST_TYPE) for n in NAMES}
    for name, entry in counts.items():
        assert entry.num_failures == 0 and entry.avg_response_time > 0, name
    # HINCRBY: one per request, plus one per record of every MULTI batch
    total = sum(int(v) for v in rds.hvals(f"{prefix}counts"))
    assert total == counts["HINCRBY counts"].num_requests + 5 * counts["MULTI batch"].num_requests
    # the stream is capped near its MAXLEN (approximate trimming keeps whole nodes)
    added = counts["XADD stream"].num_requests + 5 * counts["MULTI batch"].num_requests
    assert (
        0 < rds.xlen(f"{prefix}stream") <= max(added, 0) and rds.xlen(f"{prefix}stream") < 500 + 200
    )
    # latest keys carry the TTL, and nothing outside the prefix was written
    keys = rds.keys(f"{prefix}latest:*")
    assert 0 < len(keys) <= 20 and all(0 < rds.ttl(k) <= 3600 for k in keys)
    assert not rds.keys("pipeswarm:latest:bench-*")
