"""The ingest comparison: the figures of each phase of an HTTP-vs-MQTT run, side by side.

A load shape (``users.ingest_shape.IngestSweep``) runs phases, each one entry
protocol (``src``: ``mqtt``, ``http``) with a fleet of devices at an offered
rate, and tells the recorder when a phase's measuring window opens and closes.
Over each window the recorder takes, for that protocol only:

- messages acknowledged (the protocol's acknowledgement: PUBACK, the HTTP 202)
  and failed, per second, against the offered rate: ``keeps_up`` when at least
  :data:`KEEP_UP` of the offered rate was acknowledged and at most
  :data:`MAX_FAILED` failed;
- generator CPU (this process, ``psutil``): acknowledged messages per CPU second
  is messages/s per generator core;
- acknowledgement latency (the Locust request events of the acknowledgement);
- end-to-end latency (``recv − t0``, every delivery the ledger counts on the protocol's
  paths, ``mqtt→stomp``, ``http→stomp``…), from the window's opening until the
  next phase of the same protocol (late arrivals count where they were sent);
- bytes on the wire per acknowledged message, both directions, counted on the
  clients' sockets (``telemetry.wire``); and the connections they held.

One process only: generator CPU per message means nothing when the two fleets
share a process with other work, or when they are spread over workers. The
document (``comparison.json``, format :data:`COMPARISON_FORMAT`; also
``comparison.csv``) is written into the results folder at ``test_stop``.
"""

from __future__ import annotations

import csv
import io
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from telemetry import results
from telemetry.hdr import Histogram
from telemetry.plugin import get_plugin
from telemetry.stages import split_path
from telemetry.wire import wire_counts

if TYPE_CHECKING:
    from locust.env import Environment

__all__ = [
    "COMPARISON_FORMAT",
    "CSV_COLUMNS",
    "KEEP_UP",
    "MAX_FAILED",
    "Entry",
    "Phase",
    "Recorder",
    "summarise",
]

log = logging.getLogger(__name__)

COMPARISON_FORMAT = "pipeswarm-comparison/1"
#: A phase keeps up when at least this share of its offered rate was acknowledged...
KEEP_UP = 0.95
#: ...and at most this share of its requests failed.
MAX_FAILED = 0.01

CSV_COLUMNS = (
    "step",
    "src",
    "devices",
    "offered_per_s",
    "acked_per_s",
    "failed",
    "keeps_up",
    "cpu_percent",
    "per_core_per_s",
    "ack_p50_ms",
    "ack_p99_ms",
    "e2e_p50_ms",
    "e2e_p99_ms",
    "e2e_count",
    "bytes_sent_per_msg",
    "bytes_received_per_msg",
    "connections",
)


@dataclass(frozen=True, slots=True)
class Entry:
    """How one entry protocol shows up: its acknowledgement's Locust entry, its wire count."""

    src: str
    request_type: str
    #: the acknowledgement's stats name, or its start (``publish:`` for every QoS/topic)
    name: str
    wire: str
    prefix: bool = False

    def matches(self, request_type: str, name: str) -> bool:
        if request_type != self.request_type:
            return False
        return name.startswith(self.name) if self.prefix else name == self.name


