"""The end-to-end ledger of one Locust process: what was published, what arrived.

Publishers (device users) and subscribers (STOMP/WS users) call it; it keeps
per-subscriber, per-device sequence accounting (``_sequence``), records every
latency into exact histograms (``hdr``) and per-second windows, and, when it was
given a ``fire`` callable (``--e2e-in-stats true``), fires each sample as a
Locust request event too.

It knows nothing about Locust: ``telemetry.plugin`` creates one per
``Environment`` and ships :meth:`Ledger.report` / :meth:`Ledger.final` to the
master, where ``telemetry.collector`` merges them and decides what was lost.

    ledger = telemetry.get_ledger(environment)
    # publisher (one Locust user = one device)
    if not ledger.draining:
        payload = envelope.build(device_id, x, y, run=ledger.run_id, seq=seq, t0=t0)
        client.publish(topic, payload)
        ledger.published(device_id, seq, t0, tp)
    # subscriber (one per connection)
    sub = ledger.subscriber("stomp")
    sub.received(frame.body)            # every MESSAGE, as bytes/str
    sub.close()                         # on_stop

Times: callers pass their own clock (``time.time_ns()``); the ledger keeps
and ships everything on the master's clock (``telemetry.clock``: minus this
worker's measured offset), so publish and receive times taken on different hosts
compare, and so do subscription times with publish times when loss is decided.

Path names are ``"{src}→{kind}"`` (``mqtt→stomp``); hop names are the legs of
the pipeline a delta crosses (``telemetry.stages``), joined with ``+`` when a
stage in between left no stamp.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from typing import Any

from telemetry import envelope
from telemetry._offset import now_ns as _now
from telemetry._offset import state as _clock
from telemetry._sequence import DUPLICATE, LATE, ORDERED, REORDERED, SnapshotStream, Stream
from telemetry._windows import Windows
from telemetry._wire import PublisherWire
from telemetry.envelope import Snapshot, Trace
from telemetry.hdr import Histogram, HistogramSet
from telemetry.stages import (
    ENTRY_POSITION,
    LEGS,
    POSITION,
    RECEIVE,
    STAMPS,
    hop_name,
    path_name,
)

__all__ = [
    "LEGS",
    "COUNTERS",
    "Ledger",
    "Subscriber",
    "FireFn",
    "add_live",
    "hop_name",
    "path_name",
]

_RECV_POS = POSITION[RECEIVE]

#: Per-path counters of a subscriber, in wire order.
COUNTERS: tuple[str, ...] = (
    "delivered",
    "duplicated",
    "reordered",
    "late",
    "foreign_run",
    "out_of_scope",
)
_DELIVERED, _DUPLICATED, _REORDERED, _LATE, _FOREIGN, _OUT_OF_SCOPE = range(6)

FireFn = Callable[[str, float, int], None]
Pause = Callable[[], None]
#: subscriptions summarised between two ``pause()`` calls in :meth:`Ledger.report` (~1 ms)
REPORT_SLICE = 250
"""``fire(name, response_time_ms, response_length)`` — one E2E request event."""


class _Publisher:
    __slots__ = ("src", "first", "first_tp", "hi", "hi_tp", "count")

    def __init__(self, src: str, seq: int, tp: int) -> None:
        self.src = src
        self.first = seq
        self.first_tp = tp
        self.hi = seq
        self.hi_tp = tp
        self.count = 1


def add_live(
    live: dict[str, Any],
    kind: str,
    untraced: int,
    counters: dict[str, list[int]],
    overdue: dict[str, int],
) -> None:
    """Add one subscription to ``live``: ``{kind: {"subs", "untraced", "counters":
    {path: [COUNTERS...]}, "overdue": {path: n}}}``, the sums the live figures
    (exporter, web UI, per-second lost) are made of."""
    entry = live.get(kind)
    if entry is None:
        entry = live[kind] = {"subs": 0, "untraced": 0, "counters": {}, "overdue": {}}
    entry["subs"] += 1
    entry["untraced"] += untraced
    sums = entry["counters"]
    for path, values in counters.items():
        acc = sums.get(path)
        if acc is None:
            sums[path] = [int(v) for v in values]
        else:
            for i, v in enumerate(values):
                acc[i] += int(v)
    late = entry["overdue"]
    for path, n in overdue.items():
        late[path] = late.get(path, 0) + int(n)


class Subscriber:
    """One subscription (one connection): its own sequence accounting per device.

    Get one from :meth:`Ledger.subscriber`; call :meth:`received` for every
    pushed frame and :meth:`close` when the connection ends for good.
    """

    __slots__ = (
        "id",
        "kind",
        "devices",
        "srcs",
        "since_ns",
        "closed_ns",
        "resumed_ns",
        "untraced",
        "streams",
        "snapshots",
        "batches",
        "_ledger",
        "_paths",
        "_counters",
        "reported",
    )

    def __init__(
        self,
        ledger: Ledger,
        sub_id: str,
        kind: str,
        devices: frozenset[str] | None,
        srcs: frozenset[str] | None = None,
    ):
        self.id = sub_id
        self.kind = kind
        self.devices = devices
        #: entry protocols it can receive (None: all); publishers of others are not its loss
        self.srcs = srcs
        self.since_ns = _now()
        self.closed_ns = 0
        #: when the subscription last came back after a reconnect (0: never lost)
        self.resumed_ns = 0
        self.untraced = 0
        self.streams: dict[str, Stream] = {}
        self.snapshots: dict[str, SnapshotStream] = {}
        self.batches = 0
        self._ledger = ledger
        self._paths: dict[str, str] = {}
        self._counters: dict[str, list[int]] = {}
        #: whether a report carried this subscription's summary yet
        self.reported = False

    @property
    def mode(self) -> str:
        if self.snapshots and self.streams:
            return "mixed"
        return "snapshot" if self.snapshots else "stream"

    def _path(self, src: str) -> tuple[str, list[int]]:
        path = self._paths.get(src)
        if path is None:
            path = self._paths[src] = path_name(src, self.kind)
            self._counters.setdefault(path, [0] * len(COUNTERS))
        return path, self._counters[path]

    def received(
        self,
        data: bytes | bytearray | memoryview | str | dict[str, Any] | Trace | Snapshot,
        recv_ns: int | None = None,
    ) -> Trace | Snapshot | None:
        """Account for one pushed frame; return what it was read as.

        ``data`` is the raw frame body (``bytes``/``str``), an already decoded
        ``dict``, or the result of :func:`telemetry.envelope.read`. ``recv_ns``
        is the epoch-ns receive time; take it as soon as the frame is read
        (default: now). A single traced message goes through sequence
        accounting; a snapshot batch through staleness accounting. Returns None
        (and counts ``untraced``) for frames without a valid trace.
        """
        recv_ns = _now() if recv_ns is None else recv_ns - _clock.offset_ns
        if isinstance(data, Trace | Snapshot):
            obj: Trace | Snapshot | None = data
            length = 0
        else:
            obj = envelope.read(data)
            length = len(data) if isinstance(data, bytes | bytearray | memoryview | str) else 0
        if obj is None:
            self.untraced += 1
            return None
        if isinstance(obj, Snapshot):
            self._batch(obj, recv_ns)
        else:
            self._one(obj, recv_ns, length)
        return obj

    def _one(self, tr: Trace, recv_ns: int, length: int) -> None:
        path, c = self._path(tr.src)
        ledger = self._ledger
        if tr.run != ledger.run_id:
            c[_FOREIGN] += 1
            return
        device = tr.device_id
        if self.devices is not None and device not in self.devices:
            c[_OUT_OF_SCOPE] += 1
            return
        st = self.streams.get(device)
        if st is None:
            st = self.streams[device] = Stream(tr.src, tr.seq)
        else:
            outcome = st.add(tr.seq, recv_ns, ledger.grace_ns)
            if outcome == DUPLICATE:
                c[_DUPLICATED] += 1
                ledger.windows.duplicated(path, recv_ns)
                return
            if outcome == REORDERED:
                c[_REORDERED] += 1
            elif outcome == LATE or (
                # in order, but due before a reconnect and older than the grace window:
                # the gateway replayed it after the outage (see reconnected)
                outcome == ORDERED and tr.t0 < self.resumed_ns and recv_ns - tr.t0 > ledger.grace_ns
            ):
                c[_LATE] += 1
        c[_DELIVERED] += 1
        total_us = (recv_ns - tr.t0) // 1000
        if total_us > st.max_total_us:
            st.max_total_us = total_us
        ledger._sample(path, tr, recv_ns, length)

    def _batch(self, snap: Snapshot, recv_ns: int) -> None:
        ledger = self._ledger
        self.batches += 1
        self.untraced += snap.untraced
        if snap.sent_ns:
            ledger._record(path_name("*", self.kind), "batch", recv_ns - snap.sent_ns)
        for tr in snap.traces:
            path, c = self._path(tr.src)
            if tr.run != ledger.run_id:
                c[_FOREIGN] += 1
                continue
            if self.devices is not None and tr.device_id not in self.devices:
                c[_OUT_OF_SCOPE] += 1
                continue
            st = self.snapshots.get(tr.device_id)
            if st is None:
                st = self.snapshots[tr.device_id] = SnapshotStream(tr.src, tr.seq)
            else:
                st.add(tr.seq)
            if tr.seq < st.seq:
                continue  # an older value than one already shown: not a staleness sample
            stale_ns = recv_ns - tr.t0
            if stale_ns // 1000 > st.max_stale_us:
                st.max_stale_us = stale_ns // 1000
            ledger._record(path, "staleness", stale_ns, fire=True)

    def reconnected(self) -> None:
        """The subscription is back after a lost connection (call it before its first frame).

        A gateway that resumes a subscription replays what the outage missed, in
        order: those messages are delivered, not lost, and the ones due before
        now that arrive more than the grace window after they were due count as
        ``late`` (the counter of a gap filled after the grace window).
        """
        self.resumed_ns = _now()

    def close(self) -> None:
        """Mark the subscription ended; call it from ``on_stop``.

        A subscription closed while the test still runs (ramp-down) is not
        charged tail loss. Closing during the end of the test (the drain has
        begun) changes nothing: it ran to the end.
        """
        if not self.closed_ns and not self._ledger.draining:
            self.closed_ns = _now()

    def overdue(self, now_ns: int) -> dict[str, int]:
        """Per path: seqs missing for longer than the grace window so far."""
        grace = self._ledger.grace_ns
        out: dict[str, int] = {}
        for st in self.streams.values():
            if st.gaps or st.evicted:
                n = st.overdue(now_ns, grace)
                if n:
                    path = self._path(st.src)[0]
                    out[path] = out.get(path, 0) + n
        return out

    def add_live(self, live: dict[str, Any], now_ns: int) -> None:
        """Add this subscription to a report's ``live`` totals (:func:`add_live`)."""
        add_live(live, self.kind, self.untraced, self._counters, self.overdue(now_ns))

    def summary(self, now_ns: int) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "since_ns": self.since_ns,
            "closed_ns": self.closed_ns,
            "mode": self.mode,
            "devices": sorted(self.devices) if self.devices is not None else None,
            "srcs": sorted(self.srcs) if self.srcs is not None else None,
            "untraced": self.untraced,
            "batches": self.batches,
            "counters": {p: list(c) for p, c in self._counters.items()},
            "overdue": self.overdue(now_ns),
        }


