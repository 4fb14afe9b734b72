"""The real embedded stack on free ports, shared by the integration tests."""

from __future__ import annotations

import pytest

from pipeline.stack import Stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    """Mosquitto (auth on, and a TLS listener), Apache Kafka, Redis, bridge, consumer and
    gateway (stream mode)."""
    s = Stack.with_ports(auto=True, state_dir=tmp_path_factory.mktemp("stack"), mqtt_tls=True)
    s.start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def own_stack(tmp_path):
    """A stack of the test's own (4 partitions), for tests that stop or pause its services."""
    s = Stack.with_ports(auto=True, state_dir=tmp_path / "stack", partitions=4)
    s.start()
    try:
        yield s
    finally:
        s.stop()