@dataclass(slots=True)
class Phase:
    step: int
    src: str
    devices: int
    offered_per_s: float
    opened: float = 0.0
    closed: float = 0.0
    acked: int = 0
    failed: int = 0
    cpu_s: float = 0.0
    wire_sent: int = 0
    wire_received: int = 0
    connections: int = 0
    ack: Histogram = field(default_factory=Histogram)
    e2e: Histogram = field(default_factory=Histogram)

    @property
    def seconds(self) -> float:
        return max(self.closed - self.opened, 1e-9)

    def as_dict(self) -> dict[str, Any]:
        acked_per_s = self.acked / self.seconds
        cpu_percent = 100.0 * self.cpu_s / self.seconds
        requests = self.acked + self.failed
        keeps_up = acked_per_s >= KEEP_UP * self.offered_per_s and self.failed <= MAX_FAILED * max(
            requests, 1
        )
        per_msg = max(self.acked, 1)
        return {
            "step": self.step,
            "src": self.src,
            "devices": self.devices,
            "offered_per_s": round(self.offered_per_s, 1),
            "window_s": round(self.seconds, 2),
            "acked": self.acked,
            "acked_per_s": round(acked_per_s, 1),
            "failed": self.failed,
            "keeps_up": keeps_up,
            "cpu_s": round(self.cpu_s, 3),
            "cpu_percent": round(cpu_percent, 1),
            # messages per CPU second of the generator = msg/s one fully busy core would do
            "per_core_per_s": round(self.acked / self.cpu_s) if self.cpu_s > 0 else None,
            "ack_ms": _ms(self.ack),
            "e2e_ms": _ms(self.e2e),
            "bytes_sent_per_msg": round(self.wire_sent / per_msg, 1),
            "bytes_received_per_msg": round(self.wire_received / per_msg, 1),
            "connections": self.connections,
        }


def _ms(h: Histogram) -> dict[str, Any]:
    if not h.count:
        return {"count": 0, "p50": None, "p99": None, "max": None}
    return {
        "count": h.count,
        "p50": h.percentile(50) / 1000,
        "p99": h.percentile(99) / 1000,
        "max": h.hdr.get_max_value() / 1000,
    }


class Recorder:
    """Per-phase figures of one process (see the module docstring)."""

    def __init__(self, environment: Environment, entries: list[Entry], mode: str) -> None:
        self.environment = environment
        self.entries = {e.src: e for e in entries}
        self.mode = mode
        self.interval_s = 0.0
        self.phases: list[Phase] = []
        self._open: Phase | None = None
        #: src -> the latest phase of that protocol (where its E2E samples go)
        self._latest: dict[str, Phase] = {}
        self._cpu0 = 0.0
        self._wire0 = (0, 0)
        self._process = psutil.Process()
        self.path: Path | None = None
        environment.events.request.add_listener(self._on_request)
        environment.events.test_stop.add_listener(self._on_test_stop)

    # --- driven by the shape --------------------------------------------------------
    def open(self, step: int, src: str, devices: int, offered_per_s: float) -> Phase:
        """Start measuring a phase of ``src`` (its fleet is up and warmed up)."""
        self.close()
        phase = Phase(step, src, devices, offered_per_s, opened=time.time())
        cpu = self._process.cpu_times()
        self._cpu0 = cpu.user + cpu.system
        self._wire0 = self._wire(src)
        self._open = phase
        self._latest[src] = phase
        ledger = get_plugin(self.environment).ledger  # the run's (made at test start)
        if self._on_delivery not in ledger.sample_listeners:
            ledger.sample_listeners.append(self._on_delivery)
        self.phases.append(phase)
        return phase

    def close(self) -> Phase | None:
        """Stop measuring the open phase (if any); its E2E samples still arrive."""
        phase, self._open = self._open, None
        if phase is None:
            return None
        phase.closed = time.time()
        cpu = self._process.cpu_times()
        phase.cpu_s = cpu.user + cpu.system - self._cpu0
        sent, received = self._wire(phase.src)
        phase.wire_sent = sent - self._wire0[0]
        phase.wire_received = received - self._wire0[1]
        phase.connections = self._connections(phase.src)
        log.info(
            "ingest comparison: step %d %s, %d devices, offered %.0f/s, acked %.0f/s, CPU %.0f%%",
            phase.step,
            phase.src,
            phase.devices,
            phase.offered_per_s,
            phase.acked / phase.seconds,
            100 * phase.cpu_s / phase.seconds,
        )
        return phase

    def keeps_up(self, phase: Phase) -> bool:
        return bool(phase.as_dict()["keeps_up"])

    # --- sources ------------------------------------------------------------------------
    def _wire(self, src: str) -> tuple[int, int]:
        entry = self.entries[src]
        count = wire_counts(self.environment).get(entry.wire)
        return count.snapshot() if count is not None else (0, 0)

    def _connections(self, src: str) -> int:
        entry = self.entries[src]
        count = wire_counts(self.environment).get(entry.wire)
        return count.connections if count is not None else 0

    def _on_delivery(self, path: str, total_ms: float) -> None:
        src, kind = split_path(path)
        phase = self._latest.get(src)
        if phase is not None and kind:
            phase.e2e.record_us(int(total_ms * 1000))

    def _on_request(
        self,
        request_type: str,
        name: str,
        response_time: float | None,
        exception: Exception | None = None,
        **_kw: Any,
    ) -> None:
        phase = self._open
        if phase is None or not self.entries[phase.src].matches(request_type, name):
            return
        if exception is not None:
            phase.failed += 1
            return
        phase.acked += 1
        if response_time is not None:
            phase.ack.record_us(int(response_time * 1000))

    # --- the document -------------------------------------------------------------------------
    def document(self) -> dict[str, Any]:
        phases = [p.as_dict() for p in self.phases if p.closed]
        return {
            "format": COMPARISON_FORMAT,
            "mode": self.mode,
            "interval_s": self.interval_s,
            "keep_up": KEEP_UP,
            "max_failed": MAX_FAILED,
            "cpu_count": psutil.cpu_count(),
            "phases": phases,
            "summary": summarise(phases),
        }

    def _on_test_stop(self, environment: Environment, **_kw: Any) -> None:
        self.close()
        plugin = get_plugin(environment)
        if plugin.results_path is None or not self.phases:
            return
        doc = self.document()
        folder = Path(plugin.results_path)
        results.write_json(folder / "comparison.json", doc)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in doc["phases"]:
            writer.writerow(_csv_row(row))
        (folder / "comparison.csv").write_text(buf.getvalue())
        self.path = folder / "comparison.json"
        log.info("ingest comparison written to %s\n%s", self.path, format_summary(doc))


