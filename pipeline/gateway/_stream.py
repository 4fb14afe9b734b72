"""The update stream as the gateway reads it: entry ids, stored JSON, trimming.

Stream ids are ``<ms>-<seq>`` (https://redis.io/docs/latest/develop/data-types/streams/#entry-ids);
they order the entries, so a client that kept the last id it saw can ask for
everything after it. Stored data is never trusted: a value that is not a JSON
object, is larger than the gateway's limit or is nested deeper than
:data:`pipeline._schema.MAX_DEPTH` decodes to ``None`` (a 2 KB value nested ~1,000
deep would make ``json.loads`` raise RecursionError, so depth is checked first).
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from redis.exceptions import ResponseError

from pipeline._schema import MAX_DEPTH, depth
from pipeline.config import STREAM_FIELD, UPDATES_STREAM

if TYPE_CHECKING:
    import redis.asyncio as aredis

#: An id as a client may send it: ``<ms>-<seq>`` or ``<ms>`` (read as ``<ms>-0``).
_ID = re.compile(r"(\d{1,20})(?:-(\d{1,20}))?")
_U64 = 1 << 64

StreamKey = tuple[int, int]


def parse_id(text: str) -> StreamKey | None:
    """``"1700000000000-3"`` -> ``(1700000000000, 3)``; None when it is not a stream id."""
    match = _ID.fullmatch(text)
    if match is None:
        return None
    ms, seq = int(match[1]), int(match[2] or 0)
    if ms >= _U64 or seq >= _U64:
        return None
    return ms, seq


def key_of(stream_id: str) -> StreamKey:
    """The order of an id Redis gave us (always well formed)."""
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


def id_text(raw: Any) -> str:
    """An id as redis-py returns it (bytes from a client that does not decode)."""
    return raw.decode() if isinstance(raw, bytes) else str(raw)


#: What XRANGE returns, and XREAD per stream: (id, {field: value}) in id order.
Entries = list[tuple[bytes, dict[bytes, bytes]]]


def format_id(key: StreamKey) -> str:
    return f"{key[0]}-{key[1]}"


def decode_object(raw: bytes | None, max_bytes: int) -> dict[str, Any] | None:
    """A stored JSON object, or None when it is missing, too big, too deep or not one."""
    if raw is None or len(raw) > max_bytes or depth(raw) > MAX_DEPTH:
        return None
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    return value if isinstance(value, dict) else None


def entry_payload(fields: Any) -> bytes | None:
    """The message JSON of one stream entry (field ``m``), None when it has none."""
    if not isinstance(fields, dict):
        return None
    raw = fields.get(STREAM_FIELD)
    return raw if isinstance(raw, bytes) else None


async def trimmed_after(client: aredis.Redis, after: StreamKey) -> bool | None:
    """Whether entries newer than ``after`` may have been trimmed from the stream.

    True when the stream has lost entries (``entries-added`` > ``length``; Redis
    < 7 does not say, so any loss is assumed) and its oldest remaining entry (or,
    when it is empty, its last id) is newer than ``after``. None when there is no
    stream yet. Raises RedisError when Redis does not answer or the key is not a
    stream.
    """
    try:
        info = await client.xinfo_stream(UPDATES_STREAM)
    except ResponseError as exc:
        if "no such key" in str(exc).lower():
            return None
        raise
    length = int(info.get("length") or 0)
    added = info.get("entries-added")
    if added is not None and int(added) <= length:
        return False  # nothing was ever trimmed or deleted
    first = info.get("first-entry")
    oldest = first[0] if first else info.get("last-generated-id")
    if oldest is None:
        return False
    return key_of(id_text(oldest)) > after
