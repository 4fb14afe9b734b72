"""Clock offsets: the NTP-style exchange, the minimum-delay filter, and the correction
the envelope and the ledger apply to every timestamp of a worker."""

from __future__ import annotations

import random
import time

import pytest
from locust.env import Environment
from locust.event import Events
from locust.rpc import Message
from locust.runners import MasterRunner, WorkerRunner

from telemetry import clock, envelope
from telemetry._offset import Offset, sample
from telemetry.ledger import Ledger

MS = 1_000_000


@pytest.fixture
def offset():
    """This process's offset, restored after the test (it is process-wide state)."""
    saved = clock.state.offset_ns
    yield clock.state
    clock.state.reset()
    clock.state.offset_ns = saved


class _Master(MasterRunner):
    """A master without sockets: its replies go straight to the worker's handler."""

    def __init__(self, environment: Environment) -> None:  # noqa: D107
        self.environment = environment
        self.custom_messages = {}
        self.greenlet = None
        self.worker: _Worker | None = None

    def send_message(self, msg_type, data=None, client_id=None):
        assert self.worker is not None
        listener, _ = self.worker.custom_messages[msg_type]
        listener(environment=self.worker.environment, msg=Message(msg_type, data, client_id))


class _Worker(WorkerRunner):
    def __init__(self, environment: Environment, master: _Master) -> None:  # noqa: D107
        self.environment = environment
        self.custom_messages = {}
        self.greenlet = None
        self.client_id = "w1"
        self.master = master

    def send_message(self, msg_type, data=None, client_id=None):
        listener, _ = self.master.custom_messages[msg_type]
        listener(environment=self.master.environment, msg=Message(msg_type, data, self.client_id))


class _SkewedClock:
    """The worker's clock: the real one plus a skew. The exchange itself is instant, so a
    one-way delay is simulated by stamping the send earlier and the receive later."""

    def __init__(self, skew_ns: int) -> None:
        self.skew_ns = skew_ns
        self.up_ns = self.down_ns = 0
        self._sending = True

    def __call__(self) -> int:
        now = time.time_ns() + self.skew_ns
        stamp = now - self.up_ns if self._sending else now + self.down_ns
        self._sending = not self._sending
        return stamp


def test_one_exchange_gives_offset_delay_and_uncertainty():
    # worker 50 ms ahead; 3 ms up, 1 ms down; the master answers 0.2 ms later
    t0 = 1_000 * MS + 50 * MS
    t1 = 1_000 * MS + 3 * MS
    t2 = t1 + MS // 5
    t3 = t2 + 1 * MS + 50 * MS
    est = sample(t0, t1, t2, t3)
    assert est.delay_ns == 4 * MS
    assert est.uncertainty_ns == 2 * MS
    # asymmetric paths bias the offset by half their difference, within the uncertainty
    assert est.offset_ns == 49 * MS
    assert abs(est.offset_ns - 50 * MS) <= est.uncertainty_ns


def test_pings_over_the_message_channel_recover_a_skew_through_queueing_noise():
    master_env, worker_env = Environment(events=Events()), Environment(events=Events())
    master = master_env.runner = _Master(master_env)
    master.register_message(clock.MSG_PING, clock._on_ping)
    worker = worker_env.runner = _Worker(worker_env, master)
    master.worker = worker
    skewed = _SkewedClock(50 * MS)
    sync = clock.ClockSync(worker, Offset(), clock_ns=skewed)
    worker.register_message(clock.MSG_PONG, sync.on_pong)

    rng = random.Random(7)
    for i in range(clock.WINDOW):
        # queueing adds 0.3-20 ms each way; one exchange (the 5th) is quick and nearly symmetric
        quick = i == 4
        skewed.up_ns = 300_000 if quick else rng.randrange(300_000, 20 * MS)
        skewed.down_ns = 250_000 if quick else rng.randrange(300_000, 20 * MS)
        sync.ping()
    est = sync.offset
    assert est.samples == clock.WINDOW
    # half the quickest round trip (plus the few µs the in-process exchange really took)
    assert 275_000 <= est.uncertainty_ns < 275_000 + 500_000
    assert abs(est.offset_ns - 50 * MS) <= est.uncertainty_ns
    assert est.to_wire()["offset_ns"] == est.offset_ns