def _csv_row(row: dict[str, Any]) -> dict[str, Any]:
    out = {k: row.get(k, "") for k in CSV_COLUMNS}
    for key in ("ack", "e2e"):
        ms = row[f"{key}_ms"]
        out[f"{key}_p50_ms"] = ms["p50"] if ms["p50"] is not None else ""
        out[f"{key}_p99_ms"] = ms["p99"] if ms["p99"] is not None else ""
    out["e2e_count"] = row["e2e_ms"]["count"]
    return out


def summarise(phases: list[dict[str, Any]]) -> dict[str, Any]:
    """Per protocol: its highest acknowledged rate and whether it fell behind; the ratios.

    ``saturated`` says whether the protocol fell behind at some step (then its highest
    rate is a measured ceiling; otherwise only a floor, and the throughput ratio is a
    bound: ``throughput_bound``). Everything else is compared at one step both ran,
    equal fleets at the same offered rate (``at_step``): the highest step where both
    kept up, else the highest both ran.
    """
    by_src: dict[str, dict[str, Any]] = {}
    for src in dict.fromkeys(p["src"] for p in phases):
        mine = [p for p in phases if p["src"] == src]
        kept = [p for p in mine if p["keeps_up"]]
        by_src[src] = {
            "best": max(kept, key=lambda p: p["acked_per_s"]) if kept else None,
            "max_acked_per_s": max(p["acked_per_s"] for p in mine),
            "saturated": any(not p["keeps_up"] for p in mine),
            "phases": len(mine),
        }
    out: dict[str, Any] = {"by_src": by_src}
    mqtt, http = by_src.get("mqtt"), by_src.get("http")
    if mqtt and http:
        out["ratios"] = _ratios(mqtt, http, phases)
    return out


