"""REST: health, stats, latest coordinates (read from Redis), device commands (to MQTT),
device messages in over HTTP (to Kafka, ``_ingest``).

Stored values are checked before they are decoded (size, nesting depth, a JSON
object): one bad value is skipped in the list (and counted in ``bad_latest``), and
answers 502 on its own, never a 500.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from redis.exceptions import RedisError

from pipeline.config import COUNTS_KEY, DEVICES_KEY, LATEST_KEY, TOTAL_KEY
from pipeline.exceptions import (
    CommandNotConfirmed,
    CommandUnavailable,
    IngestNotConfirmed,
    IngestUnavailable,
    Rejected,
)
from pipeline.gateway._ingest import STATUS
from pipeline.gateway._stream import decode_object

if TYPE_CHECKING:
    from pipeline.gateway.app import Gateway

#: no leading dot: ``.`` and ``..`` are path segments, never device ids
DEVICE_ID_PATTERN = r"^[A-Za-z0-9_:-][A-Za-z0-9_.:-]{0,127}$"
COMMAND_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
_REDIS_TIMEOUT_S = 2.0

router = APIRouter(prefix="/api")

DeviceId = Annotated[
    str,
    Path(
        pattern=DEVICE_ID_PATTERN,
        description="Device id, e.g. `robot-0007`.",
        examples=["robot-0007"],
    ),
]


def _gateway(request: Request) -> Gateway:
    return request.app.state.gateway  # type: ignore[no-any-return]


class CommandRequest(BaseModel):
    command: str = Field(
        pattern=COMMAND_PATTERN,
        description="`tracking`, `slam`, `none`, or a custom command (letters, digits, `_.-`).",
        examples=["tracking", "slam", "none"],
    )


class CommandAccepted(BaseModel):
    device_id: str
    command: str
    command_id: str = Field(description="uuid4 hex, also in the MQTT payload")
    topic: str = Field(description="MQTT topic the command was published on")
    issued_at: int = Field(description="epoch nanoseconds, also in the MQTT payload")


class Health(BaseModel):
    status: str = Field(description="`ok`, or `unavailable` with the parts in `down`")
    redis: str
    updates: str = Field(description="the Redis update stream reader (`subscribed` or `down`)")
    mqtt: str
    push_mode: str
    down: list[str] = []


class Stats(BaseModel):
    push_mode: str
    snapshot_interval_ms: int
    total_messages: int = Field(description="messages the consumer wrote to Redis")
    device_count: int
    per_device: dict[str, int] = Field(description="messages written per device")
    connections: dict[str, int]
    updates_received: int
    bad_updates: int
    bad_latest: int = Field(description="stored latest values skipped as not a JSON object")
    stream_id: str | None = Field(description="the last update stream id the gateway read")
    pushed: dict[str, int]
    dropped: dict[str, int] = Field(description="by `protocol:reason`")
    commands: dict[str, int]


async def _redis(coro: Any) -> Any:
    try:
        return await asyncio.wait_for(coro, _REDIS_TIMEOUT_S)
    except (RedisError, OSError, TimeoutError) as exc:
        raise HTTPException(503, f"Redis unavailable: {exc}") from None


@router.get("/health", response_model=Health, responses={503: {"model": Health}})
async def health(request: Request) -> JSONResponse:
    """Ready when Redis answers PING, the update subscription is live and MQTT is connected."""
    gw = _gateway(request)
    try:
        redis_ok = bool(await asyncio.wait_for(gw.redis.ping(), _REDIS_TIMEOUT_S))
    except (RedisError, OSError, TimeoutError):
        redis_ok = False
    parts = {
        "redis": "ok" if redis_ok else "down",
        "updates": "subscribed" if gw.reader.subscribed else "down",
        "mqtt": "ok" if gw.commands.connected else "down",
    }
    down = [name for name, state in parts.items() if state == "down"]
    body = {
        "status": "unavailable" if down else "ok",
        **parts,
        "push_mode": gw.settings.push_mode,
        "down": down,
    }
    return JSONResponse(body, status_code=503 if down else 200)


@router.get("/stats", response_model=Stats)
async def stats(request: Request) -> Stats:
    """Message totals from Redis plus the gateway's own connection and push counters."""
    gw = _gateway(request)
    pipe = gw.redis.pipeline(transaction=False)
    pipe.get(TOTAL_KEY)
    pipe.hgetall(COUNTS_KEY)
    pipe.zcard(DEVICES_KEY)
    total, counts, device_count = await _redis(pipe.execute())
    s = gw.stats
    return Stats(
        push_mode=gw.settings.push_mode,
        snapshot_interval_ms=gw.settings.snapshot_interval_ms,
        total_messages=_int(total),
        device_count=int(device_count),
        per_device={k.decode("utf-8", "replace"): _int(v) for k, v in counts.items()},
        connections=gw.hub.connections(),
        updates_received=s.updates,
        bad_updates=s.bad_updates,
        bad_latest=s.bad_latest,
        stream_id=gw.hub.last_id,
        pushed=dict(s.pushed),
        dropped={f"{p}:{r}": n for (p, r), n in s.dropped.items()},
        commands=dict(s.commands),
    )


def _int(raw: Any) -> int:
    """A stored counter; 0 when it is not a number (bad data is not worth a 500)."""
    try:
        return int(raw or 0)
    except ValueError:
        return 0


_LATEST_PREFIX = LATEST_KEY.split("{", 1)[0].encode()
_BATCH = 1000


