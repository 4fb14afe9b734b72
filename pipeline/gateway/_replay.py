"""Resume after a reconnect: replay what a client missed, then hand it to the live fan-out.

A client that kept the last stream id it saw subscribes again with it (STOMP
``since`` header on SUBSCRIBE, raw WebSocket ``/coordinates?since=``). Its
subscription is registered behind a :class:`Gate` *before* the replay reads
anything, so every live update from then on is either buffered by the gate or
read by the replay; the seam between the two is cut by stream id:

1. ``XRANGE (cursor +`` in chunks of :data:`CHUNK`, each entry that matches the
   destination delivered, ``cursor`` = the last id read, until a chunk comes back
   short (the replay has reached the end of the stream as it was then).
2. The gate's buffer is drained in order, skipping ids <= ``cursor`` (read by
   the replay already). If the buffer overflowed meanwhile (a long replay under
   load), what it dropped is still in the stream: back to 1 from ``cursor``.
3. The client joins the live sets. Should the gateway's own reader still be
   behind ``cursor``, the gate stays in place and drops live ids <= ``cursor``
   until the reader passes it.

A replay starts only once the reader has noted where it starts (a client back
before a restarted gateway's reader): the reader skips what is older than that
point, so the replay has to reach it.

So the client gets every entry after ``since`` once and in stream order. The
replay waits for room in the client's queue rather than dropping frames. When
entries after ``since`` have already been trimmed (``MAXLEN``), it replays from
the oldest entry and marks the first frame it delivers (STOMP header
``replay-truncated:true``, raw WebSocket field ``"replay_truncated": true``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import cast

import redis.asyncio as aredis
from redis.exceptions import RedisError

from pipeline.config import UPDATES_STREAM
from pipeline.gateway._hub import Encoded, Hub, Outbox, Subscription, encode_update
from pipeline.gateway._metrics import GatewayStats
from pipeline.gateway._stream import (
    Entries,
    StreamKey,
    entry_payload,
    format_id,
    id_text,
    key_of,
    trimmed_after,
)

log = logging.getLogger("pipeline.gateway")

#: Entries per XRANGE: bounded work (and memory) per round trip.
CHUNK = 500
#: Redis connections all replays share: after a gateway restart every client resubscribes
#: at once, and one connection each would be thousands (Redis' maxclients is 10,000).
#: Commands are short and a replay holds a connection only for one, so they take turns.
REPLAY_CONNECTIONS = 16
_REPLAY_TIMEOUT_S = 5.0  # per command, once it has a connection


class Gate:
    """A client whose replay is running: live updates are buffered, then de-duplicated."""

    __slots__ = (
        "target",
        "device_id",
        "buffer",
        "cap",
        "overflowed",
        "replaying",
        "floor",
        "mark",
        "start",
    )

    def __init__(
        self, target: Outbox | Subscription, device_id: str | None, cap: int, start: StreamKey
    ) -> None:
        self.target = target
        self.start = start  # the hub's position when the gate went up: later ids are buffered
        self.device_id = device_id  # None: every device
        self.buffer: deque[Encoded] = deque()
        self.cap = max(cap, 16)
        self.overflowed = False
        self.replaying = True
        self.floor: StreamKey | None = None  # after the replay: ids <= floor were delivered
        self.mark = False  # the replay was truncated: say so on the first frame delivered

    @property
    def outbox(self) -> Outbox:
        return self.target if isinstance(self.target, Outbox) else self.target.outbox

    def offer(self, enc: Encoded) -> bool:
        """A live update (from the hub); True when the client may now join the live sets."""
        if self.replaying:
            if self.device_id is None or enc.device_id == self.device_id:
                if len(self.buffer) >= self.cap:
                    self.buffer.clear()  # still in the stream: the replay reads them again
                    self.overflowed = True
                self.buffer.append(enc)
            return False
        if self.floor is not None and enc.key <= self.floor:
            return False
        if self.device_id is None or enc.device_id == self.device_id:
            self.deliver(enc, enc.t_received)
        return not self.mark

    def deliver(self, enc: Encoded, t_received: float) -> None:
        target = self.target
        if isinstance(target, Outbox):
            if self.mark:
                self.mark = False
                target.push(enc.ws[:-1] + ',"replay_truncated":true}', t_received)
            else:
                target.push(enc.ws_frame, t_received)
        elif self.mark:
            self.mark = False
            target.push("\nreplay-truncated:true" + enc.tail, t_received, enc.number)
        else:
            target.outbox.push(enc.stomp.frame(target.head), t_received)


class Replayer:
    """Runs replays against Redis with a client of its own (bytes, never decoded)."""

    def __init__(self, redis_url: str, hub: Hub, stats: GatewayStats) -> None:
        self.hub = hub
        self.stats = stats
        pool = aredis.BlockingConnectionPool.from_url(
            redis_url,
            max_connections=REPLAY_CONNECTIONS,
            timeout=None,  # wait for a turn; a client that leaves cancels its replay
            socket_timeout=_REPLAY_TIMEOUT_S,
            socket_connect_timeout=2,
        )
        self.client = aredis.Redis.from_pool(pool)

    def start(
        self,
        target: Outbox | Subscription,
        device_id: str | None,
        since: StreamKey,
        on_failed: Callable[[], None],
    ) -> asyncio.Task[None]:
        """Put ``target`` behind a gate and replay into it; ``on_failed`` if Redis fails."""
        outbox = target if isinstance(target, Outbox) else target.outbox
        gate = Gate(target, device_id, outbox.limit // 2, self.hub.last_key)
        self.hub.gated[target] = gate
        return asyncio.create_task(self._run(gate, since, on_failed))

    async def _run(self, gate: Gate, since: StreamKey, on_failed: Callable[[], None]) -> None:
        if not self.hub.started.is_set():
            # A gateway just started: its reader will skip what is older than the end
            # it notes, so a replay read before that could stop short of it (a gap).
            await self.hub.started.wait()
            gate.start = self.hub.last_key
        await self._replay_reporting(gate, since, on_failed)

    async def _replay_reporting(
        self, gate: Gate, since: StreamKey, on_failed: Callable[[], None]
    ) -> None:
        protocol = gate.outbox.protocol
        try:
            truncated = await self.replay(gate, since)
        except asyncio.CancelledError:
            raise
        except (RedisError, OSError, TimeoutError) as exc:
            self.stats.replays[(protocol, "failed")] += 1
            log.warning("event=replay_failed protocol=%s error=%r", protocol, str(exc))
            self.hub.gated.pop(gate.target, None)
            on_failed()
            return
        except Exception:  # a bug must not take the connection's loop down silently
            self.stats.replays[(protocol, "failed")] += 1
            log.exception("event=replay_failed protocol=%s", protocol)
            self.hub.gated.pop(gate.target, None)
            on_failed()
            return
        self.stats.replays[(protocol, "truncated" if truncated else "complete")] += 1

    async def replay(self, gate: Gate, since: StreamKey) -> bool:
        """Deliver every matching entry after ``since``, then admit; True if truncated."""
        client = self.client
        hub = self.hub
        outbox = gate.outbox
        protocol = outbox.protocol
        max_bytes = hub.max_entry_bytes
        needle = gate.device_id.encode() if gate.device_id is not None else None
        cursor = since
        truncated = False
        if await trimmed_after(client, since):
            truncated = gate.mark = True
        last = cast(Entries, await client.xrevrange(UPDATES_STREAM, count=1))
        if last and key_of(id_text(last[0][0])) < since:
            # An id this stream never reached (Redis lost its data): the client may have
            # missed anything; it gets what is new from the moment it subscribed. (Not
            # from the stream's end as read now: entries after the gate went up may be
            # in the buffer already, and skipping to the end would drop them.)
            truncated = gate.mark = True
            cursor = gate.start if gate.start > (0, 0) else key_of(id_text(last[0][0]))
        while True:
            gate.overflowed = False
            entries = cast(
                Entries,
                await client.xrange(
                    UPDATES_STREAM, min="(" + format_id(cursor), max="+", count=CHUNK
                ),
            )
            t_read = time.perf_counter()
            for raw_id, fields in entries:
                stream_id = id_text(raw_id)
                cursor = key_of(stream_id)
                raw = entry_payload(fields)
                if needle is not None and (raw is None or needle not in raw):
                    continue  # cheap: the id is in the JSON of every entry of that device
                enc = encode_update(raw, stream_id, max_bytes, t_read)
                if enc is None or (gate.device_id is not None and enc.device_id != gate.device_id):
                    continue
                if len(outbox.items) > outbox.limit // 2:
                    await outbox.wait_for_room()
                if outbox.closed:
                    return truncated
                gate.deliver(enc, t_read)
                self.stats.replayed[protocol] += 1
            if len(entries) == CHUNK or gate.overflowed:
                continue
            # The stream as it was when read is delivered; now what came in meanwhile.
            while gate.buffer and not gate.overflowed:
                enc = gate.buffer.popleft()
                if enc.key <= cursor:
                    continue
                if len(outbox.items) > outbox.limit // 2:
                    await outbox.wait_for_room()
                    if outbox.closed:
                        return truncated
                    if gate.overflowed:
                        break  # the buffer lost entries after this one: read them again
                gate.deliver(enc, enc.t_received)
                cursor = enc.key
            if gate.overflowed:
                continue
            break
        # Nothing awaited from here on: no update can slip between the drain and the admit.
        gate.replaying = False
        gate.floor = cursor
        if hub.last_key >= cursor and not gate.mark:
            hub.admit(gate)
        return truncated