def _ratios(
    mqtt: dict[str, Any], http: dict[str, Any], phases: list[dict[str, Any]]
) -> dict[str, Any]:
    """MQTT over HTTP (throughput, per core) and HTTP over MQTT (latency, bytes)."""

    def div(a: float | None, b: float | None) -> float | None:
        return round(a / b, 2) if a and b else None

    out: dict[str, Any] = {
        # the most each side moved, whether or not it kept up there
        "throughput": div(mqtt["max_acked_per_s"], http["max_acked_per_s"]),
        "throughput_bound": _bound(mqtt["saturated"], http["saturated"]),
    }
    pairs: dict[int, dict[str, dict[str, Any]]] = {}
    for p in phases:
        pairs.setdefault(p["step"], {})[p["src"]] = p
    both = [pair for _, pair in sorted(pairs.items()) if {"mqtt", "http"} <= set(pair)]
    if not both:
        return out
    kept = [pair for pair in both if pair["mqtt"]["keeps_up"] and pair["http"]["keeps_up"]]
    pair = (kept or both)[-1]
    m, h = pair["mqtt"], pair["http"]
    out["at_step"] = m["step"]
    out["at_offered_per_s"] = m["offered_per_s"]
    out["both_kept_up"] = bool(kept)
    out["per_core"] = div(m["per_core_per_s"], h["per_core_per_s"])
    out["ack_p50"] = div(h["ack_ms"]["p50"], m["ack_ms"]["p50"])
    out["ack_p99"] = div(h["ack_ms"]["p99"], m["ack_ms"]["p99"])
    out["e2e_p50"] = div(h["e2e_ms"]["p50"], m["e2e_ms"]["p50"])
    out["e2e_p99"] = div(h["e2e_ms"]["p99"], m["e2e_ms"]["p99"])
    out["bytes_per_msg"] = div(
        h["bytes_sent_per_msg"] + h["bytes_received_per_msg"],
        m["bytes_sent_per_msg"] + m["bytes_received_per_msg"],
    )
    out["connections"] = div(m["connections"], h["connections"])
    return out


def _bound(mqtt_saturated: bool, http_saturated: bool) -> str:
    """How to read the throughput ratio: ``measured`` only when both sides saturated."""
    if mqtt_saturated and http_saturated:
        return "measured"
    if http_saturated:
        return "at least"  # MQTT never stopped keeping up: it could do more
    if mqtt_saturated:
        return "at most"
    return "neither saturated"


def format_summary(doc: dict[str, Any]) -> str:
    """The console table: one line per phase."""
    lines = [
        f"{'step':>4} {'src':<5} {'devices':>7} {'offered/s':>9} {'acked/s':>8} {'keeps':>5} "
        f"{'msg/s/core':>10} {'ack p50/p99 ms':>15} {'e2e p50/p99 ms':>15} {'B/msg':>7} {'conns':>5}"
    ]
    for p in doc["phases"]:
        ack, e2e = p["ack_ms"], p["e2e_ms"]
        lines.append(
            f"{p['step']:>4} {p['src']:<5} {p['devices']:>7} {p['offered_per_s']:>9.0f} "
            f"{p['acked_per_s']:>8.0f} {'yes' if p['keeps_up'] else 'NO':>5} "
            f"{p['per_core_per_s'] or 0:>10} "
            f"{_pair(ack):>15} {_pair(e2e):>15} "
            f"{p['bytes_sent_per_msg'] + p['bytes_received_per_msg']:>7.0f} {p['connections']:>5}"
        )
    ratios = doc["summary"].get("ratios")
    if ratios:
        r = ratios.get
        lines.append(
            f"MQTT/HTTP throughput {r('throughput')}× ({r('throughput_bound')}); "
            f"at step {r('at_step')}: per core {r('per_core')}×, HTTP/MQTT ack p50 "
            f"{r('ack_p50')}×, e2e p50 {r('e2e_p50')}×, bytes {r('bytes_per_msg')}×"
        )
    return "\n".join(lines)


def _pair(ms: dict[str, Any]) -> str:
    if not ms["count"]:
        return "-"
    return f"{ms['p50']:.1f}/{ms['p99']:.1f}"
