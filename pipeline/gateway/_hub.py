"""Fan-out: one update in, one serialization per protocol, a bounded queue per client.

Per update the hub parses the JSON once, stamps the gateway hop, serializes once,
and for STOMP builds the shared frame tail (content-length, body, NUL) once; a
client only adds its own short head (subscription id, message id). Each
connection owns an :class:`Outbox` drained by exactly one sender task, so a slow
client fills its own queue and loses frames (counted) without stalling anyone.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from pipeline._trace import stamp
from pipeline.config import Settings
from pipeline.gateway._metrics import GatewayStats

log = logging.getLogger("pipeline.gateway")

_dumps = json.JSONEncoder(separators=(",", ":")).encode
_CLOSE = object()

TOPIC_ALL = "/topic/coordinates"
TOPIC_DEVICE_PREFIX = "/topic/devices/"


class Outbox:
    """A connection's bounded send queue; items are ``(text, t_received)``.

    Data frames beyond ``limit`` are dropped and counted; control frames
    (CONNECTED, RECEIPT, ERROR) still get in up to twice the limit, so a slow
    reader loses updates before it loses protocol replies.
    """

    __slots__ = ("protocol", "limit", "items", "wake", "closed", "stats", "_ids", "heartbeat_s")

    def __init__(self, protocol: str, limit: int, stats: GatewayStats) -> None:
        self.protocol = protocol
        self.limit = max(1, limit)
        self.items: deque[tuple[Any, float | None]] = deque()
        self.wake = asyncio.Event()
        self.closed = False
        self.stats = stats
        self._ids = itertools.count(1)
        self.heartbeat_s = 0.0  # STOMP: send an EOL after this long without a frame

    def next_id(self) -> str:
        return str(next(self._ids))

    def push(self, text: str, t_received: float) -> bool:
        if self.closed:
            return False
        if len(self.items) >= self.limit:
            self.stats.dropped[(self.protocol, "queue_full")] += 1
            return False
        self.items.append((text, t_received))
        self.wake.set()
        return True

    def push_control(self, text: str) -> None:
        if self.closed:
            return
        if len(self.items) >= 2 * self.limit:
            # A client that sends frames but never reads: do not grow without bound.
            self.stats.dropped[(self.protocol, "queue_full")] += 1
            return
        self.items.append((text, None))
        self.wake.set()

    def close_after_drain(self) -> None:
        """Send what is queued, then close the socket; nothing more gets in."""
        if not self.closed:
            self.items.append((_CLOSE, None))
            self.closed = True
            self.wake.set()

    def discard(self) -> None:
        """The peer is gone: count what will never be sent."""
        self.closed = True
        lost = sum(1 for _, t in self.items if t is not None)
        if lost:
            self.stats.dropped[(self.protocol, "closed")] += lost
        self.items.clear()
        self.wake.set()


async def run_sender(
    outbox: Outbox,
    send_text: Callable[[str], Awaitable[None]],
    close: Callable[[], Awaitable[None]],
) -> None:
    """The one task that writes to a connection; ends on close or a send failure."""
    items = outbox.items
    stats = outbox.stats
    hist = stats.push_latency
    pushed = stats.pushed
    protocol = outbox.protocol
    perf = time.perf_counter
    while True:
        if not items:
            if outbox.closed:
                return
            outbox.wake.clear()
            if outbox.heartbeat_s:
                try:
                    await asyncio.wait_for(outbox.wake.wait(), outbox.heartbeat_s)
                except TimeoutError:
                    await send_text("\n")  # STOMP heart-beat: one EOL
            else:
                await outbox.wake.wait()
            continue
        text, t_received = items.popleft()
        if text is _CLOSE:
            await close()
            return
        await send_text(text)
        if t_received is not None:
            hist.observe(perf() - t_received)
            pushed[protocol] += 1


class Subscription:
    """One STOMP SUBSCRIBE: its connection and its pre-built MESSAGE head."""

    __slots__ = ("outbox", "sub_id", "destination", "device_id", "head")

    def __init__(
        self, outbox: Outbox, sub_id: str, destination: str, device_id: str | None, head: str
    ) -> None:
        self.outbox = outbox
        self.sub_id = sub_id
        self.destination = destination
        self.device_id = device_id
        self.head = head  # "MESSAGE\n...message-id:" — the id and the tail follow

    def push(self, tail: str, t_received: float) -> None:
        self.outbox.push(self.head + self.outbox.next_id() + tail, t_received)


def stomp_tail(body: str) -> str:
    """The part of a MESSAGE frame every subscriber shares: length, body, NUL."""
    length = len(body) if body.isascii() else len(body.encode())
    return f"\ncontent-length:{length}\n\n{body}\x00"


class Hub:
    """Latest update per device, the subscribers, and the fan-out between them."""

    def __init__(self, settings: Settings, stats: GatewayStats) -> None:
        self.snapshot_mode = settings.push_mode == "snapshot"
        self.interval_s = max(settings.snapshot_interval_ms, 1) / 1000
        self.ttl_s = settings.redis_ttl_s
        self.stats = stats
        # device_id -> [message dict, its JSON or None until needed, perf_counter received]
        self.latest: dict[str, list[Any]] = {}
        self.ws_clients: set[Outbox] = set()
        self.stomp_clients: set[Outbox] = set()
        self.stomp_all: set[Subscription] = set()
        self.stomp_device: dict[str, set[Subscription]] = {}
        self._last_prune = time.perf_counter()

    # -- registry -----------------------------------------------------------
    def connections(self) -> dict[str, int]:
        return {"websocket": len(self.ws_clients), "stomp": len(self.stomp_clients)}

    def subscribe(self, sub: Subscription) -> None:
        if sub.device_id is None:
            self.stomp_all.add(sub)
        else:
            self.stomp_device.setdefault(sub.device_id, set()).add(sub)

    def unsubscribe(self, sub: Subscription) -> None:
        if sub.device_id is None:
            self.stomp_all.discard(sub)
            return
        subs = self.stomp_device.get(sub.device_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self.stomp_device[sub.device_id]

    # -- updates ------------------------------------------------------------
    def publish(self, raw: bytes | str) -> None:
        """Take one update from the Redis channel (called once per message)."""
        t_received = time.perf_counter()
        try:
            msg = json.loads(raw)
        except ValueError:
            self.stats.bad_updates += 1
            return
        device_id = msg.get("device_id") if isinstance(msg, dict) else None
        if not isinstance(device_id, str) or not device_id:
            self.stats.bad_updates += 1
            return
        stamp(msg, "gateway")
        self.stats.updates += 1
        if self.snapshot_mode:
            self.latest[device_id] = [msg, None, t_received]  # serialized when a snapshot needs it
            return
        text = _dumps(msg)
        self.latest[device_id] = [msg, text, t_received]
        for outbox in self.ws_clients:
            outbox.push(text, t_received)
        device_subs = self.stomp_device.get(device_id)
        if self.stomp_all or device_subs:
            tail = stomp_tail(text)
            for sub in self.stomp_all:
                sub.push(tail, t_received)
            if device_subs:
                for sub in device_subs:
                    sub.push(tail, t_received)

    def seed(self, device_id: str, raw: str, age_s: float) -> None:
        """Fill the latest of a device read from Redis, unless an update came first."""
        if device_id in self.latest:
            return
        try:
            msg = json.loads(raw)
        except ValueError:
            return
        if isinstance(msg, dict):
            self.latest[device_id] = [msg, None, time.perf_counter() - max(age_s, 0.0)]

    # -- snapshot mode ------------------------------------------------------
    def _json_of(self, entry: list[Any]) -> str:
        if entry[1] is None:
            entry[1] = _dumps(entry[0])
        return entry[1]

    def snapshot(self) -> None:
        """One batch: all latest to `/coordinates` and `/topic/coordinates`, per device to
        `/topic/devices/{id}`. Latency is measured from here, not from Redis."""
        self._prune()
        t_built = time.perf_counter()
        if self.ws_clients or self.stomp_all:
            devices = ",".join(self._json_of(e) for e in self.latest.values())
            text = f'{{"type":"snapshot","sent_ns":{time.time_ns()},"devices":[{devices}]}}'
            self.stats.snapshots += 1
            for outbox in self.ws_clients:
                outbox.push(text, t_built)
            if self.stomp_all:
                tail = stomp_tail(text)
                for sub in self.stomp_all:
                    sub.push(tail, t_built)
        for device_id, subs in self.stomp_device.items():
            entry = self.latest.get(device_id)
            if entry is not None:
                tail = stomp_tail(self._json_of(entry))
                for sub in subs:
                    sub.push(tail, t_built)

    def _prune(self) -> None:
        # Redis expires a silent device's latest after the TTL; forget it here too.
        now = time.perf_counter()
        if now - self._last_prune < 10:
            return
        self._last_prune = now
        horizon = now - self.ttl_s
        for device_id in [d for d, e in self.latest.items() if e[2] < horizon]:
            del self.latest[device_id]

    async def run_snapshots(self) -> None:
        """Tick every interval on a fixed schedule, so the work does not add drift.

        A late tick (a busy loop) is not followed by a burst: the next one comes at
        least half an interval later and the schedule restarts from there.
        """
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            next_at += self.interval_s
            now = loop.time()
            if next_at - now < self.interval_s / 2:
                next_at = now + self.interval_s / 2
            await asyncio.sleep(next_at - now)
            try:
                self.snapshot()
            except Exception:  # keep ticking; one line per failure
                log.exception("event=snapshot_failed")
