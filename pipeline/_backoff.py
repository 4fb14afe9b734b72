"""The one exponential backoff of the pipeline's retry loops.

The bridge (a record Kafka did not take), the consumer's Redis breaker and the
gateway's stream reader all wait ``first_s * 2**attempt``, capped at ``max_s``;
the gateway adds up to a quarter at random so that gateways restarted together
do not reconnect to Redis in step.
"""

from __future__ import annotations

import random

#: Past this the cap has long been reached (and 2.0**1024 overflows a float).
_MAX_EXPONENT = 64


def delay(attempt: int, first_s: float, max_s: float, jitter: float = 0.0) -> float:
    """Seconds to wait before retry number `attempt` (0 for the first retry).

    >>> [delay(n, 0.1, 0.5) for n in range(4)]
    [0.1, 0.2, 0.4, 0.5]
    """
    wait = min(first_s * 2.0 ** min(max(attempt, 0), _MAX_EXPONENT), max_s)
    return wait * (1 + random.random() * jitter) if jitter else wait
