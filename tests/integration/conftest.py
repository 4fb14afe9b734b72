"""The real embedded stack on free ports, shared by the integration tests."""

from __future__ import annotations

import pytest

from pipeline.stack import Stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    """Mosquitto, Tansu, Redis, bridge, consumer and gateway (stream mode)."""
    s = Stack.with_ports(auto=True, state_dir=tmp_path_factory.mktemp("stack"))
    s.start()
    try:
        yield s
    finally:
        s.stop()
