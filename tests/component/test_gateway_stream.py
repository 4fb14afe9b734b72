"""The update stream end to end: stream ids on frames, resume with ``since``, outages, bad data.

Real gateway processes against real Redis (the session's, or one of the test's own
where the test kills, trims or pauses things). The tests play the consumer with
XADD and read what raw STOMP and raw WebSocket clients get, frame by frame.
"""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
from collections import deque

import gevent.pool
import psutil
import pytest
import redis
import websocket

from pipeline.config import (
    DEVICES_KEY,
    LATEST_KEY,
    STREAM_FIELD,
    UPDATES_STREAM,
    Settings,
)
from pipeline.gateway._hub import Hub, Outbox, run_sender
from pipeline.gateway._metrics import GatewayStats
from pipeline.gateway._replay import REPLAY_CONNECTIONS, Replayer
from pipeline.gateway._stream import key_of
from pipeline.stack import Stack
from tests.component.gateway_clients import (
    assert_closed_by_server,
    device,
    publish,
    raw_stomp,
    recv_frame,
    update,
)
from tests.harness import REPO, Gateway, metric
from tests.helpers import wait_for

#: ~985 deep and ~2 KB, a JSON object with a device_id: json.loads would raise
#: RecursionError on it (the default limit is 1,000 frames).
DEPTH = 985


def deep_update(device_id: str) -> bytes:
    inner = "[" * (DEPTH - 1) + "]" * (DEPTH - 1)
    return f'{{"device_id":"{device_id}","x":1.0,"y":2.0,"timestamp":3.0,"deep":{inner}}}'.encode()


@pytest.fixture(scope="module")
def gateway(redis_url, mqtt_url, tmp_path_factory):
    with Gateway(
        tmp_path_factory.mktemp("gw") / "stream.log", REDIS_URL=redis_url, MQTT_URL=mqtt_url
    ).start() as gw:
        yield gw


@pytest.fixture
def own_redis(tmp_path):
    """A Redis of this test alone (it may be killed, trimmed or filled with bad data)."""
    stack = Stack.with_ports(auto=True, state_dir=tmp_path / "servers")
    try:
        stack.start_service("redis")
        client = redis.Redis.from_url(stack.urls["redis"])
        yield stack, client
        client.close()
    finally:
        stack.stop()


def own_gateway(tmp_path, redis_url: str, mqtt_url: str, **env: str) -> Gateway:
    return Gateway(tmp_path / "gw.log", REDIS_URL=redis_url, MQTT_URL=mqtt_url, **env).start()


# -- raw clients --------------------------------------------------------------------------
def parse_frame(frame: str) -> tuple[str, dict[str, str], str]:
    head, _, body = frame.partition("\n\n")
    command, *lines = head.split("\n")
    headers: dict[str, str] = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers.setdefault(name, value)
    return command, headers, body.rstrip("\x00")


class Stomp:
    """A raw STOMP 1.2 client over websocket-client: every frame seen, in order."""

    def __init__(self, gw: Gateway) -> None:
        self.conn = raw_stomp(gw)
        self.pending: deque[tuple[str, dict[str, str], str]] = deque()

    def frame(self) -> tuple[str, dict[str, str], str]:
        return self.pending.popleft() if self.pending else parse_frame(recv_frame(self.conn))

    def subscribe(self, destination: str, sub_id: str = "s", since: str | None = None) -> None:
        """SUBSCRIBE and wait for its RECEIPT; MESSAGEs before it are kept for later."""
        extra = f"since:{since}\n" if since is not None else ""
        self.conn.send(
            f"SUBSCRIBE\nid:{sub_id}\ndestination:{destination}\n{extra}receipt:r-{sub_id}\n\n\x00"
        )
        early = []
        while True:
            command, headers, body = parse_frame(recv_frame(self.conn))
            if command != "MESSAGE":
                break
            early.append((command, headers, body))
        self.pending.extend(early)
        assert (command, headers.get("receipt-id")) == ("RECEIPT", f"r-{sub_id}"), headers

    def messages(self, n: int, device_id: str) -> list[tuple[dict[str, str], dict]]:
        """The next ``n`` MESSAGE frames of ``device_id`` (headers, body)."""
        out = []
        while len(out) < n:
            command, headers, body = self.frame()
            assert command == "MESSAGE", (command, headers, body)
            msg = json.loads(body)
            if msg.get("device_id") == device_id:
                out.append((headers, msg))
        return out

    def close(self) -> None:
        self.conn.close()


