"""HttpDevice against real HTTP servers: a raw socket server that keeps every byte, and
the real gateway's ingest endpoint (its answers to bad input).

The raw server is the check on the byte counts: what the device says it sent and
received must be exactly what the server read and wrote. The gateway here has no
Kafka (its good input is in ``tests/integration/test_http_ingest.py``): what it
must reject is decided before Kafka is asked.
"""

from __future__ import annotations

import json
import threading

import httpx
import pytest
from gevent.server import StreamServer

from pipeline.gateway._ingest import STATUS
from telemetry import envelope
from telemetry.wire import wire_count
from tests.harness import Gateway, LocustRun
from tests.helpers import metric_value
from users.http import INGEST_NAME, REQUEST_TYPE, WIRE_PROTOCOL, HttpDevice

ACCEPTED = (
    b"HTTP/1.1 202 Accepted\r\ncontent-type: application/json\r\n"
    b'content-length: 27\r\n\r\n{"partition":1,"offset":42}'
)
REFUSED = (
    b"HTTP/1.1 422 Unprocessable Content\r\ncontent-type: application/json\r\n"
    b'content-length: 19\r\n\r\n{"reason":"schema"}'
)


class RawServer:
    """HTTP/1.1 keep-alive on a raw socket: keeps each request and counts every byte."""

    def __init__(self, answer: bytes = ACCEPTED) -> None:
        self.answer = answer
        self.received = 0
        self.sent = 0
        self.connections = 0
        self.requests: list[tuple[bytes, bytes]] = []  # (request head, body)
        self._lock = threading.Lock()
        self.server = StreamServer(("127.0.0.1", 0), self._serve)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def _serve(self, sock, _addr) -> None:
        self.connections += 1
        buf = b""
        while True:
            data = sock.recv(65536)
            if not data:
                return
            self.received += len(data)
            buf += data
            while b"\r\n\r\n" in buf:
                head, _, rest = buf.partition(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                if len(rest) < length:
                    break
                self.requests.append((head, rest[:length]))
                buf = rest[length:]
                sock.sendall(self.answer)
                self.sent += len(self.answer)


@pytest.fixture
def raw_server():
    server = RawServer()
    server.server.start()
    yield server
    server.server.stop()


class Poster(HttpDevice):
    interval = 0.02
    fixed_count = 3


def test_posts_the_envelope_on_its_timetable_and_counts_every_byte(raw_server, tmp_path):
    with LocustRun([Poster], "--gateway-url", raw_server.url, results=tmp_path) as run:
        run.start(3)
        run.wait(lambda: run.count(INGEST_NAME, REQUEST_TYPE) >= 60, 20, "60 ingest requests")
        ledger = run.ledger
        wire = wire_count(run.env, WIRE_PROTOCOL)
        connections = wire.connections
        run.runner.stop()  # the users stop; then their counts and the server's are final
        run.wait(
            lambda: len(raw_server.requests) == run.count(INGEST_NAME, REQUEST_TYPE),
            5,
            "every counted request at the server",
        )
        assert run.env.stats.total.num_failures == 0, run.errors()
        assert connections == 3  # one keep-alive connection per device
        assert raw_server.connections == 3
        assert (wire.sent, wire.received) == (raw_server.received, raw_server.sent)
        assert wire.connections == 0  # closed on stop
    seqs: dict[str, list[int]] = {}
    for head, body in raw_server.requests:
        line = head.split(b"\r\n")[0].decode()
        method, path, _ = line.split(" ")
        tr = envelope.parse(body)
        assert tr is not None and tr.src == "http" and tr.run == ledger.run_id
        assert (method, path) == ("POST", f"/api/ingest/{tr.device_id}")
        assert b"content-type: application/json" in head.lower()
        assert json.loads(body)["device_id"] == tr.device_id
        seqs.setdefault(tr.device_id, []).append(tr.seq)
    assert sorted(seqs) == ["http-0001", "http-0002", "http-0003"]
    for got in seqs.values():
        assert got == list(range(1, len(got) + 1))  # in order, none skipped
    published = {d: p.hi for d, p in ledger.publishers.items()}
    assert published == {d: len(s) for d, s in seqs.items()}
    assert all(p.src == "http" for p in ledger.publishers.values())


def test_an_answer_other_than_202_is_a_failure_with_the_reason(tmp_path):
    server = RawServer(REFUSED)
    server.server.start()
    try:
        with LocustRun([Poster], "--gateway-url", server.url, results=tmp_path) as run:
            run.start(3)
            run.wait(lambda: run.count(INGEST_NAME, REQUEST_TYPE) >= 10, 20, "10 requests")
            entry = run.entry(INGEST_NAME, REQUEST_TYPE)
            assert entry.num_failures == entry.num_requests
            assert any("HTTP 422" in e and "schema" in e for e in run.errors().values())
    finally:
        server.server.stop()


# -- the gateway's ingest endpoint, without Kafka -------------------------------------------
@pytest.fixture(scope="module")
def gateway(redis_url, mqtt_url, tmp_path_factory):
    log = tmp_path_factory.mktemp("gw") / "ingest.log"
    with Gateway(
        log, REDIS_URL=redis_url, MQTT_URL=mqtt_url, MAX_PAYLOAD_BYTES="2048"
    ).start() as gw:
        yield gw


def good(device_id: str = "robot-1", **extra) -> dict:
    return {"device_id": device_id, "x": 1.0, "y": 2.0, "timestamp": 1.5, **extra}


BAD = [
    ("not json", b"{nope", 400, "malformed_json"),
    ("not an object", b"[1, 2]", 400, "malformed_json"),
    ("too deep", b"[" * 40 + b"]" * 40, 400, "too_deep"),
    ("too large", b" " * 3000, 413, "oversize"),
    ("other device", json.dumps(good("robot-2")).encode(), 422, "device_mismatch"),
    ("no x", json.dumps({"y": 1.0, "timestamp": 1.0}).encode(), 422, "schema"),
    ("NaN", b'{"x": NaN, "y": 1, "timestamp": 1}', 422, "schema"),
]


def test_ingest_rejects_bad_input_with_one_reason_and_counts_it(gateway):
    before = gateway.http.get("/metrics").text
    for what, body, status, reason in BAD:
        r = gateway.http.post("/api/ingest/robot-1", content=body)
        assert r.status_code == status == STATUS[reason], (what, r.text)
        assert r.json()["reason"] == reason, what
    r = gateway.http.post("/api/ingest/bad%20id", content=json.dumps(good()))
    assert r.status_code == 422  # the device id itself: nothing to dead-letter
    after = gateway.http.get("/metrics").text

    def grew(name: str) -> float:
        return metric_value(after, name) - metric_value(before, name)

    assert grew('pipeline_gateway_ingest_total{result="rejected"}') == len(BAD)
    assert grew('pipeline_gateway_ingest_total{result="invalid"}') == 1
    assert grew('pipeline_gateway_ingest_total{result="accepted"}') == 0
    for reason in ("malformed_json", "too_deep", "oversize", "device_mismatch", "schema"):
        want = sum(1 for *_, r in BAD if r == reason)
        assert grew(f'pipeline_gateway_ingest_rejected_total{{reason="{reason}"}}') == want


def test_ingest_is_in_the_openapi_spec_next_to_commands(gateway):
    spec = httpx.get(f"{gateway.url}/openapi.json").json()
    post = spec["paths"]["/api/ingest/{device_id}"]["post"]
    assert {"202", "400", "413", "422", "503", "504"} <= set(post["responses"])
