"""The open-model timetable: one greenlet per process publishes for every device.

Each device has an intended send time ``due`` (epoch ns) that advances by its
interval after every publish, whatever happened: the schedule never waits for
the previous send (no "sleep after send", so no coordinated omission). When the
process falls behind, messages go out late with their *intended* time as the
envelope's ``t0``, and the lag (``tp - t0``) is reported through the ledger.

Why one greenlet instead of each Locust user's own task loop: a greenlet switch,
a timer and Locust's task bookkeeping per message cost more than building and
sending the message; a heap of ``(due, token, device)`` costs ~1 µs per message.
The user greenlets stay free for whatever tasks a subclass adds.

A device is asked to publish with ``device.publish_due(due, now)``; it returns
its next due time, or 0 to leave the timetable (disconnected, window full,
draining); it comes back with :meth:`Schedule.add`.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import time
from typing import Any, Protocol

import gevent
from gevent.event import Event
from gevent.hub import get_hub

from users._mqtt_loop import yield_to_loop
from users._per_env import PerEnvironment

__all__ = ["Schedule", "get_schedule", "BUDGET"]

log = logging.getLogger(__name__)

#: Messages published before yielding to the other greenlets (acks, users).
#: ~64 x 10 µs: an ack that arrives meanwhile waits at most ~0.6 ms.
BUDGET = 64


class Scheduled(Protocol):
    _sched_token: int

    def publish_due(self, due: int, now: int) -> int: ...


class Schedule:
    """A heap of devices by due time, worked off by one greenlet (see module doc)."""

    def __init__(self) -> None:
        self.hub = get_hub()
        self._heap: list[tuple[int, int, Any]] = []
        self._tokens = itertools.count(1)
        self._greenlet: gevent.Greenlet | None = None
        self._wake = Event()
        self._sleep_until = 0

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, device: Scheduled, due: int) -> None:
        """Put ``device`` on the timetable at ``due`` (replaces an earlier entry)."""
        token = next(self._tokens)
        device._sched_token = token
        heapq.heappush(self._heap, (due, token, device))
        if self._greenlet is None or self._greenlet.dead:
            self._greenlet = gevent.spawn(self._run)
        elif due < self._sleep_until:
            self._wake.set()

    @staticmethod
    def remove(device: Scheduled) -> None:
        """Take ``device`` off the timetable (its heap entry is skipped lazily)."""
        device._sched_token = 0

    def _run(self) -> None:
        heap = self._heap
        pop = heapq.heappop
        push = heapq.heappush
        now_ns = time.time_ns
        while heap:
            now = now_ns()
            due = heap[0][0]
            if due > now:
                self._sleep_until = due
                self._wake.clear()
                self._wake.wait((due - now) / 1e9)
                self._sleep_until = 0
                continue
            budget = BUDGET
            while heap and budget:
                if heap[0][0] > now:
                    break
                due, token, device = pop(heap)
                if device._sched_token != token:
                    continue  # removed or re-added since
                try:
                    nxt = device.publish_due(due, now)
                except Exception:  # a broken device leaves the timetable, the others go on
                    log.exception("device %r failed to publish; it stops publishing", device)
                    nxt = 0
                # publish_due may itself have re-added or removed the device
                if nxt and device._sched_token == token:
                    push(heap, (nxt, token, device))
                budget -= 1
            if not budget:
                yield_to_loop()  # so acks and wake-ups do not wait
        self._greenlet = None


#: The timetable of an ``Environment`` (one per Locust process, made on first use); made
#: again when the hub changed (a new gevent hub cannot drive the old one's watchers).
get_schedule: PerEnvironment[Schedule] = PerEnvironment(Schedule, lambda p: p.hub is not get_hub())
