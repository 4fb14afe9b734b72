"""Bytes on the wire per protocol, counted where the users' sockets send and receive.

A user's client adds what ``send()`` took and ``recv()`` returned (TCP payload:
headers, framing, acks, keepalives, everything its protocol puts on the socket;
not the TCP/IP headers). The ingest comparison (``telemetry.ingest_compare``)
divides the counts of a phase by the messages it published::

    count = wire_count(environment, "MQTT")   # once, when the client is made
    count.sent += n                           # after each send()
    count.received += len(data)               # after each recv()
    count.opened += 1 / count.closed += 1     # when a connection is up / closed
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from locust.env import Environment

__all__ = ["WireCount", "wire_count", "wire_counts"]


class WireCount:
    """Bytes one protocol's clients sent and received in one Locust process."""

    __slots__ = ("sent", "received", "opened", "closed")

    def __init__(self) -> None:
        self.sent = 0
        self.received = 0
        #: connections established and closed (``connections`` = those open now)
        self.opened = 0
        self.closed = 0

    @property
    def connections(self) -> int:
        return self.opened - self.closed

    def snapshot(self) -> tuple[int, int]:
        return self.sent, self.received


_counts: weakref.WeakKeyDictionary[Environment, dict[str, WireCount]] = weakref.WeakKeyDictionary()


def wire_counts(environment: Environment) -> dict[str, WireCount]:
    """Every protocol's count in ``environment`` (by the protocol's request type)."""
    counts = _counts.get(environment)
    if counts is None:
        counts = _counts[environment] = {}
    return counts


def wire_count(environment: Environment, protocol: str) -> WireCount:
    """The count of ``protocol`` (``"MQTT"``, ``"HTTP"``) in ``environment``, made on first use."""
    counts = wire_counts(environment)
    count = counts.get(protocol)
    if count is None:
        count = counts[protocol] = WireCount()
    return count