class Ledger:
    """Per-process end-to-end state for one test run (see the module docstring).

    ``run_id`` is the run every traced message must carry (others are counted
    as ``foreign_run`` and ignored); ``grace_s`` is how long a gap may stay open
    before it counts as lost; ``fire`` receives every latency sample.
    """

    def __init__(
        self,
        run_id: str,
        *,
        grace_s: float = 5.0,
        fire: FireFn | None = None,
        source: str = "local",
        hop_events: bool = True,
    ) -> None:
        self.run_id = run_id
        #: fire ``path:hop`` entries too (False: only ``path``; histograms keep every hop)
        self.hop_events = hop_events
        self.grace_ns = int(grace_s * 1e9)
        self.source = source
        #: True while the test drains: publishers must not publish (see ``published``).
        self.draining = False
        self._fire = fire
        #: called with ``(path, total_ms)`` for every delivery, whatever ``fire`` is
        #: (e.g. ``telemetry.ingest_compare`` splits them by phase)
        self.sample_listeners: list[Callable[[str, float], None]] = []
        self._ids = itertools.count(1)
        self.subscribers: dict[str, Subscriber] = {}
        self.publishers: dict[str, _Publisher] = {}
        self.published_total = 0
        self.histograms = HistogramSet()
        self.schedule_lag = Histogram()
        self.windows = Windows()
        self._names: dict[tuple[str, str], str] = {}
        self._legs: dict[tuple[str, str, int, int], tuple[str, str]] = {}

    # --- publisher side ----------------------------------------------------
    def published(
        self, device_id: str, seq: int, t0_ns: int, tp_ns: int, src: str = envelope.DEFAULT_SRC
    ) -> None:
        """Record that ``device_id`` published ``seq`` (intended at ``t0_ns``, sent at ``tp_ns``).

        Call it once the client accepted the message (QoS0: ``publish()`` returned
        without error; QoS1/2: may be right after ``publish()`` as well — what
        counts is what subscribers really receive). When a publish failed, do not
        call it and reuse the same ``seq`` for the next attempt, or the skipped seq
        is reported lost. Do not publish while :attr:`draining` is True.
        """
        offset = _clock.offset_ns
        tp_ns -= offset
        t0_ns -= offset
        rec = self.publishers.get(device_id)
        if rec is None:
            self.publishers[device_id] = _Publisher(src, seq, tp_ns)
        else:
            rec.count += 1
            if seq > rec.hi:
                rec.hi = seq
                rec.hi_tp = tp_ns
            elif seq < rec.first:
                rec.first = seq
                rec.first_tp = tp_ns
        self.published_total += 1
        self.schedule_lag.record_ns(tp_ns - t0_ns)
        self.windows.published(src, tp_ns)

    # --- subscriber side ---------------------------------------------------
    def subscriber(
        self, kind: str, devices: Iterable[str] | None = None, srcs: Iterable[str] | None = None
    ) -> Subscriber:
        """Register one subscription and return its handle.

        ``kind`` is the subscriber protocol as it should appear in path names
        (``"stomp"``, ``"ws"``); ``devices`` the device ids it subscribed to
        (None: all devices — e.g. ``/topic/coordinates``). Loss is only counted
        for devices in scope and for messages published after it subscribed.
        ``srcs``: the entry protocols (the envelope's ``src``) it can receive at
        all (None: every one); an MQTT subscriber on the broker never sees what
        AMQP devices publish.
        """
        sub_id = f"{self.source}/{next(self._ids)}"
        sub = Subscriber(
            self,
            sub_id,
            kind,
            frozenset(devices) if devices is not None else None,
            frozenset(srcs) if srcs is not None else None,
        )
        self.subscribers[sub_id] = sub
        return sub

    def _name(self, path: str, hop: str) -> str:
        name = self._names.get((path, hop))
        if name is None:
            name = self._names[(path, hop)] = path if hop == "total" else f"{path}:{hop}"
        return name

    def _record(self, path: str, hop: str, value_ns: int, *, fire: bool = False) -> None:
        self.histograms.record_ns(path, hop, value_ns)
        if fire and self._fire is not None:
            self._fire(self._name(path, hop), max(value_ns, 0) / 1e6, 0)

    def _sample(self, path: str, tr: Trace, recv_ns: int, length: int) -> None:
        hist = self.histograms
        fire = self._fire
        total = recv_ns - tr.t0
        service = recv_ns - tr.tp
        hist.record_ns(path, "total", total)
        hist.record_ns(path, "service", service)
        self.windows.delivered(path, recv_ns, total)
        if fire is not None:
            fire(path, max(total, 0) / 1e6, length)
            if self.hop_events:
                fire(self._name(path, "service"), max(service, 0) / 1e6, length)
        for listen in self.sample_listeners:
            listen(path, max(total, 0) / 1e6)
        hops = tr.hops
        if hops:
            src = tr.src
            prev_pos = ENTRY_POSITION.get(src, 0)
            prev_ns = tr.tp
            for stage in STAMPS:
                at = hops.get(stage)
                if at is None:
                    continue
                pos = POSITION[stage]
                if pos <= prev_pos:  # another entry's stamp (a message carries one)
                    continue
                self._leg(path, src, prev_pos, pos, at - prev_ns, length)
                prev_pos, prev_ns = pos, at
            self._leg(path, src, prev_pos, _RECV_POS, recv_ns - prev_ns, length)

    def _leg(self, path: str, src: str, a: int, b: int, value_ns: int, length: int) -> None:
        key = (path, src, a, b)
        names = self._legs.get(key)
        if names is None:
            hop = hop_name(src, a, b)
            names = self._legs[key] = (hop, f"{path}:{hop}")
        hop, name = names
        self.histograms.record_ns(path, hop, value_ns)
        if self._fire is not None and self.hop_events:
            self._fire(name, max(value_ns, 0) / 1e6, length)

    # --- shipping ------------------------------------------------------------
    def report(
        self, now_ns: int | None = None, *, pause: Pause | None = None, every_sub: bool = True
    ) -> dict[str, Any]:
        """The periodic payload: histogram and window deltas, cumulative counters.

        Histograms and windows are reset (shipped as deltas); everything else is
        cumulative and replaces the master's previous copy. ``live`` sums the
        subscriptions per kind (what the live figures need); ``subs`` has each
        subscription's summary, or with ``every_sub=False`` only those no report
        carried yet: a worker with 5,000 subscriptions sends them all only now
        and then, since summarising and packing them all every 3 s stalled it
        (loop lag p99 21–29 ms, 10–12 ms without). ``pause`` is called every
        :data:`REPORT_SLICE` subscriptions (a worker passes a ``gevent.sleep(0)``).
        """
        now_ns = _now() if now_ns is None else now_ns
        sched = self.schedule_lag.to_wire()
        self.schedule_lag.reset()
        hist = self.histograms.take_wire()  # ~0.2-0.5 ms per histogram encoded
        if pause is not None:
            pause()
        windows = self.windows.take_wire()
        if pause is not None:
            pause()
        out = {
            "run": self.run_id,
            "source": self.source,
            "at_ns": now_ns,
            "hist": hist,
            "sched": sched,
            "windows": windows,
            "published": {"messages": self.published_total, "devices": len(self.publishers)},
        }
        subs: dict[str, Any] = {}
        live: dict[str, Any] = {}
        for n, (sid, s) in enumerate(list(self.subscribers.items()), 1):
            s.add_live(live, now_ns)
            if every_sub or not s.reported:
                subs[sid] = s.summary(now_ns)
                s.reported = True
            if pause is not None and n % REPORT_SLICE == 0:
                pause()
        out["subs"] = subs
        out["live"] = live
        return out

    def final(self, now_ns: int | None = None) -> dict[str, Any]:
        """The last payload: :meth:`report` plus the full per-device state.

        ``streams``/``snapshots``: ``{sub_id: {device: wire}}``; ``publishers``:
        ``{device: wire}`` (the records of ``telemetry._wire``).
        """
        out = self.report(now_ns)
        out["final"] = True
        out["streams"] = {
            sid: {d: st.to_wire() for d, st in s.streams.items()}
            for sid, s in self.subscribers.items()
        }
        out["snapshots"] = {
            sid: {d: st.to_wire() for d, st in s.snapshots.items()}
            for sid, s in self.subscribers.items()
            if s.snapshots
        }
        out["publishers"] = {
            d: PublisherWire(p.src, p.first, p.first_tp, p.hi, p.hi_tp, p.count)
            for d, p in self.publishers.items()
        }
        return out