def test_the_window_forgets_old_samples():
    sync = clock.ClockSync(None, Offset())  # type: ignore[arg-type]
    sync.add(clock.Estimate(offset_ns=10 * MS, delay_ns=100_000, at_ns=1))
    for i in range(clock.WINDOW):
        sync.add(clock.Estimate(offset_ns=12 * MS, delay_ns=800_000 + i, at_ns=2 + i))
    # the quick old sample left the window: the clock drifted, the estimate follows it
    assert sync.offset.offset_ns == 12 * MS and sync.offset.uncertainty_ns == 400_000


def test_offsets_are_applied_only_when_enabled_and_larger_than_their_uncertainty():
    off = Offset()
    off.set(clock.Estimate(offset_ns=50 * MS, delay_ns=MS, at_ns=1), 3)
    assert off.offset_ns == 50 * MS
    assert off.to_wire() == {"offset_ns": 50 * MS, "uncertainty_ns": MS // 2, "samples": 3,
                             "enabled": True, "applied_ns": 50 * MS}  # fmt: skip
    # 0.3 ms ± 0.5 ms: indistinguishable from 0 (same host): correcting would add error
    off.set(clock.Estimate(offset_ns=300_000, delay_ns=MS, at_ns=2), 4)
    assert off.offset_ns == 0 and off.to_wire()["offset_ns"] == 300_000
    off.enabled = False  # --clock-sync false: measured, reported, not applied
    off.set(clock.Estimate(offset_ns=50 * MS, delay_ns=MS, at_ns=3), 5)
    assert off.offset_ns == 0 and off.to_wire()["offset_ns"] == 50 * MS


def test_a_publisher_ahead_by_50_ms_and_a_subscriber_on_the_master_clock_agree(offset):
    master_now = time.time_ns()
    # the publisher's host runs 50 ms ahead: it stamps its own clock, the envelope corrects it
    offset.offset_ns = 50 * MS
    t0_local = master_now + 50 * MS
    body = envelope.build("robot-1", 1.0, 2.0, run="r", seq=1, t0=t0_local, tp=t0_local + MS)
    pub = Ledger("r", fire=None)
    pub.published("robot-1", 1, t0_local, t0_local + MS)
    assert pub.publishers["robot-1"].first_tp == master_now + MS  # kept on the master's clock
    tr = envelope.parse(body)
    assert (tr.t0, tr.tp) == (master_now, master_now + MS)

    # the subscriber's host is the master's: 7 ms later on its clock
    offset.offset_ns = 0
    sub_ledger = Ledger("r", fire=None)
    sub = sub_ledger.subscriber("stomp")
    sub.received(body, master_now + 7 * MS)
    total = sub_ledger.histograms.get("mqtt→stomp", "total")
    assert total.count == 1
    assert 6.99 <= total.percentile(50) / 1000 <= 7.01  # not 7 - 50 = -43 ms


def test_a_subscriber_behind_by_20_ms_reads_its_receive_times_on_the_master_clock(offset):
    master_now = time.time_ns()
    body = envelope.build("robot-1", 1.0, 2.0, run="r", seq=1, t0=master_now, tp=master_now)
    offset.offset_ns = -20 * MS
    ledger = Ledger("r", fire=None)
    sub = ledger.subscriber("stomp")
    assert abs(sub.since_ns - master_now) < 5_000 * MS  # on the master's clock, +20 ms
    sub.received(body, master_now - 20 * MS + 3 * MS)
    p50_ms = ledger.histograms.get("mqtt→stomp", "total").percentile(50) / 1000
    assert 2.99 <= p50_ms <= 3.01
