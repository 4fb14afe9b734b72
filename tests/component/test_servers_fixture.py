"""The shared server fixtures start real processes that answer."""

from __future__ import annotations

import redis


def test_redis_fixture_answers(redis_url):
    r = redis.Redis.from_url(redis_url)
    assert r.ping() is True
    r.set("pipeswarm:test", "1")
    assert r.get("pipeswarm:test") == b"1"
