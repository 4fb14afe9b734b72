"""gevent loop lag: a greenlet that asks to wake every 100 ms and records how late it woke.

A client that does blocking C-level I/O (kafka-python, paho's ``loop_start``)
freezes every greenlet of the worker, and with it every timestamp the worker
takes; this probe makes that visible. A worker whose loop lagged is not a
trustworthy clock, so ``e2e.json`` reports the lag per worker next to the
end-to-end figures.
"""

from __future__ import annotations

import time

import gevent

from telemetry.hdr import Histogram

__all__ = ["LoopLagProbe", "INTERVAL_S", "YIELD_S", "yield_to_loop"]

INTERVAL_S = 0.1
#: How busy greenlets yield: a timer, not ``sleep(0)`` (:func:`yield_to_loop`).
YIELD_S = 1e-5


def yield_to_loop() -> None:
    """Let the loop run its timers and I/O, then carry on.

    Not ``gevent.sleep(0)``: gevent runs ``sleep(0)`` callbacks back to back and
    looks at the clock only every 50 callbacks, so a chain of 2 ms slices could
    hold timers and I/O for ~100 ms (measured: the loop-lag probe saw 20–57 ms
    at 5,000 frames/s with ``sleep(0)`` slices). A timer goes through the loop's
    I/O poll every time, with every timer that was due.
    """
    gevent.sleep(YIELD_S)


class LoopLagProbe:
    """Records ``actual wake time − intended wake time`` (µs) into :attr:`histogram`.

    The intended times follow a fixed 100 ms grid, so one long stall counts once
    per tick it swallowed (no coordinated omission in the probe itself).
    """

    def __init__(self, interval_s: float = INTERVAL_S) -> None:
        self.interval_ns = int(interval_s * 1e9)
        self.histogram = Histogram()
        self.max_us = 0
        self._greenlet: gevent.Greenlet | None = None

    @property
    def running(self) -> bool:
        return self._greenlet is not None and not self._greenlet.dead

    def start(self) -> None:
        if not self.running:
            self._greenlet = gevent.spawn(self._run)

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill(block=False)
            self._greenlet = None

    def _run(self) -> None:
        interval = self.interval_ns
        due = time.monotonic_ns() + interval
        while True:
            gevent.sleep(max(due - time.monotonic_ns(), 0) / 1e9)
            now = time.monotonic_ns()
            # every tick that was due by now is one sample: a 1 s stall gives 10
            while due <= now:
                lag_us = (now - due) // 1000
                self.histogram.record_us(lag_us)
                if lag_us > self.max_us:
                    self.max_us = lag_us
                due += interval

    def take_wire(self) -> dict[str, object]:
        """Encode the samples since the last call and reset (a delta for the master)."""
        wire = self.histogram.to_wire()
        self.histogram.reset()
        return wire
