"""Hop stamps on the trace envelope, as far as the pipeline touches it.

The envelope itself (fields, meaning) belongs to `telemetry/envelope.py` on the
load side; the pipeline must not import it (the system under test must run, and
be measured, without the tool that measures it), so it knows exactly one thing: when a payload carries ``trace.hops``, write the
epoch-ns time this stage saw it under the stage's name. Everything else passes
through untouched; payloads without a trace are left as they are.
"""

from __future__ import annotations

import time
from typing import Any


def stamp(message: dict[str, Any], hop: str, now_ns: int | None = None) -> bool:
    """Set ``message["trace"]["hops"][hop]``; return False when there is no trace."""
    trace = message.get("trace")
    if not isinstance(trace, dict):
        return False
    hops = trace.get("hops")
    if not isinstance(hops, dict):
        hops = trace["hops"] = {}
    hops[hop] = time.time_ns() if now_ns is None else now_ns
    return True
