"""The ledger: per-subscriber sequence accounting and the master's loss decision."""

from __future__ import annotations

import json

from telemetry import envelope
from telemetry.collector import Collector
from telemetry.ledger import COUNTERS, Ledger, hop_name

S = 1_000_000_000  # ns per second
BASE = 1_800_000_000 * S  # a fixed epoch-ns origin: tests own their clock


def _msg(device: str, seq: int, *, run: str = "run", t0: int | None = None, **hops: int) -> bytes:
    t0 = BASE + seq * 100_000_000 if t0 is None else t0
    payload = envelope.build(device, 1.0, 2.0, run=run, seq=seq, t0=t0, tp=t0 + 1_000)
    if not hops:
        return payload
    msg = json.loads(payload)
    msg["trace"]["hops"] = hops
    return json.dumps(msg).encode()


def _counters(sub, path="mqtt→stomp"):
    return dict(zip(COUNTERS, sub.summary(BASE)["counters"][path], strict=True))


def _e2e(ledger: Ledger, *, grace_s: float = 5.0) -> dict:
    collector = Collector(ledger.run_id, grace_s=grace_s, drain_s=0)
    collector.merge("local", ledger.final(BASE))
    return json.loads(json.dumps(collector.e2e()))  # what is written must be JSON


def _publish(ledger: Ledger, device: str, seqs, *, since: int = BASE) -> None:
    for seq in seqs:
        t0 = since + seq * 100_000_000
        ledger.published(device, seq, t0, t0 + 1_000)


def test_in_order_delivery_is_complete():
    ledger = Ledger("run")
    sub = ledger.subscriber("stomp")
    sub.since_ns = BASE
    _publish(ledger, "d1", range(1, 11))
    for seq in range(1, 11):
        sub.received(_msg("d1", seq), BASE + seq * 100_000_000 + 5_000_000)
    assert _counters(sub)["delivered"] == 10
    totals = _e2e(ledger)["paths"]["mqtt→stomp"]["totals"]
    assert totals["delivered"] == 10
    assert totals["lost"] == 0
    assert totals["devices_complete"] == 1
    assert totals["expected"] == totals["published"] == 10


