"""What a device says: the original coordinates on a smooth path, or a JSON template.

The default message is the original Jetson one, ``{"device_id","x","y","timestamp"}``,
with x/y moving on a circle (a different centre, radius, speed and phase per
device), built by :func:`telemetry.envelope.build` (the fast path, ~1 µs).

A template is a JSON object in a file; top-level string values that are exactly
``"{device_id}"``, ``"{x}"``, ``"{y}"``, ``"{timestamp}"`` or ``"{seq}"`` are
replaced by the current value (numbers stay numbers), everything else is sent
as written. ``device_id`` is always set (the trace keys on it). Such messages
go through :func:`telemetry.envelope.wrap` (``json.dumps``, ~3-4 µs)::

    {"device_id": "{device_id}", "x": "{x}", "y": "{y}", "timestamp": "{timestamp}",
     "battery": 87, "mode": "tracking"}
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

from users.exceptions import ConfigError

__all__ = ["PLACEHOLDERS", "Template", "Trajectory", "load_template"]

PLACEHOLDERS = ("device_id", "x", "y", "timestamp", "seq")


class Trajectory:
    """A point moving on a circle: smooth, bounded, different per device."""

    __slots__ = ("cx", "cy", "r", "w", "phase", "t_start")

    def __init__(self, rng: random.Random | None = None, t_start: float = 0.0) -> None:
        rng = rng or random.Random()
        self.cx = rng.uniform(100.0, 900.0)
        self.cy = rng.uniform(100.0, 900.0)
        self.r = rng.uniform(20.0, 80.0)
        self.w = 2 * math.pi / rng.uniform(20.0, 60.0)  # one lap in 20-60 s
        self.phase = rng.uniform(0.0, 2 * math.pi)
        self.t_start = t_start

    def at(self, t: float) -> tuple[float, float]:
        """Position at epoch second ``t``, rounded to 0.01 like the original devices."""
        a = self.w * (t - self.t_start) + self.phase
        return round(self.cx + self.r * math.cos(a), 2), round(self.cy + self.r * math.sin(a), 2)


class Template:
    """A compiled payload template (see the module docstring)."""

    __slots__ = ("fields", "slots")

    def __init__(self, fields: dict[str, Any]) -> None:
        self.fields = dict(fields)
        self.slots = [
            (key, value[1:-1])
            for key, value in fields.items()
            if isinstance(value, str)
            and value[1:-1] in PLACEHOLDERS
            and value == "{" + value[1:-1] + "}"
        ]

    def render(
        self, device_id: str, x: float, y: float, timestamp: float, seq: int
    ) -> dict[str, Any]:
        values = {"device_id": device_id, "x": x, "y": y, "timestamp": timestamp, "seq": seq}
        body = dict(self.fields)
        for key, placeholder in self.slots:
            body[key] = values[placeholder]
        body["device_id"] = device_id
        return body


_templates: dict[str, tuple[float, Template]] = {}


def load_template(path: str) -> Template:
    """Read and compile a template file (cached until the file changes)."""
    p = Path(path)
    try:
        mtime = p.stat().st_mtime
        hit = _templates.get(path)
        if hit is not None and hit[0] == mtime:
            return hit[1]
        doc = json.loads(p.read_text())
    except OSError as err:
        raise ConfigError(
            f"--payload-template {path!r}: cannot read it ({err.strerror})."
        ) from None
    except ValueError as err:
        raise ConfigError(f"--payload-template {path!r}: not valid JSON ({err}).") from None
    if not isinstance(doc, dict):
        raise ConfigError(
            f"--payload-template {path!r}: must hold one JSON object, not {type(doc).__name__}."
        )
    template = Template(doc)
    _templates[path] = (mtime, template)
    return template
