"""The trace envelope, drawn below: the one place that builds and reads it.

A device message keeps its original fields and gains one ``trace`` object::

    {"device_id": "robot-0007", "x": 123.45, "y": 67.89, "timestamp": 1691234567.123,
     "trace": {"run": "<run id>", "seq": 42, "t0": <epoch ns>, "tp": <epoch ns>,
               "hops": {"bridge": <epoch ns>, "consumer": <epoch ns>, "gateway": <epoch ns>}}}

- ``seq`` counts per device from 1, +1 per publish.
- ``t0`` is the *intended* send time from the open-model schedule, ``tp`` the
  actual publish time; ``tp - t0`` is schedule lag (coordinated omission made visible).
- ``hops`` is written empty by publishers; each pipeline stage that knows the
  envelope stamps its own name (``HOPS``, in path order). A pipeline that does not
  know it leaves ``hops`` as it is, and end-to-end figures still work.
- ``t0`` and ``tp`` are on the run's clock, the Locust master's: a worker writes
  its own clock minus its measured offset (``telemetry.clock``), so a subscriber
  on another host compares them with its own corrected receive time. Hop stamps
  are the pipeline host's clock as it is.
- ``src`` (optional, pipeswarm's addition) names the entry protocol when it is not
  MQTT, e.g. ``"kafka"`` for messages produced straight into the Kafka topic.
  Absent means ``"mqtt"``.

A snapshot push (the gateway's ``snapshot`` mode) is a batch of such messages::

    {"type": "snapshot", "sent_ns": <epoch ns>, "devices": [<message>, ...]}

Building is a string template (about 1 µs for the standard fields; see
``docs/results.md`` for the measured figures), reading one ``json.loads``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from json.encoder import encode_basestring_ascii as _js
from typing import Any

from telemetry._offset import state as _clock
from telemetry.stages import STAMPS

__all__ = [
    "HOPS",
    "DEFAULT_SRC",
    "Trace",
    "Snapshot",
    "build",
    "wrap",
    "read",
    "parse",
    "parse_snapshot",
    "from_message",
]

#: Pipeline stages that stamp the envelope, in path order (``telemetry.stages``).
HOPS: tuple[str, ...] = STAMPS
#: Entry protocol assumed when a trace carries no ``src``.
DEFAULT_SRC = "mqtt"

_STANDARD = (
    '{"device_id":%s,"x":%r,"y":%r,"timestamp":%r,'
    '"trace":{"run":%s,"seq":%d,"t0":%d,"tp":%d,"hops":{}}}'
)
_STANDARD_SRC = (
    '{"device_id":%s,"x":%r,"y":%r,"timestamp":%r,'
    '"trace":{"run":%s,"seq":%d,"t0":%d,"tp":%d,"src":%s,"hops":{}}}'
)


@dataclass(slots=True)
class Trace:
    """What a subscriber needs from one received message.

    ``hops`` holds only the stamps that are present and positive (epoch ns).
    ``fields`` is the whole decoded message, for callers that want the coordinates.
    """

    device_id: str
    run: str
    seq: int
    t0: int
    tp: int
    hops: dict[str, int]
    src: str = DEFAULT_SRC
    fields: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass(slots=True)
class Snapshot:
    """A snapshot batch: ``sent_ns`` (0 when absent) and the traced device messages.

    ``untraced`` counts entries of the batch without a valid trace.
    """

    sent_ns: int
    traces: list[Trace]
    untraced: int = 0


def build(
    device_id: str,
    x: float,
    y: float,
    *,
    run: str,
    seq: int,
    t0: int,
    tp: int | None = None,
    timestamp: float | None = None,
    src: str = DEFAULT_SRC,
) -> bytes:
    """Encode the original coordinate message plus its trace, as UTF-8 JSON bytes.

    ``t0`` and ``tp`` are this process's clock; ``tp`` defaults to now
    (``time.time_ns()``). Both are written on the master's clock (minus this
    worker's offset, ``telemetry.clock``; 0 in a local run) and ``timestamp``
    (the original field, epoch seconds) defaults to that ``tp / 1e9``.
    ``x``/``y`` must be finite numbers.

    >>> build("robot-1", 1.5, 2.0, run="r", seq=1, t0=10, tp=20, timestamp=1.0)
    b'{"device_id":"robot-1","x":1.5,"y":2.0,"timestamp":1.0,"trace":{"run":"r","seq":1,"t0":10,"tp":20,"hops":{}}}'
    """
    if tp is None:
        tp = time.time_ns()
    offset = _clock.offset_ns
    t0 -= offset
    tp -= offset
    if timestamp is None:
        timestamp = tp / 1e9
    fields = (_js(device_id), float(x), float(y), float(timestamp), _js(run), seq, t0, tp)
    if src == DEFAULT_SRC:
        text = _STANDARD % fields
    else:
        text = _STANDARD_SRC % (*fields, _js(src))
    return text.encode()


def wrap(
    fields: Mapping[str, Any],
    *,
    run: str,
    seq: int,
    t0: int,
    tp: int | None = None,
    src: str = DEFAULT_SRC,
) -> bytes:
    """Encode any message body (a payload template's fields) plus its trace.

    ``fields`` must contain ``device_id``; a ``trace`` key in it is replaced.
    Slower than :func:`build` (a dict copy and ``json.dumps``, ~3-4 µs). Times as
    in :func:`build`: this process's clock in, the master's clock out.
    """
    offset = _clock.offset_ns
    trace: dict[str, Any] = {
        "run": run,
        "seq": seq,
        "t0": t0 - offset,
        "tp": (tp or time.time_ns()) - offset,
    }
    if src != DEFAULT_SRC:
        trace["src"] = src
    trace["hops"] = {}
    body = dict(fields)
    body["trace"] = trace
    return json.dumps(body, separators=(",", ":")).encode()


def _load(data: bytes | bytearray | memoryview | str | Mapping[str, Any]) -> Any:
    if isinstance(data, Mapping):
        return data
    try:
        if isinstance(data, memoryview):
            data = data.tobytes()
        return json.loads(data)
    except (ValueError, TypeError):  # UnicodeDecodeError is a ValueError
        return None


def from_message(msg: Any) -> Trace | None:
    """Read a trace from an already decoded message object; None when it has none."""
    if not isinstance(msg, dict):
        return None
    trace = msg.get("trace")
    if not isinstance(trace, dict):
        return None
    device_id = msg.get("device_id")
    run = trace.get("run")
    seq = trace.get("seq")
    t0 = trace.get("t0")
    tp = trace.get("tp")
    # bool is an int subclass: refuse it explicitly.
    if (
        type(device_id) is not str
        or type(run) is not str
        or type(seq) is not int
        or type(t0) is not int
        or type(tp) is not int
        or seq < 1
        or t0 <= 0
        or tp <= 0
    ):
        return None
    hops: dict[str, int] = {}
    raw_hops = trace.get("hops")
    if isinstance(raw_hops, dict):
        for name, value in raw_hops.items():
            if type(value) is int and value > 0:
                hops[name] = value
    src = trace.get("src")
    return Trace(
        device_id,
        run,
        seq,
        t0,
        tp,
        hops,
        src if type(src) is str and src else DEFAULT_SRC,
        msg,
    )


def _snapshot_from(msg: dict[str, Any]) -> Snapshot | None:
    devices = msg.get("devices")
    if not isinstance(devices, list):
        return None
    sent = msg.get("sent_ns")
    traces: list[Trace] = []
    untraced = 0
    for entry in devices:
        tr = from_message(entry)
        if tr is None:
            untraced += 1
        else:
            traces.append(tr)
    return Snapshot(sent if type(sent) is int and sent > 0 else 0, traces, untraced)


def read(
    data: bytes | bytearray | memoryview | str | Mapping[str, Any],
) -> Trace | Snapshot | None:
    """Decode one pushed frame: a traced message, a snapshot batch, or None.

    None means garbage (not JSON, wrong types) or a message without a trace.
    """
    msg = _load(data)
    if isinstance(msg, dict) and msg.get("type") == "snapshot":
        return _snapshot_from(msg)
    return from_message(msg)


def parse(data: bytes | bytearray | memoryview | str | Mapping[str, Any]) -> Trace | None:
    """Decode one message and return its trace, or None (no trace, or not valid)."""
    return from_message(_load(data))


def parse_snapshot(
    data: bytes | bytearray | memoryview | str | Mapping[str, Any],
) -> Snapshot | None:
    """Decode a snapshot batch ``{"type": "snapshot", ...}``; None for anything else."""
    msg = _load(data)
    if isinstance(msg, dict) and msg.get("type") == "snapshot":
        return _snapshot_from(msg)
    return None
