"""The gateway's fan-out: one encoding per update and head, one socket write per wake-up."""

from __future__ import annotations

import asyncio
import json
import time

from pipeline.config import Settings
from pipeline.gateway._hub import Hub, Outbox, Subscription, run_sender, ws_frame, ws_payload
from pipeline.gateway._metrics import GatewayStats
from pipeline.gateway.stomp import FrameParser
from users._ws_codec import FrameReader


def _sub(hub: Hub, stats: GatewayStats, sub_id: str, destination: str) -> Subscription:
    outbox = Outbox("stomp", 10, stats)
    head = (
        f"MESSAGE\ndestination:{destination}\nsubscription:{sub_id}\n"
        f"content-type:application/json\nmessage-id:{sub_id}-"
    )
    device = destination.rsplit("/", 1)[1] if "/devices/" in destination else None
    sub = Subscription(outbox, sub_id, destination, device, head)
    hub.subscribe(sub)
    return sub


def test_one_update_is_encoded_once_per_head_and_shared_by_every_subscriber():
    stats = GatewayStats()
    hub = Hub(Settings(), stats)
    same = [_sub(hub, stats, "1", "/topic/coordinates") for _ in range(3)]
    other = _sub(hub, stats, "7", "/topic/coordinates")
    device = _sub(hub, stats, "1", "/topic/devices/d-1")
    ws = Outbox("websocket", 10, stats)
    hub.ws_clients.update({ws, Outbox("websocket", 10, stats)})
    msg = {"device_id": "d-1", "x": 1, "trace": {"run": "r", "seq": 1, "t0": 1, "hops": {}}}
    hub.publish(json.dumps(msg).encode(), "1700000000000-0")
    hub.publish(json.dumps({**msg, "device_id": "d-2"}).encode(), "1700000000000-1")
    first = [s.outbox.items[0][0] for s in same]
    assert all(isinstance(f, bytes) and f is first[0] for f in first)  # the very same bytes
    assert other.outbox.items[0][0] is not first[0]
    assert {o.items[0][0] for o in hub.ws_clients} == {ws.items[0][0]}
    assert len(device.outbox.items) == 1  # d-2 is not its device
    frames = []
    for sub in (same[0], other, device):
        for data, _t in sub.outbox.items:
            ((_op, payload),) = FrameReader().feed(data)  # a finished WebSocket frame
            frames += FrameParser().feed(payload)
    # <subscription id>-<the hub's number of the update>: unique on any one connection
    ids = [f.headers["message-id"] for f in frames]
    a, b = ids[0].split("-")[1], ids[1].split("-")[1]
    assert int(b) == int(a) + 1
    assert ids == [f"1-{a}", f"1-{b}", f"7-{a}", f"7-{b}", f"1-{a}"]
    assert [f.headers["stream-id"] for f in frames[:2]] == ["1700000000000-0", "1700000000000-1"]
    body = json.loads(frames[0].body)
    assert body["trace"]["hops"]["gateway"] > 0 and body["device_id"] == "d-1"
    assert json.loads(ws_payload(ws.items[0][0]))["stream_id"] == "1700000000000-0"


def test_the_sender_writes_everything_queued_in_one_write():
    async def main() -> tuple[list[bytes], list[str]]:
        stats = GatewayStats()
        outbox = Outbox("stomp", 10, stats)
        writes: list[bytes] = []
        closed: list[str] = []

        async def write(data: bytes) -> None:
            writes.append(data)

        async def send_text(text: str) -> None:
            raise AssertionError("not with a raw writer")

        async def close() -> None:
            closed.append("close")

        now = time.perf_counter()
        for i in range(3):
            outbox.push(ws_frame(f"MESSAGE {i}".encode()), now)
        outbox.push_control("RECEIPT\nreceipt-id:r\n\n\x00")
        outbox.close_after_drain()
        await asyncio.wait_for(run_sender(outbox, send_text, close, write), 5)
        assert stats.pushed["stomp"] == 3 and stats.push_latency.count == 3
        return writes, closed

    writes, closed = asyncio.run(main())
    assert len(writes) == 1 and closed == ["close"]
    assert [p for _op, p in FrameReader().feed(writes[0])] == [
        b"MESSAGE 0",
        b"MESSAGE 1",
        b"MESSAGE 2",
        b"RECEIPT\nreceipt-id:r\n\n\x00",
    ]


def test_ws_frame_lengths():
    for n in (0, 125, 126, 65535, 65536):
        payload = b"x" * n
        assert ws_payload(ws_frame(payload)) == payload
        assert FrameReader().feed(ws_frame(payload)) == [(1, payload)]
