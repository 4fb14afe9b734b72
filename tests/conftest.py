"""Shared fixtures: real servers on free ports, stopped by the PIDs we started."""

from __future__ import annotations

# Locust monkey-patches with gevent when it is imported, and some test modules
# import it: patch first, so every test runs under the same (patched) world
# whichever tests are selected, and ssl is patched before anything imports it.
from gevent import monkey

monkey.patch_all()

import pytest  # noqa: E402
import redis  # noqa: E402

from pipeline.stack import Stack  # noqa: E402


@pytest.fixture(scope="session")
def servers(tmp_path_factory):
    """A real Mosquitto and Redis (no Kafka, no services) on free ports.

    Mosquitto is anonymous here, as a user's own broker may be: the component tests
    exercise the clients; the embedded stack's auth is tested on the integration stack.
    """
    stack = Stack.with_ports(
        auto=True, state_dir=tmp_path_factory.mktemp("servers"), mqtt_auth=False
    )
    try:
        stack.start_service("mosquitto")
        stack.start_service("redis")
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="session")
def redis_url(servers) -> str:
    """`redis://127.0.0.1:PORT/0` of a real redis-server."""
    return servers.urls["redis"]


@pytest.fixture(scope="session")
def mqtt_url(servers) -> str:
    """`mqtt://127.0.0.1:PORT` of a real Mosquitto."""
    return servers.urls["mqtt"]


@pytest.fixture(scope="module")
def rds(redis_url):
    """A client of that redis-server, closed after the module."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()
