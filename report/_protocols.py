"""The "MQTT vs AMQP" section: ``protocols.json`` joined with the ledger's two broker paths.

One row per protocol (``mqtt→mqtt`` through Mosquitto, ``amqp→amqp`` through
RabbitMQ): what arrived, lost and duplicated; end-to-end percentiles; the
broker's CPU seconds and the messages it delivered per CPU second (its
throughput per core); bytes on the wire per message. Then the ratio AMQP / MQTT
of each figure, which is what the claim "MQTT is 2-3x lighter" is about.
"""

from __future__ import annotations

from typing import Any

from report._load import Run

__all__ = ["protocol_rows", "PATHS"]

PATHS = {"mqtt": "mqtt→mqtt", "amqp": "amqp→amqp"}


def _ms(latency: dict[str, Any], key: str) -> float | None:
    v = latency.get(key)
    return None if v is None else v / 1000


def protocol_rows(run: Run) -> list[dict[str, Any]]:
    """The section's rows (empty when the run has no ``protocols.json``); the last is the ratio."""
    doc = run.protocols
    if not doc:
        return []
    paths = run.e2e.get("paths", {})
    rows: list[dict[str, Any]] = []
    for proto, path in PATHS.items():
        info = doc["protocols"].get(proto, {})
        entry = paths.get(path, {})
        totals = entry.get("totals", {})
        total = entry.get("latency", {}).get("total", {})
        cpu = info.get("broker_cpu_s")
        delivered = totals.get("delivered", 0)
        wire = info.get("wire") or {}
        rows.append(
            {
                "protocol": proto.upper(),
                "broker": info.get("broker", ""),
                "path": path,
                "published": totals.get("published", 0),
                "delivered": delivered,
                "lost": totals.get("lost", 0),
                "duplicated": totals.get("duplicated", 0),
                "p50_ms": _ms(total, "p50_us"),
                "p99_ms": _ms(total, "p99_us"),
                "max_ms": _ms(total, "max_us"),
                "broker_cpu_s": cpu,
                "restarted": info.get("restarted", False),
                # a restarted broker's CPU counts from its new start only: no per-core figure
                "per_core": delivered / cpu if cpu and not info.get("restarted") else None,
                "late": totals.get("late", 0),
                "bytes": wire.get("per_message"),
                "bytes_source": wire.get("source", ""),
            }
        )
    mqtt, amqp = rows

    def ratio(key: str) -> float | None:
        a, m = amqp.get(key), mqtt.get(key)
        return a / m if a is not None and m else None

    rows.append(
        {
            "protocol": "AMQP / MQTT",
            "p50_ms": ratio("p50_ms"),
            "p99_ms": ratio("p99_ms"),
            "broker_cpu_s": ratio("broker_cpu_s"),
            "per_core": ratio("per_core"),
            "bytes": ratio("bytes"),
            "ratio": True,
        }
    )
    return rows
