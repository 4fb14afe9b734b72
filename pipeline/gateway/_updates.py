"""The one Redis pub/sub reader: `pipeswarm:updates` into the hub, reconnecting forever.

After (re)subscribing it reads the latest of every device from Redis, so a
snapshot after a gateway restart or a Redis outage still holds every device.
It subscribes first and seeds second: an update that arrives in between wins.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import cast

import redis.asyncio as aredis
from redis.exceptions import RedisError

from pipeline.config import DEVICES_KEY, LATEST_KEY, UPDATES_CHANNEL
from pipeline.gateway._hub import Hub
from pipeline.gateway._metrics import GatewayStats

log = logging.getLogger("pipeline.gateway")

_BACKOFF_FIRST_S = 0.1
_BACKOFF_MAX_S = 5.0
_SEED_BATCH = 1000


class UpdateReader:
    def __init__(self, redis_url: str, hub: Hub, stats: GatewayStats) -> None:
        self.redis_url = redis_url
        self.hub = hub
        self.stats = stats
        self.subscribed = False
        self._logged_publish_error = False

    async def run(self) -> None:
        backoff = _BACKOFF_FIRST_S
        lost_since: float | None = None
        while True:
            client = aredis.Redis.from_url(
                self.redis_url, socket_connect_timeout=2, socket_keepalive=True
            )
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(UPDATES_CHANNEL)
                self.subscribed = True
                if lost_since is not None:
                    log.info(
                        "event=redis_resubscribed channel=%s down_s=%.1f",
                        UPDATES_CHANNEL,
                        time.monotonic() - lost_since,
                    )
                    lost_since = None
                backoff = _BACKOFF_FIRST_S
                await self._seed(client)
                publish = self.hub.publish
                async for message in pubsub.listen():
                    if message["type"] == "message":
                        try:
                            publish(message["data"])
                        except Exception:  # a bug must not end the subscription
                            self.stats.bad_updates += 1
                            if not self._logged_publish_error:
                                self._logged_publish_error = True
                                log.exception("event=update_failed (logged once)")
                raise ConnectionError("subscription ended")
            except (RedisError, OSError) as exc:
                # One line per outage, not per retry.
                if self.subscribed:
                    self.stats.redis_reconnects += 1
                    lost_since = time.monotonic()
                    log.warning("event=redis_subscription_lost error=%r (reconnecting)", str(exc))
                elif lost_since is None:
                    lost_since = time.monotonic()
                    log.warning("event=redis_unavailable error=%r (retrying)", str(exc))
                self.subscribed = False
                await asyncio.sleep(backoff * (1 + random.random() / 4))
                backoff = min(backoff * 2, _BACKOFF_MAX_S)
            finally:
                self.subscribed = False
                try:
                    await pubsub.aclose()
                    await client.aclose()
                except (RedisError, OSError):
                    pass  # the connection is already gone; nothing to release

    async def _seed(self, client: aredis.Redis) -> None:
        now_ms = time.time() * 1000
        # bytes: this client does not decode (the channel payloads go to json.loads as is)
        devices = cast(
            list[tuple[bytes, float]], await client.zrange(DEVICES_KEY, 0, -1, withscores=True)
        )
        for i in range(0, len(devices), _SEED_BATCH):
            batch = devices[i : i + _SEED_BATCH]
            names = [device.decode() for device, _ in batch]
            keys = [LATEST_KEY.format(device_id=name) for name in names]
            values = cast(list[bytes | None], await client.mget(keys))
            for name, (_, score), raw in zip(names, batch, values, strict=True):
                if raw is not None:
                    self.hub.seed(name, raw.decode(), (now_ms - score) / 1000)