def ws_messages(conn: websocket.WebSocket, n: int, device_id: str) -> list[dict]:
    out = []
    while len(out) < n:
        msg = json.loads(conn.recv())
        if msg.get("device_id") == device_id:
            out.append(msg)
    return out


def close_status(conn: websocket.WebSocket) -> tuple[int, str]:
    """The code and reason of the server's close frame."""
    for _ in range(100):
        opcode, frame = conn.recv_data_frame(True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            return int.from_bytes(frame.data[:2], "big"), frame.data[2:].decode()
    raise AssertionError("no close frame")


def seqs(msgs: list[dict]) -> list[int]:
    return [m["trace"]["seq"] for m in msgs]


class Writer(threading.Thread):
    """XADDs ``first..last`` of one device at a steady pace; records the ids in order."""

    def __init__(self, rds: redis.Redis, dev: str, first: int, last: int) -> None:
        super().__init__(daemon=True)
        self.rds, self.dev, self.first, self.last = rds, dev, first, last
        self.ids: list[str] = []

    def run(self) -> None:
        for seq in range(self.first, self.last + 1):
            self.ids.append(publish(self.rds, update(self.dev, seq)))
            if seq % 10 == 0:
                time.sleep(0.002)


# -- stream ids on frames -----------------------------------------------------------------
def test_every_pushed_frame_carries_its_stream_id(gateway, rds):
    dev, other = device(), device()
    ws = gateway.ws()
    st = Stomp(gateway)
    try:
        st.subscribe("/topic/coordinates", "all")
        st.subscribe(f"/topic/devices/{dev}", "one")
        ids = [publish(rds, update(dev, 1)), publish(rds, update(other, 1))]
        ids.append(publish(rds, update(dev, 2)))
        got_ws = [json.loads(ws.recv()) for _ in range(3)]
        frames = [st.frame() for _ in range(5)]
    finally:
        ws.close()
        st.close()
    assert [m["stream_id"] for m in got_ws] == ids
    assert [m["device_id"] for m in got_ws] == [dev, other, dev]
    by_sub: dict[str, list[str]] = {"all": [], "one": []}
    for command, headers, body in frames:
        assert command == "MESSAGE"
        assert "stream_id" not in json.loads(body)  # STOMP: a header, the body untouched
        by_sub[headers["subscription"]].append(headers["stream-id"])
    assert by_sub == {"all": ids, "one": [ids[0], ids[2]]}


# -- resume with since --------------------------------------------------------------------
def test_stomp_since_replays_exactly_what_was_missed_then_live(gateway, rds):
    dev = device()
    before = gateway.metrics()
    first = Stomp(gateway)
    try:
        first.subscribe("/topic/coordinates")
        sent = [publish(rds, update(dev, seq)) for seq in range(1, 6)]
        got = first.messages(5, dev)
    finally:
        first.close()  # abruptly, as a dropped connection would
    assert [h["stream-id"] for h, _ in got] == sent
    since = got[-1][0]["stream-id"]

    missed = [publish(rds, update(dev, seq)) for seq in range(6, 13)]
    # More keep coming while the client resubscribes: the replay/live seam is crossed live.
    writer = Writer(rds, dev, 13, 312)
    writer.start()
    again = Stomp(gateway)
    try:
        again.subscribe("/topic/coordinates", since=since)
        got = again.messages(300 + 7, dev)
        writer.join(30)
        live = publish(rds, update(dev, 313))
        (tail,) = again.messages(1, dev)
    finally:
        again.close()
    assert seqs([m for _, m in got]) == list(range(6, 313))  # in order, no gap, no duplicate
    assert [h["stream-id"] for h, _ in got] == missed + writer.ids
    assert all("replay-truncated" not in h for h, _ in got)
    assert tail[0]["stream-id"] == live and tail[1]["trace"]["seq"] == 313
    after = gateway.metrics()
    name = "pipeline_gateway_replays_total"
    labels = {"protocol": "stomp", "result": "complete"}
    assert metric(after, name, **labels) - metric(before, name, **labels) == 1
    replayed = metric(after, "pipeline_gateway_replayed_total", protocol="stomp") - metric(
        before, "pipeline_gateway_replayed_total", protocol="stomp"
    )
    assert 7 <= replayed <= 307  # the 7 missed for certain; the rest came by replay or live


def test_ws_since_replays_exactly_what_was_missed_then_live(gateway, rds):
    dev = device()
    conn = gateway.ws()
    try:
        sent = [publish(rds, update(dev, seq)) for seq in range(1, 4)]
        got = ws_messages(conn, 3, dev)
    finally:
        conn.close()
    assert [m["stream_id"] for m in got] == sent

    missed = [publish(rds, update(dev, seq)) for seq in range(4, 9)]
    writer = Writer(rds, dev, 9, 208)
    writer.start()
    conn = gateway.ws(f"/coordinates?since={sent[-1]}")
    try:
        got = ws_messages(conn, 5 + 200, dev)
        writer.join(30)
        live = publish(rds, update(dev, 209))
        (tail,) = ws_messages(conn, 1, dev)
    finally:
        conn.close()
    assert seqs(got) == list(range(4, 209))
    assert [m["stream_id"] for m in got] == missed + writer.ids
    assert not any("replay_truncated" in m for m in got)
    assert (tail["stream_id"], tail["trace"]["seq"]) == (live, 209)


def test_device_destination_replays_only_that_device(gateway, rds):
    dev_a, dev_b = device(), device()
    since = publish(rds, update(dev_b, 0))
    ids = {dev_a: [], dev_b: []}
    for seq in range(1, 11):
        for dev in (dev_a, dev_b):
            ids[dev].append(publish(rds, update(dev, seq)))
    st = Stomp(gateway)
    try:
        st.subscribe(f"/topic/devices/{dev_a}", "a", since=since)
        st.subscribe("/topic/coordinates", "all", since=ids[dev_a][4])
        frames = [st.frame() for _ in range(10 + 11)]
        live = publish(rds, update(dev_a, 11))
        tail = [st.frame() for _ in range(2)]
    finally:
        st.close()
    one = [(h["stream-id"], json.loads(b)) for _, h, b in frames if h["subscription"] == "a"]
    every = [(h["stream-id"], json.loads(b)) for _, h, b in frames if h["subscription"] == "all"]
    assert [sid for sid, _ in one] == ids[dev_a]
    assert {m["device_id"] for _, m in one} == {dev_a}
    # all devices after dev_a's 5th: dev_b's 5th, then both from the 6th on, in stream order
    assert [sid for sid, _ in every] == sorted(
        [ids[dev_b][4]] + ids[dev_a][5:] + ids[dev_b][5:],
        key=lambda s: tuple(map(int, s.split("-"))),
    )
    assert sorted(h["subscription"] for _, h, _ in tail) == ["a", "all"]
    assert {h["stream-id"] for _, h, _ in tail} == {live}


@pytest.mark.parametrize("since", ["abc", "1-2-3", "-1", "1-", str(1 << 64) + "-0", ""])
def test_malformed_since_is_refused_with_a_reason(gateway, since):
    before = gateway.metrics()
    st = Stomp(gateway)
    try:
        st.conn.send(f"SUBSCRIBE\nid:1\ndestination:/topic/coordinates\nsince:{since}\n\n\x00")
        command, headers, body = parse_frame(recv_frame(st.conn))
    finally:
        st.close()
    assert (command, headers["message"]) == ("ERROR", "bad since header")
    assert "stream id" in body
    name = "pipeline_gateway_stomp_errors_total"
    after = gateway.metrics()
    assert metric(after, name, reason="bad_since") - metric(before, name, reason="bad_since") == 1

    conn = gateway.ws(f"/coordinates?since={since}")
    try:
        code, reason = close_status(conn)
    finally:
        conn.close()
    assert code == 1008
    assert "since must be a stream id" in reason
    assert gateway.healthy()


def test_since_in_the_future_of_the_stream_is_marked_and_live_flows(own_redis, mqtt_url, tmp_path):
    """An id this stream never reached (Redis lost its data): say so, then push live."""
    stack, rds = own_redis
    dev = device()
    publish(rds, update(dev, 1))
    with own_gateway(tmp_path, stack.urls["redis"], mqtt_url) as gw:
        st = Stomp(gw)
        conn = gw.ws(f"/coordinates?since={int(time.time() * 1000) + 10**9}-0")
        try:
            st.subscribe("/topic/coordinates", since=f"{int(time.time() * 1000) + 10**9}-0")
            sid = publish(rds, update(dev, 2))
            ((headers, msg),) = st.messages(1, dev)
            (ws_msg,) = ws_messages(conn, 1, dev)
        finally:
            st.close()
            conn.close()
        values = gw.metrics()
    assert headers["replay-truncated"] == "true" and headers["stream-id"] == sid
    assert msg["trace"]["seq"] == 2
    assert ws_msg["replay_truncated"] is True and ws_msg["stream_id"] == sid
    for protocol in ("stomp", "websocket"):
        name = "pipeline_gateway_replays_total"
        assert metric(values, name, protocol=protocol, result="truncated") == 1


def test_trimmed_since_replays_from_the_oldest_and_says_so(own_redis, mqtt_url, tmp_path):
    stack, rds = own_redis
    dev = device()
    ids = [publish(rds, update(dev, seq)) for seq in range(1, 21)]
    rds.xtrim(UPDATES_STREAM, maxlen=5, approximate=False)  # 16..20 are left
    with own_gateway(tmp_path, stack.urls["redis"], mqtt_url) as gw:
        st = Stomp(gw)
        conn = gw.ws(f"/coordinates?since={ids[2]}")
        try:
            st.subscribe("/topic/coordinates", since=ids[2])
            got = st.messages(5, dev)
            got_ws = ws_messages(conn, 5, dev)
            live = publish(rds, update(dev, 21))
            ((headers, _),) = st.messages(1, dev)
            (ws_live,) = ws_messages(conn, 1, dev)
        finally:
            st.close()
            conn.close()
        values = gw.metrics()
    assert seqs([m for _, m in got]) == list(range(16, 21))
    assert [h.get("replay-truncated") for h, _ in got] == ["true", None, None, None, None]
    assert [h["stream-id"] for h, _ in got] == ids[15:]
    assert seqs(got_ws) == list(range(16, 21))
    assert [m.get("replay_truncated") for m in got_ws] == [True, None, None, None, None]
    assert "replay-truncated" not in headers and headers["stream-id"] == live
    assert "replay_truncated" not in ws_live
    for protocol in ("stomp", "websocket"):
        assert (
            metric(values, "pipeline_gateway_replays_total", protocol=protocol, result="truncated")
            == 1
        )
        assert metric(values, "pipeline_gateway_replayed_total", protocol=protocol) == 5


def test_many_clients_resuming_at_once_share_a_few_redis_connections(own_redis, mqtt_url, tmp_path):
    """After a gateway restart every client comes back with since at the same moment."""
    stack, rds = own_redis
    dev = device()
    since = publish(rds, update(dev, 0))
    ids = [publish(rds, update(dev, seq)) for seq in range(1, 301)]
    clients = 40
    with own_gateway(tmp_path, stack.urls["redis"], mqtt_url) as gw:
        baseline = rds.info("clients")["connected_clients"]
        pool = gevent.pool.Pool(clients)
        conns = pool.map(lambda _: gw.ws(f"/coordinates?since={since}"), range(clients))
        try:
            got = pool.map(lambda conn: ws_messages(conn, 300, dev), conns)
            peak = rds.info("clients")["connected_clients"]  # pooled connections stay open
        finally:
            for conn in conns:
                conn.close()
        values = gw.metrics()
    assert all([m["stream_id"] for m in msgs] == ids for msgs in got)
    assert metric(values, "pipeline_gateway_replays_total", protocol="websocket",
                  result="complete") == clients  # fmt: skip
    assert metric(values, "pipeline_gateway_replayed_total", protocol="websocket") == 300 * clients
    assert peak - baseline <= REPLAY_CONNECTIONS < clients, (baseline, peak)


# -- outages ------------------------------------------------------------------------------
def test_replay_redis_cannot_serve_is_an_error_not_a_hang(own_redis, mqtt_url, tmp_path):
    stack, rds = own_redis
    since = publish(rds, update(device(), 1))
    with own_gateway(tmp_path, stack.urls["redis"], mqtt_url) as gw:
        stack.stop_service("redis")
        wait_for(lambda: gw.health()[1]["updates"] == "down", 20, "the reader to see it")
        st = Stomp(gw)
        try:
            st.subscribe("/topic/coordinates", since=since)
            command, headers, body = st.frame()
            assert_closed_by_server(st.conn)
        finally:
            st.close()
        conn = gw.ws(f"/coordinates?since={since}")
        try:
            code, reason = close_status(conn)
        finally:
            conn.close()
        values = gw.metrics()
        assert gw.serving()
    assert (command, headers["message"]) == ("ERROR", "replay failed")
    assert "subscribe again with the same since" in body
    assert (code, reason) == (
        1013,
        "replay failed: Redis did not answer; reconnect with the same since",
    )
    name = "pipeline_gateway_replays_total"
    for protocol in ("stomp", "websocket"):
        assert metric(values, name, protocol=protocol, result="failed") == 1
    assert metric(values, "pipeline_gateway_stomp_errors_total", reason="replay_failed") == 1


def test_redis_sigkill_and_restart_resumes_without_a_gap(own_redis, mqtt_url, tmp_path):
    stack, rds = own_redis
    dev = device()
    with own_gateway(tmp_path, stack.urls["redis"], mqtt_url) as gw:
        st = Stomp(gw)
        ws = gw.ws()
        try:
            st.subscribe("/topic/coordinates")
            ids = [publish(rds, update(dev, seq)) for seq in (1, 2, 3)]
            got = st.messages(3, dev)
            got_ws = ws_messages(ws, 3, dev)

            killed = stack.procs["redis"]
            killed.signal(signal.SIGKILL)
            psutil.Process(killed.pid).wait(10)
            wait_for(lambda: gw.health()[1]["updates"] == "down", 20, "the reader to see it")
            stack.start_service("redis")
            # Written before the gateway is back on Redis: pub/sub would lose these.
            ids += [publish(rds, update(dev, seq)) for seq in (4, 5, 6)]
            wait_for(lambda: gw.healthy(), 30, "the gateway back on Redis")
            ids += [publish(rds, update(dev, seq)) for seq in (7, 8, 9)]
            got += st.messages(6, dev)
            got_ws += ws_messages(ws, 6, dev)
        finally:
            st.close()
            ws.close()
        values = gw.metrics()
    assert seqs([m for _, m in got]) == list(range(1, 10))
    assert [h["stream-id"] for h, _ in got] == ids
    assert seqs(got_ws) == list(range(1, 10))
    assert [m["stream_id"] for m in got_ws] == ids
    assert metric(values, "pipeline_gateway_redis_reconnects_total") == 1
    assert metric(values, "pipeline_gateway_stream_gaps_total") == 0


def test_killed_gateway_restarted_clients_resume_with_since(own_redis, mqtt_url, tmp_path):
    stack, rds = own_redis
    dev = device()
    # bad stored data the restarted gateway seeds from: it must start anyway
    poison = device()
    rds.set(LATEST_KEY.format(device_id=poison), deep_update(poison), ex=60)
    rds.zadd(DEVICES_KEY, {poison: int(time.time() * 1000), b"\xff\xfe": 1})
    rds.set(LATEST_KEY.encode().replace(b"{device_id}", b"\xff\xfe"), b"\xff\xfe{", ex=60)
    gw = own_gateway(tmp_path, stack.urls["redis"], mqtt_url)
    try:
        st = Stomp(gw)
        ws = gw.ws()
        try:
            st.subscribe(f"/topic/devices/{dev}")
            publish(rds, update(dev, 1))
            ((headers, _),) = st.messages(1, dev)
            (ws_msg,) = ws_messages(ws, 1, dev)
            gw.proc.send_signal(signal.SIGKILL)
            gw.proc.wait(10)
        finally:
            st.close()
            ws.close()
        missed = [publish(rds, update(dev, seq)) for seq in range(2, 7)]
        gw.start()
        assert metric(gw.metrics(), "pipeline_gateway_bad_latest_total") == 2
        st = Stomp(gw)
        ws = gw.ws(f"/coordinates?since={ws_msg['stream_id']}")
        try:
            st.subscribe(f"/topic/devices/{dev}", since=headers["stream-id"])
            got = st.messages(5, dev)
            got_ws = ws_messages(ws, 5, dev)
            live = publish(rds, update(dev, 7))
            got += st.messages(1, dev)
            got_ws += ws_messages(ws, 1, dev)
        finally:
            st.close()
            ws.close()
    finally:
        gw.stop()
    assert [h["stream-id"] for h, _ in got] == missed + [live]
    assert seqs([m for _, m in got]) == list(range(2, 8))
    assert [m["stream_id"] for m in got_ws] == missed + [live]


@pytest.mark.parametrize("drop_connection", [False, True], ids=["paused", "paused+cut"])
def test_reader_counts_entries_trimmed_while_it_was_away(
    own_redis, mqtt_url, tmp_path, drop_connection
):
    stack, rds = own_redis
    dev = device()
    with own_gateway(tmp_path, stack.urls["redis"], mqtt_url) as gw:
        ws = gw.ws()
        try:
            publish(rds, update(dev, 1))
            ws_messages(ws, 1, dev)
            gw.proc.send_signal(signal.SIGSTOP)  # away: holds its connection, reads nothing
            try:
                for seq in range(2, 31):
                    publish(rds, update(dev, seq))
                rds.xtrim(UPDATES_STREAM, maxlen=5, approximate=False)  # 26..30 are left
                if drop_connection:
                    rds.client_kill_filter(_type="normal", skipme=True)
            finally:
                gw.proc.send_signal(signal.SIGCONT)
            got = []
            while not got or got[-1]["trace"]["seq"] != 30:
                got += ws_messages(ws, 1, dev)
            last = publish(rds, update(dev, 31))
            (tail,) = ws_messages(ws, 1, dev)
        finally:
            ws.close()
        values = gw.metrics()
    # Redis answered the blocked read with entry 2 before the pause ended (and may have
    # before the connection was cut); then what the trim left, in order, nothing twice.
    assert seqs(got) in ([26, 27, 28, 29, 30], [2, 26, 27, 28, 29, 30])
    assert tail["stream_id"] == last
    assert metric(values, "pipeline_gateway_stream_gaps_total") == 1
    assert metric(values, "pipeline_gateway_redis_reconnects_total") == int(drop_connection)
    assert "event=stream_gap" in gw.log()


# -- bad stored data ----------------------------------------------------------------------
def test_poison_in_the_stream_and_latest_values_no_500_and_push_continues(gateway, rds):
    dev, poison = device(), device()
    good = update(dev, 1)
    rds.set(LATEST_KEY.format(device_id=dev), json.dumps(good), ex=60)
    rds.set(LATEST_KEY.format(device_id=poison), deep_update(poison), ex=60)
    rds.zadd(DEVICES_KEY, {dev: int(time.time() * 1000), poison: int(time.time() * 1000)})
    assert len(deep_update(poison)) < 2100
    before = gateway.metrics()
    st = Stomp(gateway)
    ws = gateway.ws()
    try:
        st.subscribe("/topic/coordinates")
        since = publish(rds, update(dev, 0))
        bad = [
            publish(rds, deep_update(dev)),  # an object with device_id, 985 deep
            publish(rds, b"\xff\xfe not utf-8"),
            publish(rds, json.dumps(update(dev, 99, pad="x" * 300_000))),  # far too large
            rds.xadd(UPDATES_STREAM, {b"other": b"no m field"}).decode(),
        ]
        sid = publish(rds, update(dev, 1))
        got = st.messages(2, dev)
        got_ws = ws_messages(ws, 2, dev)
        # a replay across the same entries skips them as well
        st.subscribe("/topic/coordinates", "again", since=since)
        replayed = [(h, m) for h, m in st.messages(1, dev) if h["subscription"] == "again"]
    finally:
        st.close()
        ws.close()
    assert [h["stream-id"] for h, _ in got] == [since, sid]
    assert [m["stream_id"] for m in got_ws] == [since, sid]
    assert [h["stream-id"] for h, _ in replayed] == [sid]
    assert len(bad) == 4

    everything = gateway.http.get("/api/coordinates")
    assert everything.status_code == 200
    ids = {m["device_id"] for m in everything.json()}
    assert dev in ids and poison not in ids
    one = gateway.http.get(f"/api/coordinates/{poison}")
    assert one.status_code == 502 and "JSON object" in one.json()["detail"]
    assert gateway.http.get(f"/api/coordinates/{dev}").json()["x"] == 1.0

    after = gateway.metrics()

    def delta(name: str) -> float:
        return metric(after, name) - metric(before, name)

    assert delta("pipeline_gateway_bad_updates_total") == 4
    assert delta("pipeline_gateway_bad_latest_total") == 2  # the list and the single GET
    assert gateway.healthy()
    rds.delete(LATEST_KEY.format(device_id=poison))
    rds.zrem(DEVICES_KEY, poison)


# -- in-process: the seam when the gateway's own reader is behind or the buffer overflows --
def run_replay(redis_url: str, ids: list[str], since: int, feed, queue: int) -> list[dict]:
    """Replay into one raw WebSocket outbox after ``ids[since]`` while ``feed(hub, task,
    sent)`` plays the gateway's reader; every frame the outbox sent, decoded, in order."""

    async def main() -> list[dict]:
        stats = GatewayStats()
        hub = Hub(Settings(), stats)
        replayer = Replayer(redis_url, hub, stats)
        outbox = Outbox("websocket", queue, stats)
        sent: list[dict] = []

        async def send(text: str) -> None:
            sent.append(json.loads(text))
            await asyncio.sleep(0)  # a client that takes its time

        async def close() -> None:
            pass

        sender = asyncio.create_task(run_sender(outbox, send, close))
        failed: list[bool] = []
        task = replayer.start(outbox, None, key_of(ids[since]), lambda: failed.append(True))
        await feed(hub, task, sent)
        await asyncio.wait_for(task, 20)
        for _ in range(1000):
            if not outbox.items:
                break
            await asyncio.sleep(0.001)
        outbox.close_after_drain()
        await asyncio.wait_for(sender, 5)
        await replayer.client.aclose()
        assert not failed
        assert stats.dropped[("websocket", "queue_full")] == 0  # the replay waits, never drops
        return sent

    return asyncio.run(main())


def stored(rds: redis.Redis, sid: str) -> bytes:
    ((_, fields),) = rds.xrange(UPDATES_STREAM, min=sid, max=sid)
    return fields[STREAM_FIELD]


def test_replay_drops_what_a_lagging_reader_hands_over_again(own_redis):
    stack, rds = own_redis
    dev = device()
    ids = [publish(rds, update(dev, seq)) for seq in range(1, 101)]

    async def feed(hub, task, sent) -> None:
        hub.note(ids[9])  # the reader has reached entry 10 only
        await asyncio.wait_for(asyncio.shield(task), 20)  # the replay read up to 100
        for sid in ids[10:]:  # the reader catches up: all of these were replayed already
            hub.publish(stored(rds, sid), sid)
        for seq in (101, 102):  # then new ones: live, exactly once
            sid = publish(rds, update(dev, seq))
            ids.append(sid)
            hub.publish(stored(rds, sid), sid)

    sent = run_replay(stack.urls["redis"], ids, 4, feed, queue=1000)
    assert seqs(sent) == list(range(6, 103))
    assert [m["stream_id"] for m in sent] == ids[5:]


def test_replay_under_load_overflowing_its_buffer_loses_nothing(own_redis):
    stack, rds = own_redis
    dev = device()
    ids = [publish(rds, update(dev, seq)) for seq in range(1, 1201)]

    async def feed(hub, task, sent) -> None:
        hub.note(ids[-1])
        # Live updates while the replay delivers its last chunk (1001..1200), after that
        # chunk was read: far more than the gate buffers (queue 40 -> 20), so the buffer
        # overflows and the replay must read the stream again rather than skip to it.
        while len(sent) < 1100:
            await asyncio.sleep(0.001)
        for seq in range(1201, 1501):
            sid = publish(rds, update(dev, seq))
            ids.append(sid)
            hub.publish(stored(rds, sid), sid)
            await asyncio.sleep(0)

    sent = run_replay(stack.urls["redis"], ids, 0, feed, queue=40)
    assert seqs(sent) == list(range(2, 1501))
    assert [m["stream_id"] for m in sent] == ids[1:]


def test_every_gateway_metric_is_documented(gateway):
    docs = (REPO / "docs" / "metrics.md").read_text()
    names = {name for name, _ in gateway.metrics() if name.startswith("pipeline_gateway_")}
    assert {"pipeline_gateway_stream_gaps_total", "pipeline_gateway_replays_total"} <= names
    hists = ("pipeline_gateway_push_latency_seconds", "pipeline_gateway_ingest_latency_seconds")
    families = {next((h for h in hists if name.startswith(h + "_")), name) for name in names}
    assert sorted(f for f in families if f"`{f}`" not in docs) == []


def test_replay_waits_for_the_reader_to_note_where_it_starts(own_redis):
    """A client back before the restarted gateway's reader has begun: the reader will skip
    what is older than the end it notes (it seeds those), so the replay must reach it."""
    stack, rds = own_redis
    dev = device()
    ids = [publish(rds, update(dev, seq)) for seq in range(1, 11)]

    async def feed(hub, task, sent) -> None:
        await asyncio.sleep(0.2)  # the replay would have read the stream by now
        ids.extend(publish(rds, update(dev, seq)) for seq in range(11, 21))
        hub.note(ids[-1])  # the reader starts: 11..20 it will never hand to the hub
        sid = publish(rds, update(dev, 21))
        ids.append(sid)
        hub.publish(stored(rds, sid), sid)

    sent = run_replay(stack.urls["redis"], ids, 4, feed, queue=1000)
    assert seqs(sent) == list(range(6, 22))
    assert [m["stream_id"] for m in sent] == ids[5:]
