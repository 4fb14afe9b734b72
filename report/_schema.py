"""The shape of ``run.json`` and ``e2e.json``, checked before anything reads them.

One declaration per file (what ``telemetry/results.py`` writes): every field the
report reads, with its type. A value of the wrong type is one sentence naming
the file and the field (``run.json: master.argv should be a list, not -1.``),
exit code 2, instead of an error deep inside the report.

Spec language: ``str``, ``INT`` (not a bool), ``NUM`` (int or float, not a bool),
``bool``; ``Opt(spec)`` also allows null; ``{"key": spec}`` an object whose listed
keys, when present, match (others are free), ``Req(spec)`` marking a key that must
be present; ``Map(spec)`` an object whose every value matches; ``[spec]`` a list
whose every item matches. The top-level keys a file must have are checked by
``report._load`` first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from report.exceptions import UnusableInput

__all__ = ["E2E", "INT", "NUM", "RUN", "Map", "Opt", "Req", "check"]


@dataclass(frozen=True)
class Map:
    values: Any


@dataclass(frozen=True)
class Opt:
    spec: Any


@dataclass(frozen=True)
class Req:
    """A key that must be present (the report reads it unconditionally)."""

    spec: Any


INT = "integer"
NUM = "number"

_WORDS = {str: "a string", bool: "true or false", INT: "an integer", NUM: "a number"}


def _words(spec: Any) -> str:
    if isinstance(spec, Opt):
        return _words(spec.spec) + " or null"
    if isinstance(spec, (dict, Map)):
        return "an object"
    if isinstance(spec, list):
        return "a list"
    return _WORDS[spec]


def _fits(value: Any, spec: Any) -> bool:
    if spec is INT:
        return isinstance(value, int) and not isinstance(value, bool)
    if spec is NUM:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if spec is bool:
        return isinstance(value, bool)
    if spec is str:
        return isinstance(value, str)
    if isinstance(spec, (dict, Map)):
        return isinstance(value, dict)
    if isinstance(spec, list):
        return isinstance(value, list)
    raise TypeError(f"not a spec: {spec!r}")


def check(value: Any, spec: Any, file: str, field: str = "") -> None:
    """Raise :class:`UnusableInput` naming ``file`` and the field when ``value`` does not fit."""
    if isinstance(spec, Opt):
        if value is None:
            return
        spec = spec.spec
    if not _fits(value, spec):
        raise UnusableInput(
            f"{file}: {field or 'the document'} should be {_words(spec)}, not {value!r:.60}."
        )
    if isinstance(spec, dict):
        for key, sub in spec.items():
            at = f"{field}.{key}" if field else key
            if isinstance(sub, Req):
                if key not in value:
                    raise UnusableInput(f"{file}: {field or 'the document'} has no {key!r}.")
                sub = sub.spec
            if key in value:
                check(value[key], sub, file, at)
    elif isinstance(spec, Map):
        for key, item in value.items():
            check(item, spec.values, file, f"{field}[{key!r}]")
    elif isinstance(spec, list):
        for i, item in enumerate(value):
            check(item, spec[0], file, f"{field}[{i}]")


_HISTOGRAM = {
    "count": INT,
    "hdr": Opt(str),
    "negative": Opt(INT),
    "clamped_high": Opt(INT),
    **dict.fromkeys(
        ("min_us", "mean_us", "p50_us", "p90_us", "p95_us", "p99_us", "p999_us", "max_us"), NUM
    ),
}

#: ``run.json`` (``telemetry/run_info.py``)
RUN = {
    "run_id": str,
    "mode": Opt(str),
    "started_at": Opt(str),
    "ended_at": Opt(str),
    "started_epoch_s": NUM,
    "ended_epoch_s": Opt(NUM),
    "duration_s": NUM,
    "locustfile": Opt(str),
    "scenario": Opt(str),
    "host": Opt(str),
    "user_classes": [str],
    "user_classes_count": Map(INT),
    "user_count": INT,
    "peak_users": INT,
    "worker_count": INT,
    "workers": [{"index": Opt(INT), "id": Opt(str), "host": Opt(str)}],
    "hosts": [str],
    "master": {
        "hostname": Req(Opt(str)),
        "platform": Req(Opt(str)),
        "cpu_count": Req(Opt(INT)),
        "argv": Req([str]),
    },
    "cross_host_timing": Opt(bool),
    "versions": Map(Opt(str)),
    "options": {},
    "e2e": {"grace_s": Opt(NUM), "drain_s": Opt(NUM), "complete": Opt(bool), "paths": [str]},
    "files": Map(Opt(str)),
}

_WORST = {"lost": INT, "max_total_us": NUM, "max_staleness_us": NUM}


def _worst(figure: str, spec: Any) -> dict[str, Any]:
    """A row of ``worst_devices[figure]``: the device, its subscriber, the figure."""
    return {"device_id": Req(str), "subscriber": Req(Opt(str)), figure: Req(spec)}


_PATH = {
    "src": Opt(str),
    "subscriber": Opt(str),
    "subscribers": Req(INT),
    "modes": Req([str]),
    "totals": {
        key: Req(INT)
        for key in (
            "published",
            "expected",
            "delivered",
            "duplicated",
            "reordered",
            "late",
            "lost",
            "lost_estimated",
            "devices_expected",
            "devices_seen",
        )
    },
    "snapshot": Req(
        {key: Req(INT) for key in ("batches", "updates", "repeats", "conflated", "regressions")}
    ),
    "latency": Map(_HISTOGRAM),
    "worst_devices": {key: [_worst(key, spec)] for key, spec in _WORST.items()},
}

#: ``e2e.json`` (``telemetry/collector.py``)
E2E = {
    "run_id": str,
    "grace_s": Opt(NUM),
    "drain_s": Opt(NUM),
    "complete": Opt(bool),
    "workers_reported": [str],
    "published": {"messages": Req(INT), "devices": Req(INT), "by_src": Map(INT)},
    "ignored": {key: Req(INT) for key in ("foreign_run", "untraced", "reports_of_other_runs")},
    "paths": Map(_PATH),
    "batch_push": Map(_HISTOGRAM),
    "subscribers": [
        {
            "id": Opt(str),
            "worker": Opt(str),
            "kind": Opt(str),
            "mode": Opt(str),
            "devices": Opt([str]),
            "untraced": INT,
            "batches": INT,
            "lost": INT,
            "lost_estimated": INT,
            "counters": Map(Map(INT)),
        }
    ],
    "schedule_lag": _HISTOGRAM,
    "loop_lag": Map(_HISTOGRAM),
}
