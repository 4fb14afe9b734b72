"""The trace envelope: build → read round trip, snapshot batches, garbage rejected."""

from __future__ import annotations

import json

import pytest

from telemetry import envelope
from telemetry.envelope import Snapshot, Trace


def test_build_round_trip_keeps_original_fields_and_trace():
    payload = envelope.build(
        "robot-0007", 123.45, 67.89, run="r1", seq=42, t0=1_000, tp=2_000, timestamp=1691234567.123
    )
    msg = json.loads(payload)
    assert msg == {
        "device_id": "robot-0007",
        "x": 123.45,
        "y": 67.89,
        "timestamp": 1691234567.123,
        "trace": {"run": "r1", "seq": 42, "t0": 1_000, "tp": 2_000, "hops": {}},
    }
    tr = envelope.parse(payload)
    assert isinstance(tr, Trace)
    assert (tr.device_id, tr.run, tr.seq, tr.t0, tr.tp, tr.hops, tr.src) == (
        "robot-0007",
        "r1",
        42,
        1_000,
        2_000,
        {},
        "mqtt",
    )


def test_build_escapes_ids_and_defaults_tp_to_now():
    payload = envelope.build('dev"\\é', 1, 2, run="run\n1", seq=1, t0=5)
    tr = envelope.parse(payload)
    assert tr is not None
    assert tr.device_id == 'dev"\\é'
    assert tr.run == "run\n1"
    assert tr.tp > 1_600_000_000 * 10**9
    assert json.loads(payload)["timestamp"] == pytest.approx(tr.tp / 1e9)


def test_non_mqtt_source_is_carried():
    payload = envelope.build("d", 0.0, 0.0, run="r", seq=3, t0=1, tp=2, src="kafka")
    tr = envelope.parse(payload)
    assert tr is not None and tr.src == "kafka"


def test_wrap_any_template_and_hops_stamped_by_stages_are_read():
    payload = envelope.wrap({"device_id": "d", "temp": 21.5}, run="r", seq=7, t0=10, tp=20)
    msg = json.loads(payload)
    assert msg["temp"] == 21.5
    msg["trace"]["hops"].update(bridge=30, consumer=40, gateway=0, bogus="x")
    tr = envelope.parse(json.dumps(msg))
    assert tr is not None
    assert tr.hops == {"bridge": 30, "consumer": 40}  # 0 = not stamped, non-int ignored


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not json",
        b"\xff\xfe",
        b"[1, 2]",
        b'{"device_id": "d", "x": 1}',  # no trace
        b'{"device_id": "d", "trace": "x"}',
        b'{"device_id": 5, "trace": {"run": "r", "seq": 1, "t0": 1, "tp": 1}}',
        b'{"device_id": "d", "trace": {"run": "r", "seq": 0, "t0": 1, "tp": 1}}',
        b'{"device_id": "d", "trace": {"run": "r", "seq": true, "t0": 1, "tp": 1}}',
        b'{"device_id": "d", "trace": {"run": "r", "seq": 1.5, "t0": 1, "tp": 1}}',
        b'{"device_id": "d", "trace": {"run": null, "seq": 1, "t0": 1, "tp": 1}}',
        b'{"device_id": "d", "trace": {"run": "r", "seq": 1, "t0": "1", "tp": 1}}',
    ],
)
def test_garbage_and_untraced_payloads_read_as_none(data):
    assert envelope.parse(data) is None
    assert envelope.read(data) is None


def test_snapshot_batch():
    one = json.loads(envelope.build("a", 1, 2, run="r", seq=4, t0=10, tp=11))
    two = json.loads(envelope.build("b", 1, 2, run="r", seq=9, t0=20, tp=21))
    batch = json.dumps(
        {"type": "snapshot", "sent_ns": 99, "devices": [one, two, {"device_id": "c"}]}
    )
    snap = envelope.read(batch)
    assert isinstance(snap, Snapshot)
    assert snap.sent_ns == 99
    assert [(t.device_id, t.seq) for t in snap.traces] == [("a", 4), ("b", 9)]
    assert snap.untraced == 1
    assert envelope.parse_snapshot(batch) == snap
    assert envelope.parse_snapshot(json.dumps(one)) is None
    assert envelope.read(b'{"type": "snapshot", "devices": 3}') is None
