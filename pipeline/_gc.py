"""Keep CPython's full garbage collections short in a service that holds thousands of connections.

A full (generation 2) collection walks every tracked object with the event loop
stopped. Measured in the gateway with 4,000 STOMP subscribers: 18 full
collections in 60 s of up to 557 ms each, every message in flight late by as
much (the e2e p99 was 590 ms, its p50 25 ms). CPython starts one whenever the
objects promoted since the last exceed a quarter of the old ones, and a busy
gateway promotes tens of thousands a second (frames queued to slow readers,
per-connection state).

So every ``freeze_s`` the service collects its youngest generation and moves what
survived into the permanent generation (``gc.freeze()``): later full collections
walk only what was made since (measured with 4,000 subscribers, every second: no
automatic full collection after the first freeze, e2e p99 590 -> 72 ms). Frozen
objects are still freed by reference counting. A reference cycle among them is
reclaimed only by the full collection of everything, frozen or not, run every
``full_s`` and only while the gateway is quiet (at 10,000 connections it took
seconds). So a closed connection must leave no cycle behind: two did (the
server's ``send`` kept in the ASGI scope, websockets' parser generator), 20 KB
per connection churned, never given back to a gateway that never went quiet.
Both are broken when a connection ends (``pipeline.gateway._ws.KeepServerSend``,
``pipeline.gateway.__main__.WebSocketProtocol``); ``python -m bench
gateway-churn`` measures it and ``pipeline_gateway_gc_frozen_objects`` shows it.

``telemetry._gc`` does the same on the load side under gevent.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable

__all__ = ["Freezer", "FREEZE_S", "FULL_S", "QUIET"]

FREEZE_S = 1.0
FULL_S = 600.0
#: a full collection waits until the gateway holds at most this many connections
QUIET = 100

log = logging.getLogger(__name__)


class Freezer:
    """:meth:`step` freezes (and, when quiet, collects everything); :meth:`run` loops it."""

    def __init__(
        self,
        freeze_s: float = FREEZE_S,
        full_s: float = FULL_S,
        connections: Callable[[], int] = lambda: 0,
        quiet: int = QUIET,
    ) -> None:
        self.freeze_s = freeze_s
        self.full_s = full_s
        self.connections = connections
        self.quiet = quiet
        self.freezes = 0
        self.full_collections = 0
        self._last_full = time.monotonic()

    def step(self, now: float) -> None:
        if self.full_s and now - self._last_full >= self.full_s:
            open_now = self.connections()
            if open_now <= self.quiet:
                frozen = gc.get_freeze_count()
                started = time.perf_counter()
                gc.unfreeze()
                found = gc.collect()
                log.info(
                    "event=gc_full connections=%d frozen=%d collected=%d ms=%.0f",
                    open_now,
                    frozen,
                    found,
                    (time.perf_counter() - started) * 1000,
                )
                self._last_full = now
                self.full_collections += 1
        gc.collect(0)
        gc.freeze()
        self.freezes += 1

    async def run(self) -> None:
        if self.freeze_s <= 0:
            return
        while True:
            await asyncio.sleep(self.freeze_s)
            self.step(time.monotonic())
