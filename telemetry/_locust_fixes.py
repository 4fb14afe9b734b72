"""Fixes to Locust itself (Locust 2.47).

**Spawn messages parse the command line once per option.**

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

**``--csv`` files are never written at the end.** Locust rewrites
``<prefix>_stats.csv`` (and ``_failures.csv``, ``_exceptions.csv``) once a second
from a greenlet and only closes them at shutdown, so what is on disk is up to a
second old, or older on a busy box: ``analyze.py`` read request figures that
disagreed with the ones Locust had just checked (``--slo``).
:func:`write_final_csv` writes them once more from the final statistics, with
Locust's own writer; a later tick of Locust's greenlet writes the same rows.
"""

from __future__ import annotations

import csv
import functools
from pathlib import Path
from typing import Any

from locust import argument_parser
from locust.env import Environment
from locust.stats import PERCENTILES_TO_REPORT, StatsCSV

__all__ = ["cache_default_args", "write_final_csv"]


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


def write_final_csv(environment: Environment) -> list[Path]:
    """Write ``--csv``'s stats, failures and exceptions files from the statistics as they
    are now (the run is over); returns the files written (none without ``--csv``)."""
    prefix = getattr(environment.parsed_options, "csv_prefix", None)
    if not prefix:
        return []
    writer = StatsCSV(environment, PERCENTILES_TO_REPORT)
    written = []
    for suffix, write in (
        ("_stats.csv", writer.requests_csv),
        ("_failures.csv", writer.failures_csv),
        ("_exceptions.csv", writer.exceptions_csv),
    ):
        path = Path(f"{prefix}{suffix}")
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w") as f:  # as Locust opens them (csv's \r\n rows)
            write(csv.writer(f))
        written.append(path)
    return written
