"""The run's clock: every worker's offset to the master, measured over Locust's own channel.

Latency across hosts compares two clocks. Each worker measures how far its
clock is from the master's with NTP-style exchanges (RFC 5905 §8) over Locust's
message channel (``register_message``/``send_message``, the ZeroMQ link the
worker already has)::

    worker  t0 ──── pipeswarm_clock_ping ───▶ t1  master
    worker  t3 ◀─── pipeswarm_clock_pong ──── t2  master

    offset = ((t0 - t1) + (t3 - t2)) / 2     worker clock minus master clock
    delay  = (t3 - t0) - (t2 - t1)           round trip, the master's time excluded

Of the last :data:`WINDOW` samples the one with the smallest ``delay`` wins (the
minimum-RTT filter of NTP's clock filter: queueing only ever adds delay, and
the true offset lies within ``± delay / 2`` of that sample's, which is the
reported *uncertainty*). A worker sends a burst of :data:`BURST` pings when it
starts, then one every :data:`REFRESH_S` seconds for the whole life of the
process, and ships its estimate in every report.

The master's clock is the run's clock (its offset is 0 by definition). A worker
converts what it stamps and reads into master time: :func:`now_ns` and
:func:`to_master` subtract this process's :data:`state` offset. The envelope
(``telemetry.envelope``) writes ``t0``/``tp`` in master time and the ledger
reads every receive time in master time, so a latency between a publisher on
one host and a subscriber on another is corrected by both hosts' offsets.
Pipeline hop stamps come from the pipeline host's clock, which is not measured
(see docs/results.md).
"""

from __future__ import annotations

import logging
import socket
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import gevent
from locust.runners import MasterRunner, WorkerRunner

from telemetry._offset import Estimate, Offset, now_ns, sample, state, to_master
from telemetry.options import CLOCK_SYNC

if TYPE_CHECKING:
    from locust.env import Environment
    from locust.rpc import Message

__all__ = [
    "CLOCK_SYNC",
    "Estimate",
    "Offset",
    "ClockSync",
    "state",
    "now_ns",
    "to_master",
    "sample",
    "install",
    "local_address",
    "MSG_PING",
    "MSG_PONG",
]

log = logging.getLogger(__name__)

MSG_PING = "pipeswarm_clock_ping"
MSG_PONG = "pipeswarm_clock_pong"
#: pings sent when a worker starts, and the pause between them
BURST = 8
BURST_GAP_S = 0.05
#: seconds between refresh pings during the run
REFRESH_S = 2.0
#: samples the minimum-delay filter chooses from (the burst plus ~30 s of refreshes)
WINDOW = 16


class ClockSync:
    """Worker side: send pings, keep the last :data:`WINDOW` samples, set :data:`state`."""

    def __init__(
        self,
        runner: WorkerRunner,
        offset: Offset = state,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.runner = runner
        self.offset = offset
        #: this worker's clock (tests give a skewed one)
        self.clock_ns = clock_ns
        self.samples: deque[Estimate] = deque(maxlen=WINDOW)
        self._greenlet: gevent.Greenlet | None = None

    def start(self) -> None:
        self.runner.register_message(MSG_PONG, self.on_pong)
        # in the runner's group, so it ends with the worker (Locust kills the group on quit)
        group = getattr(self.runner, "greenlet", None)
        self._greenlet = group.spawn(self._run) if group is not None else gevent.spawn(self._run)

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill(block=False)
            self._greenlet = None

    def ping(self) -> None:
        self.runner.send_message(MSG_PING, {"t0": self.clock_ns()})

    def _run(self) -> None:
        for _ in range(BURST):
            self._ping_safely()
            gevent.sleep(BURST_GAP_S)
        while True:
            gevent.sleep(REFRESH_S)
            self._ping_safely()

    def _ping_safely(self) -> None:
        try:
            self.ping()
        except Exception as e:  # a broken link: Locust reconnects; the next ping retries
            log.debug("clock ping not sent: %s", e)

    def on_pong(self, environment: Environment, msg: Message, **_kw: Any) -> None:
        t3 = self.clock_ns()
        d = msg.data if isinstance(msg.data, dict) else {}
        try:
            est = sample(int(d["t0"]), int(d["t1"]), int(d["t2"]), t3)
        except (KeyError, TypeError, ValueError):
            return
        self.add(est)

    def add(self, est: Estimate) -> Estimate:
        """Add one sample; apply and return the best (minimum-delay) of the window."""
        self.samples.append(est)
        best = min(self.samples, key=lambda e: e.delay_ns)
        self.offset.set(best, len(self.samples))
        return best


def _on_ping(environment: Environment, msg: Message, **_kw: Any) -> None:
    """Master: answer at once with its receive and send times."""
    t1 = time.time_ns()
    runner = environment.runner
    data = msg.data if isinstance(msg.data, dict) else {}
    if isinstance(runner, MasterRunner) and "t0" in data:
        reply = {"t0": data["t0"], "t1": t1, "t2": time.time_ns()}
        runner.send_message(MSG_PONG, reply, client_id=msg.node_id)


def local_address(environment: Environment) -> str:
    """The address this worker reaches the master from (no packet is sent), or ''."""
    options = environment.parsed_options
    host = getattr(options, "master_host", None) or "127.0.0.1"
    port = getattr(options, "master_port", None) or 5557
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((host, int(port)))
            return str(s.getsockname()[0])
    except OSError:
        return ""


def install(environment: Environment) -> ClockSync | None:
    """Master: answer pings. Worker: start measuring (returns its :class:`ClockSync`)."""
    runner = environment.runner
    if isinstance(runner, MasterRunner):
        if MSG_PING not in runner.custom_messages:
            runner.register_message(MSG_PING, _on_ping)
        return None
    if isinstance(runner, WorkerRunner) and MSG_PONG not in runner.custom_messages:
        state.reset()
        state.enabled = CLOCK_SYNC.get(environment) == "true"
        sync = ClockSync(runner)
        sync.start()
        return sync
    return None
