"""The one reader of the update stream: ``XREAD BLOCK`` from the last id seen, forever.

Pub/sub loses whatever is published while the subscriber is away; a stream
keeps it. So the reader remembers the id of the last entry it handed to the hub
and, after a lost connection or a Redis restart, reads on from exactly there:
nothing in between is skipped. Should the stream have been trimmed past that id
meanwhile (``MAXLEN``: the gateway was paused, cut off or too slow for the
window), those entries are gone: counted in ``stream_gaps`` and logged. The
check rides along with every read (``XRANGE - + COUNT 1`` pipelined before the
``XREAD``), so it costs no round trip.

At start it notes the stream's last id, seeds the hub with the latest value of
every device (so a snapshot after a gateway restart holds every device), then
reads from the noted id: an update that lands between the two is seen twice
(harmless: the newer one wins), never missed. Bad stored data — an entry that is
not a JSON object with ``device_id``, too large, or nested too deep — is counted
and skipped; the reader moves past it and never stops on it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, cast

import redis.asyncio as aredis
from redis.exceptions import RedisError

from pipeline import _backoff
from pipeline.config import DEVICES_KEY, LATEST_KEY, UPDATES_STREAM
from pipeline.gateway._hub import Hub
from pipeline.gateway._metrics import GatewayStats
from pipeline.gateway._stream import Entries, entry_payload, id_text, key_of

log = logging.getLogger("pipeline.gateway")

_BACKOFF_FIRST_S = 0.1
_BACKOFF_MAX_S = 5.0
_SEED_BATCH = 1000
#: Entries per XREAD, and how long one waits for new ones. The socket timeout is
#: longer than the block, so a Redis that stops answering (SIGSTOP, a dead host)
#: ends the read with an error instead of hanging it.
READ_COUNT = 1000
BLOCK_MS = 2000
_SOCKET_TIMEOUT_S = BLOCK_MS / 1000 + 5
_LATEST_PREFIX = LATEST_KEY.split("{", 1)[0].encode()


class UpdateReader:
    def __init__(self, redis_url: str, hub: Hub, stats: GatewayStats) -> None:
        self.redis_url = redis_url
        self.hub = hub
        self.stats = stats
        self.subscribed = False  # connected and reading (the health check's "updates")
        #: id of the last entry handed to the hub; None until the first start
        self.last_id: str | None = None
        self._gap_at: str | None = None  # the last_id a gap was counted at (count it once)
        self._logged_publish_error = False

    async def run(self) -> None:
        attempt = 0  # reconnections since the reader last got going
        lost_since: float | None = None
        while True:
            client = aredis.Redis.from_url(
                self.redis_url,
                socket_connect_timeout=2,
                socket_timeout=_SOCKET_TIMEOUT_S,
                socket_keepalive=True,
            )
            try:
                await self._resume(client)
                self.subscribed = True
                if lost_since is not None:
                    log.info(
                        "event=redis_stream_resumed stream=%s from=%s down_s=%.1f",
                        UPDATES_STREAM,
                        self.last_id,
                        time.monotonic() - lost_since,
                    )
                    lost_since = None
                attempt = 0
                await self._read(client)
            except (RedisError, OSError, TimeoutError) as exc:
                # One line per outage, not per retry.
                if self.subscribed:
                    self.stats.redis_reconnects += 1
                    lost_since = time.monotonic()
                    log.warning("event=redis_stream_lost error=%r (resuming)", str(exc))
                elif lost_since is None:
                    lost_since = time.monotonic()
                    log.warning("event=redis_unavailable error=%r (retrying)", str(exc))
                self.subscribed = False
                await asyncio.sleep(
                    _backoff.delay(attempt, _BACKOFF_FIRST_S, _BACKOFF_MAX_S, jitter=0.25)
                )
                attempt += 1
            finally:
                self.subscribed = False
                try:
                    await client.aclose()
                except (RedisError, OSError):
                    pass  # the connection is already gone; nothing to release

    async def _resume(self, client: aredis.Redis) -> None:
        """Decide where to read from: the noted end at first start, else the last id seen."""
        if self.last_id is None:
            last = cast(Entries, await client.xrevrange(UPDATES_STREAM, count=1))
            noted = id_text(last[0][0]) if last else "0-0"
            await self._seed(client)
            self.last_id = noted
            self.hub.note(noted)
            return
        await self._seed(client)  # after an outage: latest values fill the snapshot

    def _check_gap(self, first: Entries) -> None:
        """Count a gap when the stream's oldest entry is newer than the last one read."""
        last_id = self.last_id
        if not first or last_id is None or last_id == "0-0" or last_id == self._gap_at:
            return  # (0-0: there was no stream at start; its first entry is no gap)
        if key_of(id_text(first[0][0])) > key_of(last_id):
            self._gap_at = last_id
            self.stats.stream_gaps += 1
            log.warning(
                "event=stream_gap stream=%s last_read=%s oldest=%s (entries after the last "
                "one read were trimmed before the reader got to them; STREAM_MAXLEN)",
                UPDATES_STREAM,
                last_id,
                id_text(first[0][0]),
            )

    async def _read(self, client: aredis.Redis) -> None:
        publish = self.hub.publish
        while True:
            assert self.last_id is not None  # set by _resume
            pipe = client.pipeline(transaction=False)
            pipe.xrange(UPDATES_STREAM, count=1)
            pipe.xread({UPDATES_STREAM: self.last_id}, count=READ_COUNT, block=BLOCK_MS)
            first, response = await pipe.execute()
            self._check_gap(cast(Entries, first))
            for _stream, entries in cast(list[tuple[bytes, Entries]], response) or ():
                for raw_id, fields in entries:
                    stream_id = id_text(raw_id)
                    self.last_id = stream_id  # first: a bad entry is passed, never re-read
                    try:
                        publish(entry_payload(fields), stream_id)
                    except Exception:  # a bug must not end the reader
                        self.stats.bad_updates += 1
                        if not self._logged_publish_error:
                            self._logged_publish_error = True
                            log.exception("event=update_failed id=%s (logged once)", stream_id)

    async def _seed(self, client: aredis.Redis) -> None:
        now_ms = time.time() * 1000
        devices = cast(
            list[tuple[bytes, float]], await client.zrange(DEVICES_KEY, 0, -1, withscores=True)
        )
        for i in range(0, len(devices), _SEED_BATCH):
            batch = devices[i : i + _SEED_BATCH]
            keys = [_LATEST_PREFIX + device for device, _ in batch]
            values = cast(list[Any], await client.mget(keys))
            for (device, score), raw in zip(batch, values, strict=True):
                if raw is None:
                    continue  # expired (TTL) since the ZSET entry was written
                name = device.decode("utf-8", "replace")
                if not self.hub.seed(name, raw, (now_ms - score) / 1000):
                    self.stats.bad_latest += 1
