"""The "HTTP vs MQTT ingest" section: ``comparison.json`` against the original claim."""

from __future__ import annotations

from typing import Any

from report._load import Run

__all__ = ["CLAIM_COMMAND", "comparison_view"]

#: What the original repository ran and claimed.
CLAIM_COMMAND = "http_vs_mqtt_comparison.py --requests 1000 --concurrent 10"


def _x(value: float | None, bound: str = "") -> str:
    if value is None:
        return "—"
    prefix = {"at least": "≥ ", "at most": "≤ "}.get(bound, "")
    return f"{prefix}{value:g}×"


def comparison_view(run: Run) -> dict[str, Any] | None:
    """Rows for the templates, or None when the run was no ingest comparison."""
    doc = run.comparison
    if not doc:
        return None
    summary = doc.get("summary") or {}
    ratios = summary.get("ratios") or {}
    by_src = summary.get("by_src") or {}
    step = ratios.get("at_step")
    at = {p["src"]: p for p in doc.get("phases", []) if p.get("step") == step}
    mqtt_conns = at.get("mqtt", {}).get("connections")
    http_conns = at.get("http", {}).get("connections")
    bound = ratios.get("throughput_bound", "")
    where = (
        f"at step {step} ({ratios.get('at_offered_per_s', 0):g} msg/s offered to each"
        f"{'' if ratios.get('both_kept_up') else ', not both kept up'})"
        if step is not None
        else ""
    )
    claims = [
        {
            "what": "throughput",
            "claim": "MQTT 3–5× the throughput of HTTP",
            "measured": f"MQTT/HTTP {_x(ratios.get('throughput'), bound)} highest acknowledged "
            f"rate ({bound}); {_x(ratios.get('per_core'))} messages/s per generator core "
            f"{where}",
        },
        {
            "what": "latency",
            "claim": "2–3× lower latency with MQTT",
            "measured": f"HTTP/MQTT acknowledgement p50 {_x(ratios.get('ack_p50'))}, "
            f"p99 {_x(ratios.get('ack_p99'))}; end to end p50 {_x(ratios.get('e2e_p50'))}, "
            f"p99 {_x(ratios.get('e2e_p99'))} {where}",
        },
        {
            "what": "connections",
            "claim": "10× the concurrent connections with MQTT",
            "measured": f"{mqtt_conns} MQTT vs {http_conns} HTTP connections held by equal "
            f"fleets {where} (one per device, both kept alive)"
            if mqtt_conns is not None and http_conns is not None
            else "—",
        },
        {
            "what": "bytes",
            "claim": "(not claimed)",
            "measured": f"HTTP/MQTT {_x(ratios.get('bytes_per_msg'))} bytes on the wire per "
            f"message {where}",
        },
    ]
    return {
        "mode": doc.get("mode", ""),
        "interval_s": doc.get("interval_s"),
        "phases": doc.get("phases", []),
        "by_src": by_src,
        "ratios": ratios,
        "claims": claims,
        "claim_command": CLAIM_COMMAND,
        "keep_up_pct": round(100 * float(doc.get("keep_up", 0.95))),
    }