def test_gap_duplicate_reorder_and_late():
    ledger = Ledger("run", grace_s=1.0)
    sub = ledger.subscriber("stomp")
    sub.since_ns = BASE
    t = BASE + 10 * S
    for seq in (1, 2, 5):  # opens gap 3..4 at t
        sub.received(_msg("d1", seq), t)
    sub.received(_msg("d1", 2), t)  # duplicate
    sub.received(_msg("d1", 3), t + S // 2)  # within grace: reordered
    assert sub.overdue(t + S // 2) == {}
    assert sub.overdue(t + 2 * S) == {"mqtt→stomp": 1}  # 4 overdue after grace
    sub.received(_msg("d1", 4), t + 2 * S)  # after grace: late, no longer lost
    c = _counters(sub)
    assert (c["delivered"], c["duplicated"], c["reordered"], c["late"]) == (5, 1, 1, 1)
    assert sub.overdue(t + 3 * S) == {}
    assert sub.streams["d1"].contiguous == 5


def test_lost_after_grace_and_tail_lost_at_the_end():
    ledger = Ledger("run", grace_s=1.0)
    sub = ledger.subscriber("stomp")
    sub.since_ns = BASE
    _publish(ledger, "d1", range(1, 11))
    t = BASE + 10 * S
    for seq in (1, 2, 3, 6, 7):  # 4, 5 missing; 8..10 never came
        sub.received(_msg("d1", seq), t)
    assert sub.overdue(t + 2 * S) == {"mqtt→stomp": 2}
    e2e = _e2e(ledger)
    totals = e2e["paths"]["mqtt→stomp"]["totals"]
    assert totals["lost"] == 2 + 3
    assert totals["expected"] == 10
    assert totals["devices_incomplete"] == 1
    assert e2e["paths"]["mqtt→stomp"]["worst_devices"]["lost"] == [
        {"device_id": "d1", "subscriber": sub.id, "lost": 5}
    ]


def test_never_seen_device_and_late_subscriber():
    ledger = Ledger("run")
    early = ledger.subscriber("stomp")
    early.since_ns = BASE
    late = ledger.subscriber("ws")
    late.since_ns = BASE + 5 * 100_000_000 + 1  # after seq 5 was published
    _publish(ledger, "d1", range(1, 11))
    _publish(ledger, "d2", range(1, 5))
    for seq in range(6, 11):
        late.received(_msg("d1", seq), BASE + 2 * S)
        early.received(_msg("d1", seq), BASE + 2 * S)
    e2e = _e2e(ledger)
    stomp = e2e["paths"]["mqtt→stomp"]["totals"]
    ws = e2e["paths"]["mqtt→ws"]["totals"]
    # early: missed d1 1..5 (it was there) and all of d2
    assert stomp["lost"] == 5 + 4
    assert stomp["devices_never_seen"] == 1
    # late subscriber: d1 expected from its first seq, d2 (done before it joined) estimated 0
    assert ws["lost"] == 0
    assert ws["lost_estimated"] == 0


def test_foreign_run_untraced_and_out_of_scope_are_counted_not_delivered():
    ledger = Ledger("run")
    sub = ledger.subscriber("stomp", devices=["d1"])
    sub.received(_msg("d1", 1, run="other"), BASE)
    sub.received(_msg("d2", 1), BASE)
    sub.received(b"{}", BASE)
    sub.received(b"\x00garbage", BASE)
    c = _counters(sub)
    assert (c["delivered"], c["foreign_run"], c["out_of_scope"]) == (0, 1, 1)
    assert sub.untraced == 2
    assert ledger.histograms.total_count() == 0
    e2e = _e2e(ledger)
    assert e2e["ignored"] == {"foreign_run": 1, "untraced": 2, "reports_of_other_runs": 0}


def test_closed_subscriber_is_not_charged_tail_loss():
    ledger = Ledger("run")
    sub = ledger.subscriber("stomp")
    sub.since_ns = BASE
    _publish(ledger, "d1", range(1, 11))
    for seq in range(1, 4):
        sub.received(_msg("d1", seq), BASE + S)
    sub.close()
    assert _e2e(ledger)["paths"]["mqtt→stomp"]["totals"]["lost"] == 0


def test_hop_deltas_by_leg_name():
    ledger = Ledger("run")
    sub = ledger.subscriber("stomp")
    t0 = BASE
    sub.received(
        _msg(
            "d1", 1, t0=t0, bridge=t0 + 2_000_000, consumer=t0 + 5_000_000, gateway=t0 + 9_000_000
        ),
        t0 + 10_000_000,
    )
    h = ledger.histograms

    def median_is(hop: str, us: int) -> bool:
        hist = h.get("mqtt→stomp", hop)
        return hist.count == 1 and hist.hdr.values_are_equivalent(hist.percentile(50), us)

    assert median_is("total", 10_000)
    assert median_is("service", 9_999)
    assert median_is("mqtt", 1_999)
    assert median_is("kafka", 3_000)
    assert median_is("redis", 4_000)
    assert median_is("push", 1_000)
    assert hop_name("mqtt", 1, 3) == "kafka+redis"  # consumer left no stamp
    assert hop_name("kafka", 0, 2) == "kafka"  # produced straight into Kafka


def test_http_entry_has_its_own_first_leg_then_the_shared_ones():
    ledger = Ledger("run")
    sub = ledger.subscriber("stomp")
    t0 = BASE
    body = envelope.build("h1", 1.0, 2.0, run="run", seq=1, t0=t0, tp=t0 + 1_000, src="http")
    msg = json.loads(body)
    msg["trace"]["hops"] = {
        "gateway_ingest": t0 + 3_000_000,
        "consumer": t0 + 5_000_000,
        "gateway": t0 + 9_000_000,
    }
    sub.received(json.dumps(msg).encode(), t0 + 10_000_000)
    hops = {hop for (path, hop), _ in ledger.histograms if path == "http→stomp"}
    assert hops == {"total", "service", "http", "kafka", "redis", "push"}
    ingest = ledger.histograms.get("http→stomp", "http")
    assert ingest.hdr.values_are_equivalent(ingest.percentile(50), 2_999)  # tp -> ingest
    assert hop_name("http", 0, 1) == "http"
    assert hop_name("http", 0, 2) == "http+kafka"  # the ingest left no stamp
    assert hop_name("mqtt", 0, 2) == "mqtt+kafka"


def test_snapshot_mode_reports_staleness_not_loss():
    ledger = Ledger("run")
    sub = ledger.subscriber("ws")
    sub.since_ns = BASE
    _publish(ledger, "a", range(1, 21))
    _publish(ledger, "b", range(1, 21))

    def batch(sent, **seqs):
        devices = [json.loads(_msg(d, s)) for d, s in seqs.items()]
        return json.dumps({"type": "snapshot", "sent_ns": sent, "devices": devices})

    sub.received(batch(BASE + 3 * S, a=5, b=5), BASE + 3 * S + 1_000_000)
    sub.received(batch(BASE + 4 * S, a=15, b=5), BASE + 4 * S + 1_000_000)  # a conflated 9
    sub.received(batch(BASE + 5 * S, a=14, b=20), BASE + 5 * S + 1_000_000)  # a regressed
    assert sub.mode == "snapshot"
    e2e = _e2e(ledger)
    path = e2e["paths"]["mqtt→ws"]
    assert path["totals"]["lost"] == 0
    assert path["snapshot"] == {
        "batches": 3,
        "updates": 4,
        "repeats": 1,
        "conflated": 9 + 14,
        "regressions": 1,
    }
    # staleness of b's value 5 when shown the second time: 4 s + 1 ms - 0.5 s
    worst = path["worst_devices"]["max_staleness_us"][0]
    assert worst["device_id"] == "b"
    assert worst["max_staleness_us"] == 3_501_000
    assert path["latency"]["staleness"]["count"] == 5
    assert e2e["batch_push"]["*→ws"]["count"] == 3


def test_gap_memory_is_bounded():
    from telemetry._sequence import MAX_GAPS

    ledger = Ledger("run")
    sub = ledger.subscriber("stomp")
    for i in range(MAX_GAPS + 50):
        sub.received(_msg("d1", 1 + 2 * i), BASE)  # every other seq missing
    st = sub.streams["d1"]
    assert st.gaps is not None and len(st.gaps) == MAX_GAPS
    assert st.missing() == MAX_GAPS + 49


def test_reports_carry_sums_every_time_and_each_summary_once_until_asked():
    ledger = Ledger("run")
    subs = [ledger.subscriber("stomp", ["d1"]) for _ in range(3)] + [ledger.subscriber("ws")]
    for sub in subs:
        sub.since_ns = BASE
    _publish(ledger, "d1", range(1, 6))
    for sub in subs:
        for seq in range(1, 6 if sub.kind == "stomp" else 3):
            sub.received(_msg("d1", seq), BASE + seq * 100_000_000 + 5_000_000)
    pauses = []
    first = ledger.report(BASE, every_sub=False, pause=lambda: pauses.append(1))
    assert set(first["subs"]) == {s.id for s in subs}  # new ones: every summary once
    collector = Collector("run", grace_s=5.0, drain_s=0)
    collector.merge("w1", first)
    delivered = COUNTERS.index("delivered")
    assert first["live"]["stomp"]["subs"] == 3
    assert first["live"]["stomp"]["counters"]["mqtt→stomp"][delivered] == 15
    assert first["live"]["ws"]["counters"]["mqtt→ws"][delivered] == 2
    assert collector.delivered_total() == 17

    late = ledger.subscriber("stomp", ["d1"])
    late.since_ns = BASE
    subs[0].received(_msg("d1", 6), BASE + 6 * 100_000_000 + 5_000_000)
    second = ledger.report(BASE, every_sub=False)
    assert list(second["subs"]) == [late.id]  # only the one no report carried yet
    collector.merge("w1", second)
    assert collector.delivered_total() == 18  # the sums are current all the same
    assert ledger.report(BASE)["subs"].keys() == {s.id for s in [*subs, late]}


def test_a_payload_without_sums_is_summed_from_its_summaries():
    ledger = Ledger("run")
    sub = ledger.subscriber("stomp", ["d1"])
    sub.since_ns = BASE
    _publish(ledger, "d1", range(1, 4))
    for seq in range(1, 4):
        sub.received(_msg("d1", seq), BASE + seq * 100_000_000 + 5_000_000)
    payload = ledger.report(BASE)
    del payload["live"]  # e.g. a worker of an older version
    collector = Collector("run", grace_s=5.0, drain_s=0)
    collector.merge("w1", payload)
    assert collector.delivered_total() == 3
