"""MQTT vs AMQP: the broker-side figures of ``locustfiles/mqtt_vs_amqp.py``, into ``protocols.json``.

The ledger already has what arrived, what was lost or duplicated and the
end-to-end percentiles of the two paths (``mqtt→mqtt``, ``amqp→amqp``); this
adds what it cannot see:

- **broker CPU**: CPU seconds of each broker process over the test (read with
  psutil from the PIDs in the embedded stack's ``stack.json``; a broker that
  was restarted during the test counts from its new start);
- **bytes on the wire per message**: AMQP from the byte counters of the AMQP
  connections (every frame, confirms and consumer acks included); MQTT computed
  with the MQTT users' own encoder (``users._mqtt_codec``) for the mean payload
  the devices sent: PUBLISH + PUBACK each way (QoS 1; QoS 0 without the PUBACK).
  TCP/IP headers are the same kind of cost for both and are left out.

One local process only (``--headless`` without workers): the AMQP byte
counters are per process. ``analyze.py`` turns the file into the report's
"MQTT vs AMQP" section (``report/_protocols.py``). Usage, in a locustfile::

    from users.broker_compare import compare_brokers
    compare_brokers(mqtt="mosquitto", amqp="rabbitmq")   # stack.json component names
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
from locust import events
from locust.runners import MasterRunner, WorkerRunner

import telemetry
from telemetry.results import results_dir, write_json
from users._config import STATE_DIR_ENV
from users._mqtt_codec import MQTT311, publish_packet, topic_field
from users.amqp import wire_meter

if TYPE_CHECKING:
    from locust.env import Environment

__all__ = ["FORMAT", "compare_brokers", "mqtt_wire_bytes"]

FORMAT = "pipeswarm-protocols/1"

#: PUBACK: fixed header, remaining length 2, packet id (MQTT 3.1.1 §3.4)
_PUBACK = 4


def mqtt_wire_bytes(topic: str, payload_len: int, qos: int) -> tuple[int, int]:
    """(PUBLISH bytes, acknowledgement bytes) of one message on one MQTT hop."""
    publish = len(publish_packet(topic_field(topic), b"\0" * payload_len, qos, 1, MQTT311))
    return publish, _PUBACK if qos else 0


def _stack_pids(names: tuple[str, ...]) -> dict[str, tuple[int, float]]:
    folder = Path(os.environ.get(STATE_DIR_ENV) or ".pipeswarm")
    try:
        services = json.loads((folder / "stack.json").read_text()).get("services", {})
    except (OSError, ValueError):
        return {}
    return {n: (services[n]["pid"], services[n]["create_time"]) for n in names if n in services}


def _cpu(pid: int, created: float) -> float | None:
    try:
        p = psutil.Process(pid)
        if abs(p.create_time() - created) > 0.01:
            return None
        t = p.cpu_times()
        return t.user + t.system + t.children_user + t.children_system
    except psutil.Error:
        return None


class _Comparison:
    def __init__(self, mqtt: str, amqp: str) -> None:
        self.brokers = {"mqtt": mqtt, "amqp": amqp}
        self.start: dict[str, tuple[int, float, float]] = {}
        self.t0 = 0.0

    def on_test_start(self, environment: Environment, **_kw: Any) -> None:
        if isinstance(environment.runner, WorkerRunner):
            return
        self.t0 = time.monotonic()
        self.start = {}
        for name, (pid, created) in _stack_pids(tuple(self.brokers.values())).items():
            cpu = _cpu(pid, created)
            if cpu is not None:
                self.start[name] = (pid, created, cpu)

    def on_test_stop(self, environment: Environment, **_kw: Any) -> None:
        runner = environment.runner
        if isinstance(runner, WorkerRunner):
            return
        wall = time.monotonic() - self.t0
        now = _stack_pids(tuple(self.brokers.values()))
        doc: dict[str, Any] = {
            "format": FORMAT,
            "duration_s": round(wall, 3),
            "distributed": isinstance(runner, MasterRunner),
            "protocols": {},
        }
        for proto, broker in self.brokers.items():
            entry: dict[str, Any] = {"broker": broker, "broker_cpu_s": None, "restarted": False}
            if broker in now:
                pid, created = now[broker]
                cpu = _cpu(pid, created)
                before = self.start.get(broker)
                if cpu is not None:
                    same = before is not None and before[:2] == (pid, created)
                    since = before[2] if before is not None and same else 0.0
                    entry["broker_cpu_s"] = round(cpu - since, 3)
                    entry["restarted"] = not same
            doc["protocols"][proto] = entry
        doc["protocols"]["mqtt"]["wire"] = self._mqtt_wire(environment)
        doc["protocols"]["amqp"]["wire"] = self._amqp_wire(environment)
        run_id = telemetry.get_ledger(environment).run_id
        option = getattr(environment.parsed_options, "results_dir", None)
        write_json(results_dir(option, run_id) / "protocols.json", doc)

    @staticmethod
    def _mqtt_wire(environment: Environment) -> dict[str, Any]:
        rows = [
            e
            for (name, rtype), e in environment.stats.entries.items()
            if rtype == "MQTT" and name.startswith("publish:")
        ]
        n = sum(e.num_requests for e in rows)
        if not n:
            return {}
        payload = sum(e.total_content_length for e in rows) / n
        _, qos_text, template = rows[0].name.split(":", 2)  # publish:1:sensors/+/coordinates
        qos = int(qos_text)
        topic = template.replace("+", "robot-0001")
        pub, ack = mqtt_wire_bytes(topic, round(payload), qos)
        # broker -> subscriber: the same PUBLISH at min(publish QoS, subscription QoS 1)
        # (MQTT 3.1.1 §3.8.4), and its PUBACK back
        dpub, dack = mqtt_wire_bytes(topic, round(payload), min(qos, 1))
        return {
            "source": "computed (users._mqtt_codec)",
            "payload_bytes": round(payload, 1),
            "publisher_out": pub,
            "publisher_in": ack,
            "subscriber_in": dpub,
            "subscriber_out": dack,
            "per_message": pub + ack + dpub + dack,
        }

    @staticmethod
    def _amqp_wire(environment: Environment) -> dict[str, Any]:
        m = wire_meter(environment)
        if not m.published or not m.delivered:
            return {}
        sides = {
            "publisher_out": round(m.publisher[0] / m.published, 1),
            "publisher_in": round(m.publisher[1] / m.published, 1),
            "subscriber_in": round(m.subscriber[1] / m.delivered, 1),
            "subscriber_out": round(m.subscriber[0] / m.delivered, 1),
        }
        return {
            "source": "counted (every byte of the AMQP connections, handshakes included)",
            "messages_published": m.published,
            "messages_delivered": m.delivered,
            **sides,
            "per_message": round(sum(sides.values()), 1),
        }


def compare_brokers(mqtt: str = "mosquitto", amqp: str = "rabbitmq") -> None:
    """Write ``protocols.json`` at the end of the test (see the module docstring)."""
    comparison = _Comparison(mqtt, amqp)
    events.test_start.add_listener(comparison.on_test_start)
    events.test_stop.add_listener(comparison.on_test_stop)
