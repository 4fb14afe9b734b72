"""The SLO file: its keys, :func:`parse` (a loaded YAML document) and :func:`load` (a path).

The format is described in ``telemetry.slo`` and ``docs/slo.example.yaml``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from telemetry.exceptions import SloError

__all__ = [
    "PATH_KEYS",
    "PERCENTILES",
    "REQUEST_KEYS",
    "TOP_KEYS",
    "Objective",
    "Slo",
    "load",
    "parse",
]

#: Figure key -> percentile (``max`` is the 100th).
PERCENTILES: dict[str, float] = {
    "p50_ms": 50.0,
    "p90_ms": 90.0,
    "p95_ms": 95.0,
    "p99_ms": 99.0,
    "p999_ms": 99.9,
    "max_ms": 100.0,
}

# objective key -> (figure name, "<=" or ">=", unit)
Objective = tuple[str, str, str]

TOP_KEYS: dict[str, Objective] = {
    **{f"e2e_{k}": (k, "<=", "ms") for k in PERCENTILES},
    "loss_ratio_max": ("loss_ratio", "<=", "ratio"),
    "failure_ratio_max": ("failure_ratio", "<=", "ratio"),
    "min_delivered_per_s": ("delivered_per_s", ">=", "/s"),
    "schedule_lag_p99_ms": ("schedule_lag_p99_ms", "<=", "ms"),
    "loop_lag_p99_ms": ("loop_lag_p99_ms", "<=", "ms"),
    # --faults: the most messages one phase lost, the longest recovery (backlog drained)
    "fault_loss_max": ("fault_loss", "<=", ""),
    "recovery_s_max": ("recovery_s", "<=", " s"),
}
REQUEST_KEYS: dict[str, Objective] = {
    **{k: (k, "<=", "ms") for k in ("p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms")},
    "failure_ratio_max": ("failure_ratio", "<=", "ratio"),
    "min_rps": ("rps", ">=", "/s"),
}
PATH_KEYS: dict[str, Objective] = {
    **{k: (k, "<=", "ms") for k in PERCENTILES},
    "loss_ratio_max": ("loss_ratio", "<=", "ratio"),
    "min_delivered_per_s": ("delivered_per_s", ">=", "/s"),
}
_SECTIONS = {"requests": REQUEST_KEYS, "paths": PATH_KEYS}


@dataclass(frozen=True, slots=True)
class Slo:
    """Parsed objectives, in file order: ``top`` key -> threshold; sections name -> key -> threshold."""

    source: str
    top: dict[str, float] = field(default_factory=dict)
    requests: dict[str, dict[str, float]] = field(default_factory=dict)
    paths: dict[str, dict[str, float]] = field(default_factory=dict)


def _threshold(source: str, where: str, key: str, value: Any, unit: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SloError(f"SLO file {source}: {where}{key} must be a number, not {value!r}.")
    if value < 0:
        raise SloError(f"SLO file {source}: {where}{key} must not be negative ({value}).")
    if unit == "ratio" and value > 1:
        raise SloError(f"SLO file {source}: {where}{key} is a ratio between 0 and 1, not {value}.")
    return float(value)


def _unknown(source: str, where: str, key: Any, known: Iterable[str]) -> SloError:
    return SloError(
        f"SLO file {source}: unknown key {key!r}{' under ' + where.rstrip('.') if where else ''} "
        f"(known: {', '.join(known)})."
    )


def parse(doc: Any, source: str = "<slo>") -> Slo:
    """Validate a loaded YAML document; raise :class:`SloError` naming the first problem."""
    if not isinstance(doc, dict) or not doc:
        raise SloError(
            f"SLO file {source} must be a mapping of objectives, e.g. 'e2e_p99_ms: 100'."
        )
    slo = Slo(source)
    for key, value in doc.items():
        if key in TOP_KEYS:
            slo.top[key] = _threshold(source, "", key, value, TOP_KEYS[key][2])
        elif key in _SECTIONS:
            known = _SECTIONS[key]
            target = slo.requests if key == "requests" else slo.paths
            if not isinstance(value, dict):
                raise SloError(
                    f"SLO file {source}: {key} must map names to objectives, "
                    f'e.g. {key}: {{"<name>": {{p95_ms: 100}}}}.'
                )
            for name, objectives in value.items():
                where = f"{key}[{str(name)!r}]."
                if not isinstance(objectives, dict) or not objectives:
                    raise SloError(
                        f"SLO file {source}: {where.rstrip('.')} must be a mapping such as "
                        "{p95_ms: 100}."
                    )
                entry = target.setdefault(str(name), {})
                for sub, threshold in objectives.items():
                    if sub not in known:
                        raise _unknown(source, where, sub, known)
                    entry[sub] = _threshold(source, where, sub, threshold, known[sub][2])
        else:
            raise _unknown(source, "", key, [*TOP_KEYS, *_SECTIONS])
    return slo


def load(path: str | Path) -> Slo:
    """Read and validate an SLO file (:class:`SloError` on any problem)."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SloError(f"SLO file {source} does not exist.") from None
    except IsADirectoryError:
        raise SloError(f"SLO file {source} is a directory, not a YAML file.") from None
    except (OSError, UnicodeDecodeError) as err:
        raise SloError(f"SLO file {source} cannot be read ({err}).") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or "syntax error"
        raise SloError(f"SLO file {source} is not valid YAML{at}: {problem}.") from None
    return parse(doc, source)
