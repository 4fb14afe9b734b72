"""What the pipeline accepts from a device: the checks at the edge, in one place.

The bridge (MQTT -> Kafka) and the consumer (Kafka -> Redis, for records that
were produced straight into Kafka) run the same :func:`parse`, so a record is
judged the same way whichever door it came in by. Anything it rejects carries
one of :data:`REASONS` and goes to the dead-letter topic; nothing it rejects may
reach Redis, and nothing it accepts can make a later stage fail.

- The topic is the identity: ``sensors/{id}/coordinates`` (or the Kafka key).
  A payload without ``device_id`` (the original IoT server's format) gets it
  filled in; one whose ``device_id`` differs is ``device_mismatch``.
- ``x``, ``y`` and ``timestamp`` are finite numbers (``schema`` otherwise), and
  no number anywhere is NaN, Infinity or out of float range (``schema``): they
  would decode, then make the next stage's ``dumps`` fail.
- JSON nested deeper than :data:`MAX_DEPTH` is ``too_deep``: checked on the raw
  bytes *before* decoding, because a 2 KB message nested ~1,000 deep makes
  ``json`` raise RecursionError in whatever stage touches it next.
"""

from __future__ import annotations

import base64
import json
import math
import re
from typing import Any, NamedTuple

from pipeline.exceptions import Rejected

#: Deepest JSON nesting accepted (the envelope itself needs 3: {trace: {hops: {}}}).
MAX_DEPTH = 32

#: Every reason a record can be dead-lettered for, in the order they are checked.
REASONS = (
    "oversize",
    "too_deep",
    "malformed_json",
    "missing_device_id",
    "device_mismatch",
    "schema",
    "internal_error",
)

NUMBER_FIELDS = ("x", "y", "timestamp")

_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)


def device_from_topic(topic: str) -> str | None:
    """``sensors/robot1/coordinates`` -> ``robot1``; None for any other shape."""
    parts = topic.split("/")
    if len(parts) == 3 and parts[0] == "sensors" and parts[2] == "coordinates" and parts[1]:
        return parts[1]
    return None


def depth(payload: bytes) -> int:
    """Deepest nesting of ``{``/``[`` outside strings (0 for a scalar)."""
    if payload.count(b"{") + payload.count(b"[") <= MAX_DEPTH:
        return payload.count(b"{") + payload.count(b"[")  # an upper bound, and small: fine
    deepest = level = 0
    for match in _TOKENS.finditer(payload):
        token = match.group()
        if token in (b"{", b"["):
            level += 1
            deepest = max(deepest, level)
        elif token in (b"}", b"]"):
            level -= 1
    return deepest


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # "1e400" decodes to inf
        raise Rejected("schema", f"number {text[:40]} is out of range")
    return value


def _no_constant(name: str) -> float:
    raise Rejected("schema", f"{name} is not a finite number")


# One decoder built once: json.loads(..., parse_float=...) would build one per call.
_DECODER = json.JSONDecoder(parse_float=_finite_float, parse_constant=_no_constant)


def _finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class Decoded(NamedTuple):
    """What :func:`decode` accepted: the message, and whether ``device_id`` was filled in."""

    message: dict[str, Any]
    filled: bool


def parse(payload: bytes, device_id: str | None, max_bytes: int) -> dict[str, Any]:
    """Decode and check one device message; return it with ``device_id`` set.

    ``device_id`` is the identity the transport gives (topic or Kafka key), or
    None when it gives none. Raises :class:`Rejected` with the reason.
    """
    return decode(payload, device_id, max_bytes).message


def decode(payload: bytes, device_id: str | None, max_bytes: int) -> Decoded:
    """:func:`parse`, also saying whether ``device_id`` was filled in from the transport
    (the message then differs from ``payload`` and must be re-serialised to pass on)."""
    if len(payload) > max_bytes:
        raise Rejected("oversize", f"{len(payload)} bytes > {max_bytes}")
    if depth(payload) > MAX_DEPTH:
        raise Rejected("too_deep", f"JSON nested deeper than {MAX_DEPTH}")
    try:
        message = _DECODER.decode(payload.decode("utf-8"))
    except Rejected:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise Rejected("malformed_json", str(exc)[:200]) from None
    if not isinstance(message, dict):
        raise Rejected("malformed_json", "not a JSON object")
    claimed = message.get("device_id")
    filled = False
    if device_id is None:
        if not isinstance(claimed, str) or not claimed:
            raise Rejected("missing_device_id")
    elif claimed is None:
        message["device_id"] = device_id
        filled = True
    elif claimed != device_id:
        raise Rejected("device_mismatch", f"payload says {claimed!r}, topic says {device_id!r}")
    for name in NUMBER_FIELDS:
        if not _finite_number(message.get(name)):
            raise Rejected("schema", f"{name} must be a finite number")
    return Decoded(message, filled)


def dumps(message: dict[str, Any]) -> bytes:
    """The compact JSON every stage writes (no NaN: :func:`parse` rejected those)."""
    return json.dumps(message, separators=(",", ":"), allow_nan=False).encode()


def dead_letter(
    payload: bytes,
    max_bytes: int,
    *,
    reason: str,
    detail: str,
    topic: str,
    received_ns: int,
    size: int | None = None,
    **extra: Any,
) -> bytes:
    """The dead-letter record of a rejected device message (the bridge's and the gateway's
    ingest's alike): the reason, up to ``max_bytes`` of the payload (as text, or base64 when
    it is not UTF-8), where it came from; JSON bytes for the DLQ topic. ``size``: the
    message's whole size when ``payload`` is already cut."""
    kept = payload[:max_bytes]
    size = len(payload) if size is None else size
    try:
        text: dict[str, Any] = {"payload": kept.decode("utf-8")}
    except UnicodeDecodeError:
        text = {"payload_base64": base64.b64encode(kept).decode()}
    record = {
        "reason": reason,
        "detail": detail[:300],
        "topic": topic,
        **extra,
        "size": size,
        "truncated": size > len(kept),
        "received_ns": received_ns,
        **text,
    }
    return json.dumps(record, separators=(",", ":")).encode()
