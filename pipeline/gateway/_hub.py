"""Fan-out: one update in, its bytes encoded once, the same bytes to every subscriber.

Per update (one entry of the Redis stream) the hub parses the JSON once, stamps
the gateway hop, serializes once, and builds each frame it sends as a finished
WebSocket frame (``bytes``: header + payload) once: the raw WebSocket text (the
message plus ``"stream_id"``) for every ``/coordinates`` client, and one STOMP
MESSAGE per distinct subscription head (destination + subscription id; every
subscriber of one destination whose client numbers its subscriptions the same
way, as stomp.js and our users do, shares one). So the cost per subscriber is
a queue append, not a serialization. ``message-id`` is ``<subscription id>-<n>``
with ``n`` the hub's number of the update: unique per connection.

Each connection owns an :class:`Outbox` drained by exactly one sender task,
which writes everything queued since it last ran with one socket write (a
Redis read of many entries becomes one write per client), so a slow client
fills its own queue and loses frames (counted) without stalling anyone.

A client resuming with ``since`` is not in the live sets while its replay runs:
it sits behind a gate (``pipeline.gateway._replay``) that the hub offers every
update to, and joins the live sets once the replay has caught up.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from pipeline._trace import stamp
from pipeline.config import Settings
from pipeline.gateway._metrics import GatewayStats
from pipeline.gateway._stream import StreamKey, decode_object, key_of

if TYPE_CHECKING:
    from pipeline.gateway._replay import Gate

log = logging.getLogger("pipeline.gateway")

_dumps = json.JSONEncoder(separators=(",", ":")).encode
_CLOSE = object()

TOPIC_ALL = "/topic/coordinates"
TOPIC_DEVICE_PREFIX = "/topic/devices/"


def ws_frame(payload: bytes) -> bytes:
    """A final, unmasked server text frame (RFC 6455 section 5.2): written as is to a socket."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return b"\x81\x7e" + n.to_bytes(2, "big") + payload
    return b"\x81\x7f" + n.to_bytes(8, "big") + payload


def ws_payload(frame: bytes) -> bytes:
    """The payload of a frame made by :func:`ws_frame`."""
    n = frame[1]
    return frame[2 + (2 if n == 126 else 8 if n == 127 else 0) :]


#: A STOMP heart-beat (one EOL) as a WebSocket frame.
HEARTBEAT_FRAME = ws_frame(b"\n")
#: how often :meth:`Hub.run_heartbeats` looks for connections due a heart-beat
HEARTBEAT_TICK_S = 1.0


class Outbox:
    """A connection's bounded send queue; items are ``(frame, t_received)``.

    A frame is ``bytes`` (a finished WebSocket frame, shared by every subscriber
    of the update) or ``str`` (a control frame's text, or one built for this
    client alone).

    Data frames beyond ``limit`` are dropped and counted; control frames
    (CONNECTED, RECEIPT, ERROR) still get in up to twice the limit, so a slow
    reader loses updates before it loses protocol replies.
    """

    __slots__ = (
        "protocol",
        "limit",
        "items",
        "wake",
        "closed",
        "stats",
        "_ids",
        "heartbeat_s",
        "last_tx",
        "room",
        "close_code",
        "close_reason",
    )

    def __init__(self, protocol: str, limit: int, stats: GatewayStats) -> None:
        self.protocol = protocol
        self.limit = max(1, limit)
        self.items: deque[tuple[Any, float | None]] = deque()  # (str | bytes | _CLOSE, t)
        self.wake = asyncio.Event()
        self.closed = False
        self.stats = stats
        self._ids = itertools.count(1)
        self.heartbeat_s = 0.0  # STOMP: send an EOL after this long without a frame
        self.last_tx = time.perf_counter()  # when the sender last wrote (heart-beats)
        #: set by the sender once the queue is down to half its limit (a replay waits on it)
        self.room: asyncio.Event | None = None
        self.close_code = 1000  # what close_after_drain() closes the WebSocket with
        self.close_reason = ""

    def next_id(self) -> str:
        return str(next(self._ids))

    def push(self, text: str | bytes, t_received: float) -> bool:
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

    async def wait_for_room(self) -> None:
        """Return once the queue is at most half full (or the connection is closed)."""
        while not self.closed and len(self.items) > self.limit // 2:
            if self.room is None:
                self.room = asyncio.Event()
            await self.room.wait()

    def _release_room(self) -> None:
        if self.room is not None:
            self.room.set()
            self.room = None

    def close_after_drain(self, code: int = 1000, reason: str = "") -> None:
        """Send what is queued, then close the socket; nothing more gets in."""
        if not self.closed:
            self.close_code, self.close_reason = code, reason
            self.items.append((_CLOSE, None))
            self.closed = True
            self.wake.set()
            self._release_room()

    def discard(self) -> None:
        """The peer is gone: count what will never be sent."""
        self.closed = True
        lost = sum(1 for _, t in self.items if t is not None)
        if lost:
            self.stats.dropped[(self.protocol, "closed")] += lost
        self.items.clear()
        self.wake.set()
        self._release_room()


