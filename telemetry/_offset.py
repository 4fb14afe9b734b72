"""This process's clock offset to the master, and the conversions to master time.

Kept free of Locust and gevent: the envelope and the ledger apply it on every
message (one attribute read and a subtraction). ``telemetry.clock`` measures it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

__all__ = ["Estimate", "Offset", "state", "now_ns", "to_master", "sample"]


@dataclass(frozen=True, slots=True)
class Estimate:
    """One exchange, or the chosen one: offset (worker − master) and round-trip delay, in ns."""

    offset_ns: int
    delay_ns: int
    at_ns: int

    @property
    def uncertainty_ns(self) -> int:
        return self.delay_ns // 2


def sample(t0: int, t1: int, t2: int, t3: int) -> Estimate:
    """The estimate of one exchange (worker sent at ``t0``, master received ``t1``,
    master replied ``t2``, worker received ``t3``; each on its own clock).

    >>> e = sample(1_050, 1_010, 1_012, 1_072)  # worker 50 ahead, 10 each way
    >>> e.offset_ns, e.delay_ns, e.uncertainty_ns
    (50, 20, 10)
    """
    return Estimate(((t0 - t1) + (t3 - t2)) // 2, max((t3 - t0) - (t2 - t1), 0), t3)


class Offset:
    """This process's clock offset to the master (0 on the master and in a local run).

    The measured offset is applied only when it is larger than its uncertainty:
    one within ``± uncertainty`` of 0 is indistinguishable from none (workers on the
    master's own host, one kernel clock), and applying it would only add its error.
    """

    __slots__ = (
        "offset_ns",
        "uncertainty_ns",
        "samples",
        "enabled",
        "measured_at_ns",
        "measured_ns",
    )

    def __init__(self) -> None:
        #: subtracted from every local timestamp
        self.offset_ns = 0
        #: the best estimate (worker clock − master clock), applied or not
        self.measured_ns = 0
        self.uncertainty_ns = 0
        self.samples = 0
        #: whether a significant offset corrects timestamps (``--clock-sync true``)
        self.enabled = True
        self.measured_at_ns = 0

    def set(self, est: Estimate, samples: int) -> None:
        self.measured_ns = est.offset_ns
        significant = abs(est.offset_ns) > est.uncertainty_ns
        self.offset_ns = est.offset_ns if self.enabled and significant else 0
        self.uncertainty_ns = est.uncertainty_ns
        self.samples = samples
        self.measured_at_ns = est.at_ns

    def reset(self) -> None:
        self.offset_ns = self.measured_ns = self.uncertainty_ns = 0
        self.samples = self.measured_at_ns = 0
        self.enabled = True

    def to_wire(self) -> dict[str, Any]:
        """What a worker reports: measured and applied offset, uncertainty (ns), samples."""
        return {
            "offset_ns": self.measured_ns,
            "uncertainty_ns": self.uncertainty_ns,
            "samples": self.samples,
            "enabled": self.enabled,
            "applied_ns": self.offset_ns,
        }


#: The offset of this process (a process is on one host: one clock).
state = Offset()


def now_ns() -> int:
    """Now on the master's clock (epoch ns)."""
    return time.time_ns() - state.offset_ns


def to_master(local_ns: int) -> int:
    """A timestamp of this process's clock (epoch ns) on the master's clock."""
    return local_ns - state.offset_ns
