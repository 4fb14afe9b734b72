"""Reconnect delays, one rule for every user: exponential backoff with "equal jitter".

The n-th delay in a row is drawn from ``[cap/2, cap)`` with ``cap = min(high,
low * 2**n)``: never zero, and a fleet that lost its connections together does
not come back in lock-step (the "Equal Jitter" variant of AWS's Architecture
Blog post "Exponential Backoff And Jitter", 2015). :meth:`Backoff.reset` after
a success.
"""

from __future__ import annotations

import random

__all__ = ["Backoff"]


class Backoff:
    """Delays that double from ``low`` to ``high`` seconds, jittered; :meth:`reset` on success."""

    __slots__ = ("low", "high", "attempts")

    def __init__(self, low: float, high: float) -> None:
        self.low = low
        self.high = high
        #: delays handed out since the last reset
        self.attempts = 0

    def next(self) -> float:
        cap = min(self.high, self.low * (2 ** min(self.attempts, 16)))
        self.attempts += 1
        return cap / 2 + random.random() * cap / 2

    def reset(self) -> None:
        self.attempts = 0