async def beat(outboxes: list[Outbox], tick_s: float, *, slice_n: int = 1000) -> int:
    """Queue one EOL to every outbox idle for its ``heartbeat_s`` (less a tick, so
    none is late); yields to the loop every ``slice_n`` (10,000 connections are
    ~20 ms of walking). Returns how many were queued."""
    now = time.perf_counter()
    queued = 0
    for n, outbox in enumerate(outboxes, 1):
        if outbox.heartbeat_s and not outbox.items and not outbox.closed:
            if now - outbox.last_tx >= outbox.heartbeat_s - tick_s:
                outbox.items.append((HEARTBEAT_FRAME, None))
                outbox.wake.set()
                queued += 1
        if n % slice_n == 0:
            await asyncio.sleep(0)
    return queued


async def run_sender(
    outbox: Outbox,
    send_text: Callable[[str], Awaitable[None]],
    close: Callable[[], Awaitable[None]],
    write: Callable[[bytes], Awaitable[None]] | None = None,
) -> None:
    """The one task that writes to a connection; ends on close or a send failure.

    With ``write`` (raw bytes to the connection's socket, after its flow control)
    everything queued goes out as one write of finished WebSocket frames;
    without it each frame goes through ``send_text`` (any ASGI server).
    """
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
            # heart-beats are queued by beat() (one ticker for every connection): a
            # timeout here would be a task and a timer per wake-up and per subscriber
            await outbox.wake.wait()
            continue
        if write is None:
            text, t_received = items.popleft()
            if outbox.room is not None and len(items) <= outbox.limit // 2:
                outbox._release_room()
            if text is _CLOSE:
                await close()
                return
            await send_text(ws_payload(text).decode() if isinstance(text, bytes) else text)
            outbox.last_tx = perf()
            if t_received is not None:
                hist.observe(perf() - t_received)
                pushed[protocol] += 1
            continue
        batch: list[bytes] = []
        closing = False
        sent = 0
        now = perf()
        while items:
            data, t_received = items.popleft()
            if data is _CLOSE:
                closing = True
                break
            batch.append(data if isinstance(data, bytes) else ws_frame(data.encode()))
            if t_received is not None:
                hist.observe(now - t_received)
                sent += 1
        if outbox.room is not None:
            outbox._release_room()
        if batch:
            await write(batch[0] if len(batch) == 1 else b"".join(batch))
            outbox.last_tx = perf()
            pushed[protocol] += sent
        if closing:
            await close()
            return


class Subscription:
    """One STOMP SUBSCRIBE: its connection and its pre-built MESSAGE head.

    Subscriptions with the same head (destination and subscription id) are sent
    the very same bytes: :meth:`Encoded.stomp_frame` builds them once per head.
    """

    __slots__ = ("outbox", "sub_id", "destination", "device_id", "head")

    def __init__(
        self, outbox: Outbox, sub_id: str, destination: str, device_id: str | None, head: str
    ) -> None:
        self.outbox = outbox
        self.sub_id = sub_id
        self.destination = destination
        self.device_id = device_id
        self.head = head  # "MESSAGE\n...message-id:<sub id>-" — the number and the tail follow

    def push(self, tail: str, t_received: float, number: str) -> None:
        """Queue one MESSAGE built for this subscription alone (replay marks)."""
        self.outbox.push(self.head + number + tail, t_received)


def stomp_tail(body: str, stream_id: str | None) -> str:
    """The part of a MESSAGE frame every subscriber shares: stream id, length, body, NUL.

    Stream ids are digits and ``-``: nothing in them needs STOMP header escaping.
    """
    length = len(body) if body.isascii() else len(body.encode())
    sid = f"\nstream-id:{stream_id}" if stream_id else ""
    return f"{sid}\ncontent-length:{length}\n\n{body}\x00"


def ws_text(text: str, stream_id: str) -> str:
    """The raw WebSocket frame of an update: its JSON object plus ``"stream_id"``."""
    return f'{text[:-1]},"stream_id":"{stream_id}"}}'  # text is a non-empty object


_numbers = itertools.count(1)


