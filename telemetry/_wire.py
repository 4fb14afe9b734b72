"""The per-device records a worker ships in its final payload, named field by field.

They travel as plain lists (msgpack to the master, JSON in tests); these
``NamedTuple`` types write them (``to_wire``) and read them back
(``StreamWire(*row)``), so no side unpacks a list by position.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["PublisherWire", "SnapshotWire", "StreamWire"]


class PublisherWire(NamedTuple):
    """What one device published: its entry protocol, first and last seq with their ``tp``."""

    src: str
    first: int
    first_tp: int
    hi: int
    hi_tp: int
    messages: int


class StreamWire(NamedTuple):
    """One (subscriber, device) in stream mode (``telemetry._sequence.Stream``)."""

    src: str
    first: int
    hi: int
    delivered: int
    evicted: int
    max_total_us: int
    #: the open gaps, ``[[lo, hi], ...]``
    gaps: list[list[int]]


class SnapshotWire(NamedTuple):
    """One (subscriber, device) in snapshot mode (``telemetry._sequence.SnapshotStream``)."""

    src: str
    seq: int
    updates: int
    repeats: int
    conflated: int
    regressions: int
    max_stale_us: int