@router.get("/coordinates")
async def coordinates(request: Request) -> list[dict[str, Any]]:
    """The latest message of every device, least recently updated first.

    A stored value that is not a JSON object (or is too large or too deeply
    nested) is left out and counted in `pipeline_gateway_bad_latest_total`.
    """
    gw = _gateway(request)
    devices = await _redis(gw.redis.zrange(DEVICES_KEY, 0, -1))
    limit = gw.hub.max_entry_bytes
    out = []
    for i in range(0, len(devices), _BATCH):
        keys = [_LATEST_PREFIX + d for d in devices[i : i + _BATCH]]
        for raw in await _redis(gw.redis.mget(keys)):
            if raw is None:  # expired (TTL) since the ZSET entry was written
                continue
            msg = decode_object(raw, limit)
            if msg is None:
                gw.stats.bad_latest += 1
                continue
            out.append(msg)
    return out


@router.get(
    "/coordinates/{device_id}",
    responses={
        404: {"description": "unknown device"},
        502: {"description": "the stored value is not a JSON object (or too large or deep)"},
    },
)
async def device_coordinates(device_id: DeviceId, request: Request) -> dict[str, Any]:
    """The latest message of one device; 404 when Redis holds none (unknown or expired)."""
    gw = _gateway(request)
    raw = await _redis(gw.redis.get(LATEST_KEY.format(device_id=device_id)))
    if raw is None:
        raise HTTPException(404, f"no coordinates for device {device_id!r}")
    msg = decode_object(raw, gw.hub.max_entry_bytes)
    if msg is None:
        gw.stats.bad_latest += 1
        detail = f"stored coordinates of {device_id!r} are not a JSON object of sane size and depth"
        raise HTTPException(502, detail)
    return msg


@router.post(
    "/commands/{device_id}",
    status_code=202,
    response_model=CommandAccepted,
    responses={
        404: {"description": "a device the pipeline has never seen; nothing was published"},
        422: {"description": "invalid device id or command; nothing was published"},
        503: {"description": "MQTT broker not connected; nothing was published"},
        504: {"description": "published, but the broker did not acknowledge in time"},
    },
)
async def send_command(device_id: DeviceId, body: CommandRequest, request: Request) -> Any:
    """Publish `{"device_id","command","command_id","issued_at"}` at QoS 1 on
    `orin/{device_id}/command`; answers 202 once the broker acknowledged it (PUBACK).
    Only devices the pipeline has stored a message of take commands (404 otherwise)."""
    gw = _gateway(request)
    if await _redis(gw.redis.zscore(DEVICES_KEY, device_id)) is None:
        gw.stats.commands["unknown_device"] += 1
        raise HTTPException(404, f"device {device_id!r} has never sent a message; nothing sent")
    try:
        issued = await gw.commands.publish(device_id, body.command)
    except CommandUnavailable as exc:
        gw.stats.commands["unavailable"] += 1
        raise HTTPException(503, str(exc)) from None
    except CommandNotConfirmed as exc:
        gw.stats.commands["unconfirmed"] += 1
        raise HTTPException(504, str(exc)) from None
    gw.stats.commands["accepted"] += 1
    return CommandAccepted(
        device_id=issued.device_id,
        command=issued.command,
        command_id=issued.command_id,
        topic=issued.topic,
        issued_at=issued.issued_at,
    )


_JSON = "application/json"


async def _read_body(request: Request, limit: int) -> tuple[bytes, int]:
    """The body, read up to ``limit + 1`` bytes; and the size the client sent (or declared)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return b"", int(declared)  # not worth reading
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            break
        chunks.append(chunk)
    return b"".join(chunks), size


@router.post(
    "/ingest/{device_id}",
    status_code=202,
    responses={
        202: {"description": 'in Kafka: `{"partition": 3, "offset": 1234}`'},
        400: {"description": "not a JSON object, or nested too deep (dead-lettered)"},
        413: {"description": "larger than MAX_PAYLOAD_BYTES (dead-lettered)"},
        422: {"description": "invalid device id, device_id mismatch or schema (dead-lettered)"},
        503: {"description": "Kafka cannot take it now; nothing was queued"},
        504: {"description": "queued, but Kafka did not acknowledge it within 10 s"},
    },
)
async def ingest(device_id: DeviceId, request: Request) -> Response:
    """A device message over HTTP instead of MQTT: the body is what a device publishes on
    `sensors/{device_id}/coordinates`, checked as the bridge checks it and produced into the
    same Kafka topic; answers 202 once Kafka acknowledged it. A rejected message is
    dead-lettered with its reason, as the bridge does, and answered with that reason."""
    gw = _gateway(request)
    body, size = await _read_body(request, gw.settings.max_payload_bytes)
    try:
        produced = await gw.ingest.submit(device_id, body, size)
    except Rejected as exc:
        gw.stats.ingest["rejected"] += 1
        detail = {"detail": str(exc), "reason": exc.reason}
        return JSONResponse(detail, status_code=STATUS.get(exc.reason, 400))
    except IngestUnavailable as exc:
        gw.stats.ingest["unavailable"] += 1
        raise HTTPException(503, str(exc)) from None
    except IngestNotConfirmed as exc:
        gw.stats.ingest["unconfirmed"] += 1
        raise HTTPException(504, str(exc)) from None
    gw.stats.ingest["accepted"] += 1
    # Written by hand: bytes on the wire are part of what the ingest comparison measures.
    content = b'{"partition":%d,"offset":%d}' % produced
    return Response(content, status_code=202, media_type=_JSON)