class SharedFrames:
    """The STOMP MESSAGE frames of one body, one per subscription head, each built once."""

    __slots__ = ("tail", "number", "_by_head")

    def __init__(self, tail: str, number: str) -> None:
        self.tail = tail
        self.number = number
        self._by_head: dict[str, bytes] = {}

    def frame(self, head: str) -> bytes:
        data = self._by_head.get(head)
        if data is None:
            data = self._by_head[head] = ws_frame((head + self.number + self.tail).encode())
        return data

    def push_to(self, subs: Iterable[Subscription], t_received: float) -> None:
        by_head = self._by_head
        for sub in subs:
            data = by_head.get(sub.head)
            if data is None:
                data = self.frame(sub.head)
            sub.outbox.push(data, t_received)


class Encoded:
    """One update decoded and serialized once, for every subscriber (live or replayed)."""

    __slots__ = (
        "device_id",
        "msg",
        "text",
        "stream_id",
        "key",
        "t_received",
        "number",
        "_ws",
        "_ws_frame",
        "_tail",
        "_stomp",
    )

    def __init__(
        self,
        device_id: str,
        msg: dict[str, Any],
        stream_id: str,
        key: StreamKey,
        t_received: float,
    ) -> None:
        self.device_id = device_id
        self.msg = msg
        self.text = _dumps(msg)
        self.stream_id = stream_id
        self.key = key
        self.t_received = t_received
        #: the hub's number of this update: the MESSAGE ids' second half
        self.number = str(next(_numbers))
        self._ws: str | None = None
        self._ws_frame: bytes | None = None
        self._tail: str | None = None
        self._stomp: SharedFrames | None = None

    @property
    def ws(self) -> str:
        if self._ws is None:
            self._ws = ws_text(self.text, self.stream_id)
        return self._ws

    @property
    def ws_frame(self) -> bytes:
        """The raw WebSocket text as a finished frame, for every ``/coordinates`` client."""
        if self._ws_frame is None:
            self._ws_frame = ws_frame(self.ws.encode())
        return self._ws_frame

    @property
    def tail(self) -> str:
        if self._tail is None:
            self._tail = stomp_tail(self.text, self.stream_id)
        return self._tail

    @property
    def stomp(self) -> SharedFrames:
        """The MESSAGE frames of this update, one per subscription head."""
        if self._stomp is None:
            self._stomp = SharedFrames(self.tail, self.number)
        return self._stomp


def decode_update(raw: bytes | None, max_bytes: int) -> tuple[str, dict[str, Any]] | None:
    """(device_id, message) of a stored update; None for anything else (counted by callers)."""
    msg = decode_object(raw, max_bytes)
    if msg is None:
        return None
    device_id = msg.get("device_id")
    if not isinstance(device_id, str) or not device_id:
        return None
    return device_id, msg


def encode_update(
    raw: bytes | None, stream_id: str, max_bytes: int, t_received: float
) -> Encoded | None:
    """Decode one stream entry, stamp the gateway hop and serialize it once."""
    decoded = decode_update(raw, max_bytes)
    if decoded is None:
        return None
    device_id, msg = decoded
    stamp(msg, "gateway")
    return Encoded(device_id, msg, stream_id, key_of(stream_id), t_received)


