"""A fix to Locust itself that a swarm of many users needs (Locust 2.47).

A worker handles each ``spawn`` message from the master by keeping the options
that are not Locust's own defaults::

    {k: v for k, v in job["parsed_options"].items() if k not in argument_parser.default_args_dict() ...}

``default_args_dict()`` builds Locust's whole argument parser and parses an
empty command line: 1.5 ms on a quiet core, called once per option (~110 with
ours) and so 150–400 ms per spawn message, during which every greenlet of the
worker waits. A ramp sends such a message every second or so; measured with the
10,000-subscriber fan-out (+100 users/s), it was most of the workers' event-loop
lag (p99 130–160 ms; the gevent monitor found ``default_args_dict`` in 637 of
the stalls over 30 ms). The defaults never change in a process, so one parse is
kept and a copy handed out.
"""

from __future__ import annotations

import functools
from typing import Any

from locust import argument_parser

__all__ = ["cache_default_args"]


def cache_default_args() -> None:
    """Make ``locust.argument_parser.default_args_dict`` parse once per process (idempotent)."""
    current = argument_parser.default_args_dict
    if getattr(current, "_pipeswarm_cached", False):
        return
    once = functools.cache(current)

    def default_args_dict() -> dict[str, Any]:
        return dict(once())

    default_args_dict._pipeswarm_cached = True  # type: ignore[attr-defined]
    argument_parser.default_args_dict = default_args_dict
