"""Locust plugins that follow every message end to end.

Importing this package registers the telemetry options (``--results-dir``,
``--run-id``, ``--e2e-grace``, ``--e2e-drain``) and hooks every Locust
``Environment`` at ``init``. User code needs two calls::

    ledger = telemetry.get_ledger(self.environment)      # in on_start
    # publisher
    payload = telemetry.envelope.build(device_id, x, y, run=ledger.run_id, seq=seq, t0=t0_ns)
    ledger.published(device_id, seq, t0_ns, tp_ns)
    # subscriber
    sub = ledger.subscriber("stomp")
    sub.received(frame_body, recv_ns)

See ``telemetry.ledger`` for the contract and ``docs/results.md`` for the files.
"""

from __future__ import annotations

# slo registers --slo (checked at quit); exporter and webui --prometheus-port and the web UI
# tab; faults --faults (imported after exporter, which installs the plugin first: the
# results the schedule reads at test_stop are written by then)
from telemetry import envelope, exporter, faults, options, slo, webui
from telemetry.collector import Collector
from telemetry.envelope import Snapshot, Trace
from telemetry.hdr import Histogram, HistogramSet
from telemetry.ledger import Ledger, Subscriber
from telemetry.looplag import LoopLagProbe
from telemetry.plugin import (
    E2E_REQUEST_TYPE,
    E2EPlugin,
    get_ledger,
    get_plugin,
    install,
    new_run_id,
)

__all__ = [
    "E2E_REQUEST_TYPE",
    "Collector",
    "E2EPlugin",
    "Histogram",
    "HistogramSet",
    "Ledger",
    "LoopLagProbe",
    "Snapshot",
    "Subscriber",
    "Trace",
    "envelope",
    "exporter",
    "faults",
    "get_ledger",
    "get_plugin",
    "install",
    "new_run_id",
    "options",
    "slo",
    "webui",
]