class Hub:
    """Latest update per device, the subscribers, and the fan-out between them."""

    def __init__(self, settings: Settings, stats: GatewayStats) -> None:
        self.snapshot_mode = settings.push_mode == "snapshot"
        self.interval_s = max(settings.snapshot_interval_ms, 1) / 1000
        self.ttl_s = settings.redis_ttl_s
        #: largest stored update the gateway decodes (the consumer writes at most
        #: max_payload_bytes plus its hop stamp; anything far larger is not ours)
        self.max_entry_bytes = 2 * max(settings.max_payload_bytes, 1024)
        self.stats = stats
        # device_id -> [message dict, its JSON or None until needed, perf_counter received]
        self.latest: dict[str, list[Any]] = {}
        self.ws_clients: set[Outbox] = set()
        self.stomp_clients: set[Outbox] = set()
        self.stomp_all: set[Subscription] = set()
        self.stomp_device: dict[str, set[Subscription]] = {}
        #: clients replaying (``since``), by their Outbox (raw WS) or Subscription (STOMP)
        self.gated: dict[Outbox | Subscription, Gate] = {}
        #: the newest stream entry handed to :meth:`publish` (or noted at start)
        self.last_id: str | None = None
        self.last_key: StreamKey = (0, 0)
        #: set once the reader has noted where it starts: replays wait for it, because
        #: what is older than that point the reader never hands over (it seeds it)
        self.started = asyncio.Event()
        self._last_prune = time.perf_counter()

    # -- registry -----------------------------------------------------------
    def connections(self) -> dict[str, int]:
        gated_ws = sum(1 for target in self.gated if isinstance(target, Outbox))
        return {"websocket": len(self.ws_clients) + gated_ws, "stomp": len(self.stomp_clients)}

    def subscribe(self, sub: Subscription) -> None:
        if sub.device_id is None:
            self.stomp_all.add(sub)
        else:
            self.stomp_device.setdefault(sub.device_id, set()).add(sub)

    def unsubscribe(self, sub: Subscription) -> None:
        self.gated.pop(sub, None)
        if sub.device_id is None:
            self.stomp_all.discard(sub)
            return
        subs = self.stomp_device.get(sub.device_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self.stomp_device[sub.device_id]

    def remove_ws(self, outbox: Outbox) -> None:
        self.ws_clients.discard(outbox)
        self.gated.pop(outbox, None)

    def admit(self, gate: Gate) -> None:
        """A gate has caught up: its client joins the live sets."""
        target = gate.target
        if self.gated.get(target) is not gate:
            return  # unsubscribed or disconnected meanwhile
        del self.gated[target]
        if isinstance(target, Outbox):
            self.ws_clients.add(target)
        else:
            self.subscribe(target)

    # -- updates ------------------------------------------------------------
    def note(self, stream_id: str) -> None:
        """The stream position the reader starts from (nothing older will be published)."""
        if key_of(stream_id) > self.last_key:
            self.last_id, self.last_key = stream_id, key_of(stream_id)
        self.started.set()

    def publish(self, raw: bytes | None, stream_id: str) -> None:
        """Take one stream entry (called once per entry, in stream order)."""
        t_received = time.perf_counter()
        self.last_id = stream_id
        enc = encode_update(raw, stream_id, self.max_entry_bytes, t_received)
        self.last_key = key_of(stream_id) if enc is None else enc.key
        if enc is None:
            self.stats.bad_updates += 1
            return
        self.stats.updates += 1
        device_id = enc.device_id
        if self.snapshot_mode:
            self.latest[device_id] = [enc.msg, None, t_received]  # serialized when needed
            return
        self.latest[device_id] = [enc.msg, enc.text, t_received]
        if self.ws_clients:
            frame = enc.ws_frame
            for outbox in self.ws_clients:
                outbox.push(frame, t_received)
        device_subs = self.stomp_device.get(device_id)
        if self.stomp_all or device_subs:
            frames = enc.stomp
            if self.stomp_all:
                frames.push_to(self.stomp_all, t_received)
            if device_subs:
                frames.push_to(device_subs, t_received)
        if self.gated:
            caught_up = [gate for gate in self.gated.values() if gate.offer(enc)]
            for gate in caught_up:
                self.admit(gate)

    def seed(self, device_id: str, raw: bytes | None, age_s: float) -> bool:
        """Fill the latest of a device read from Redis, unless an update came first.

        False when the stored value is not a JSON object of a sane size and depth.
        """
        if device_id in self.latest:
            return True
        msg = decode_object(raw, self.max_entry_bytes)
        if msg is None:
            return False
        self.latest[device_id] = [msg, None, time.perf_counter() - max(age_s, 0.0)]
        return True

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
        # A snapshot holds the stream up to this id: a client may resume from it.
        sid = self.last_id
        sid_field = f'"stream_id":"{sid}",' if sid else ""
        if self.ws_clients or self.stomp_all:
            devices = ",".join(self._json_of(e) for e in self.latest.values())
            text = (
                f'{{"type":"snapshot","sent_ns":{time.time_ns()},{sid_field}"devices":[{devices}]}}'
            )
            self.stats.snapshots += 1
            if self.ws_clients:
                frame = ws_frame(text.encode())
                for outbox in self.ws_clients:
                    outbox.push(frame, t_built)
            if self.stomp_all:
                number = str(next(_numbers))
                SharedFrames(stomp_tail(text, sid), number).push_to(self.stomp_all, t_built)
        for device_id, subs in self.stomp_device.items():
            entry = self.latest.get(device_id)
            if entry is not None:
                shared = SharedFrames(stomp_tail(self._json_of(entry), sid), str(next(_numbers)))
                shared.push_to(subs, t_built)

    def _prune(self) -> None:
        # Redis expires a silent device's latest after the TTL; forget it here too.
        now = time.perf_counter()
        if now - self._last_prune < 10:
            return
        self._last_prune = now
        horizon = now - self.ttl_s
        for device_id in [d for d, e in self.latest.items() if e[2] < horizon]:
            del self.latest[device_id]

    async def run_heartbeats(self, tick_s: float = HEARTBEAT_TICK_S) -> None:
        """Every ``tick_s``: a heart-beat to each STOMP connection that is due one."""
        while True:
            await asyncio.sleep(tick_s)
            await beat(list(self.stomp_clients), tick_s)

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
