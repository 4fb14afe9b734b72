"""Keep CPython's full garbage collections short in a process that holds thousands of connections.

A full (generation 2) collection walks every tracked object. With 5,000
subscriptions in a worker that is ~240,000 objects and 100–180 ms with the
whole process frozen, every 2–3 s: each periodic ledger report allocates tens
of thousands of containers that live past two young collections, and CPython
runs a full collection whenever the objects promoted since the last one exceed
a quarter of the old ones (measured: 16 full collections in 50 s at 4,000
subscriptions, p50 128 ms; ``pipeswarm_loop_lag_seconds`` p99 324 ms).

So every :data:`FREEZE_EVERY_S` the process collects its youngest generation and
moves everything that survived into the permanent generation (``gc.freeze()``,
which Locust itself calls before ``--processes`` forks): later full collections
walk only what was made since (measured: loop lag p99 324 -> 12 ms at 4,000
subscriptions). Frozen objects are still freed by reference counting; only a
reference cycle among them waits for the end of the run, when
:meth:`Freezer.stop` hands everything back to the collector. A periodic full
collection is not an option mid-run: with 10,000 connections in a process it
stops the process for seconds (measured in the gateway, which does it only when
nearly idle: ``pipeline._gc``).

So what a run makes and drops while it goes on must leave no cycle. Two did:
hdrh's histogram and its encoder refer to each other (every per-second window
histogram, ~190 KB, stayed: the master grew ~21 MB a minute at the demo's load;
broken in ``telemetry.hdr._acyclic``), and each failed connect of a subscriber
left ~30 objects through gevent's reraise frame (``users._stomp_client``,
``users.ws``). ``python -m bench load-soak`` measures the master's and the
workers' RSS over minutes.

``pipeline._gc`` does the same in the gateway under asyncio.
"""

from __future__ import annotations

import gc

import gevent

__all__ = ["Freezer", "FREEZE_EVERY_S"]

FREEZE_EVERY_S = 1.0


class Freezer:
    """A greenlet that runs ``gc.collect(0); gc.freeze()`` every :data:`FREEZE_EVERY_S`."""

    def __init__(self, every_s: float = FREEZE_EVERY_S) -> None:
        self.every_s = every_s
        self.freezes = 0
        self._greenlet: gevent.Greenlet | None = None

    def start(self) -> None:
        if self._greenlet is None or self._greenlet.dead:
            self._greenlet = gevent.spawn(self._run)

    def stop(self) -> None:
        """Stop freezing and hand what was frozen back to the collector (a next run
        in the same process starts from a clean slate)."""
        if self._greenlet is not None:
            self._greenlet.kill(block=False)
            self._greenlet = None
            gc.unfreeze()

    def _run(self) -> None:
        while True:
            gevent.sleep(self.every_s)
            gc.collect(0)
            gc.freeze()
            self.freezes += 1
