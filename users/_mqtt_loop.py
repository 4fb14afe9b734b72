"""One pump greenlet per process drives every MQTT connection from socket readiness.

Why not what the obvious designs do (measured on the 2-core dev machine before
this client was written): paho's ``loop_start`` is a thread (a greenlet under
Locust) per client whose ``select()`` fails above fd 1024 — with 1,000 of
Locust's own ``MqttUser`` only ~340 ever connect, paho silently reconnecting the
rest — and a reader greenlet per connection costs ~25 KB and 4.6 % idle CPU at
10k idle connections (paho without ``loop_start``, one shared loop: 16 KB and
0.6 %). ``python -m bench idle-devices`` measures this pump.
Here each socket has a libev io watcher on gevent's own hub
(``hub.loop.io(fd, READ)``); its callback only queues the connection, and one
*pump* greenlet does the protocol work for every ready connection, once per
loop iteration. The work runs in a greenlet, not in the hub, so that Locust
``request`` listeners (which are allowed to block) can be fired from it.

A second greenlet, the *ticker*, walks the registered connections once a
second for keepalive pings and connect timeouts (one timer for all, instead of
one per connection).

Neither holds the loop for long: after :data:`SLICE_S` of work each yields
(:func:`yield_to_loop`) so that timers and other greenlets run on time. A fan-out
burst (one update reaching 5,000 subscriptions of a process at once, ~40 µs
each with the ledger) or a tick over 5,000 connections would otherwise be one
20–50 ms stall of every clock in the process (``pipeswarm_loop_lag_seconds``).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

import gevent
from gevent.hub import get_hub

from telemetry.looplag import YIELD_S, yield_to_loop
from users._per_env import PerEnvironment

__all__ = ["Pump", "get_pump", "READ", "WRITE", "TICK_S", "SLICE_S", "YIELD_S", "yield_to_loop"]

log = logging.getLogger(__name__)

READ = 1  # libev EV_READ
WRITE = 2  # libev EV_WRITE
TICK_S = 1.0
#: the most the pump or the ticker runs before yielding to the loop
SLICE_S = 0.002


class Ticking(Protocol):
    def _tick(self, now: float) -> None: ...


class Pump:
    """Runs connection work queued by hub watchers in one greenlet (see module doc)."""

    def __init__(self) -> None:
        self.hub = get_hub()
        self.loop = self.hub.loop
        self._ready: deque[Callable[[], Any]] = deque()
        self._greenlet: gevent.Greenlet | None = None
        self._parked = False
        self._scheduled = False
        self.clients: set[Ticking] = set()
        self._ticker: gevent.Greenlet | None = None

    # --- watchers ---------------------------------------------------------------
    def io(self, fd: int, events: int) -> Any:
        """A new (stopped) libev io watcher; start it with ``w.start(pump.post, fn)``."""
        return self.loop.io(fd, events)

    def timer(self, seconds: float) -> Any:
        """A one-shot libev timer; start it with ``t.start(pump.post, fn)``."""
        return self.loop.timer(seconds)

    def post(self, fn: Callable[[], Any]) -> None:
        """Queue ``fn`` to run in the pump greenlet (called from hub callbacks)."""
        self._ready.append(fn)
        if not self._scheduled:
            self._scheduled = True
            self.loop.run_callback(self._wake)

    def _wake(self) -> None:
        # runs in the hub, after this iteration's io callbacks: one switch per batch
        self._scheduled = False
        if self._greenlet is None or self._greenlet.dead:
            self._parked = False
            self._greenlet = gevent.spawn(self._run)
        elif self._parked:
            self._parked = False
            self._greenlet.switch()
        # else: the pump is busy (a listener blocked inside a callback); it drains
        # the queue before parking again

    def _run(self) -> None:
        ready = self._ready
        hub = self.hub
        clock = time.perf_counter
        while True:
            until = clock() + SLICE_S
            while ready:
                fn = ready.popleft()
                try:
                    fn()
                except Exception:  # one connection's bug must not stop every other one
                    log.exception("MQTT connection callback %r failed", fn)
                if clock() > until:
                    yield_to_loop()  # let timers and other greenlets run (module doc)
                    until = clock() + SLICE_S
            self._parked = True
            hub.switch()

    # --- keepalive ticker -------------------------------------------------------------
    def register(self, client: Ticking) -> None:
        self.clients.add(client)
        if self._ticker is None:
            self._ticker = gevent.spawn(self._tick_loop)

    def unregister(self, client: Ticking) -> None:
        self.clients.discard(client)

    def _tick_loop(self) -> None:
        clock = time.perf_counter
        try:
            while self.clients:
                gevent.sleep(TICK_S)
                now = time.monotonic()
                until = clock() + SLICE_S
                for client in list(self.clients):
                    try:
                        client._tick(now)
                    except Exception:
                        log.exception("MQTT keepalive tick of %r failed", client)
                    if clock() > until:
                        yield_to_loop()
                        until = clock() + SLICE_S
        finally:
            self._ticker = None


#: The pump of an ``Environment`` (one per Locust process, made on first use); made
#: again when the hub changed (a new gevent hub cannot drive the old one's watchers).
get_pump: PerEnvironment[Pump] = PerEnvironment(Pump, lambda p: p.hub is not get_hub())
