"""The ingest comparison's arithmetic: keeping up, per-core rate, ratios and their bounds."""

from __future__ import annotations

from telemetry.ingest_compare import Phase, summarise
from users.ingest_sweep import IngestSweep


def phase(src: str, step: int, offered: float, acked: int, *, failed: int = 0, cpu_s: float = 1.0,
          ack_us: int = 1_000, sent: int = 0, received: int = 0) -> dict:  # fmt: skip
    p = Phase(step, src, int(offered / 10), offered, opened=100.0, closed=110.0)
    p.acked, p.failed, p.cpu_s = acked, failed, cpu_s
    p.wire_sent, p.wire_received = sent, received
    for _ in range(acked):
        p.ack.record_us(ack_us)
        p.e2e.record_us(ack_us * 10)
    return p.as_dict()


def test_a_phase_keeps_up_with_95_percent_acknowledged_and_1_percent_failed():
    assert phase("mqtt", 1, 100, 950)["keeps_up"]  # 95/s of 100/s over 10 s
    assert not phase("mqtt", 1, 100, 940)["keeps_up"]
    assert not phase("http", 1, 100, 1000, failed=11)["keeps_up"]
    got = phase("http", 1, 100, 1000, cpu_s=2.0, sent=400_000, received=160_000)
    assert (got["acked_per_s"], got["cpu_percent"], got["per_core_per_s"]) == (100.0, 20.0, 500)
    assert (got["bytes_sent_per_msg"], got["bytes_received_per_msg"]) == (400.0, 160.0)
    assert got["ack_ms"]["count"] == 1000 and 0.99 <= got["ack_ms"]["p50"] <= 1.01


def test_throughput_is_each_sides_most_and_the_rest_is_compared_at_one_step():
    phases = [
        phase("mqtt", 1, 100, 1000, cpu_s=1.0, ack_us=1_000, sent=230_000, received=4_000),
        phase("http", 1, 100, 1000, cpu_s=2.0, ack_us=20_000, sent=400_000, received=160_000),
        phase("mqtt", 2, 200, 2000, cpu_s=2.0, ack_us=1_000, sent=460_000, received=8_000),
        phase("http", 2, 200, 1500, cpu_s=3.0),  # fell behind: 150/s of 200/s
        phase("mqtt", 3, 400, 3000),  # fell behind too
    ]
    summary = summarise(phases)
    assert summary["by_src"]["mqtt"]["best"]["step"] == 2
    assert summary["by_src"]["http"]["best"]["step"] == 1
    ratios = summary["ratios"]
    assert (ratios["throughput"], ratios["throughput_bound"]) == (2.0, "measured")  # 300 / 150
    # step 1 is the highest where both kept up: equal fleets, the same rate
    assert (ratios["at_step"], ratios["at_offered_per_s"], ratios["both_kept_up"]) == (1, 100, True)
    assert ratios["per_core"] == 2.0  # 1000 vs 500 per CPU second
    assert 19 <= ratios["ack_p50"] <= 21
    assert ratios["bytes_per_msg"] == round(560 / 234, 2)
    # no step where both kept up: the highest both ran
    behind = summarise([phase("mqtt", 1, 100, 1000), phase("http", 1, 100, 500)])["ratios"]
    assert (behind["at_step"], behind["both_kept_up"]) == (1, False)


def test_a_side_that_never_saturated_makes_the_ratio_a_bound():
    phases = [phase("mqtt", 1, 100, 1000), phase("http", 1, 100, 500)]
    assert summarise(phases)["ratios"]["throughput_bound"] == "at least"
    phases = [phase("mqtt", 1, 100, 1000), phase("http", 1, 100, 1000)]
    assert summarise(phases)["ratios"]["throughput_bound"] == "neither saturated"


def test_the_sweep_drops_a_protocol_once_it_fell_behind_and_stopped_rising():
    shape = IngestSweep()
    shape._judge("http", 215.0, kept_up=False)  # behind at the first step: may still rise
    assert shape._saturated == set()
    shape._judge("http", 420.0, kept_up=False)  # behind, but twice the rate: go on
    assert shape._saturated == set()
    shape._judge("http", 440.0, kept_up=False)  # +5 %: the plateau
    assert shape._saturated == {"http"}
    shape._judge("mqtt", 1000.0, kept_up=True)
    shape._judge("mqtt", 1000.0, kept_up=True)  # keeping up is never saturation
    assert "mqtt" not in shape._saturated
