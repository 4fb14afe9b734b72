"""``python -m bench <command>``: the performance harness (printed figures, not timed tests).

Commands:
  mqtt-ratio           MqttDevice vs Locust's own MqttUser, msg/s per generator core (bench/mqtt_ratio.py)
  idle-devices         N idle MqttDevice connections in one process: RSS each, connects/s (bench/idle_devices.py)
  mqtt-engines         paho on gevent's hub vs the lean client: msg/s per core, KB per connection (bench/mqtt_engines.py)
  stomp-engines        StompSubscriber's engine vs wsproto and stomp.py: frames/s per core, KB per subscription (bench/stomp_engines.py)
  stomp-ratio          StompSubscriber's engine vs plain stomp.py, same gateway and run; the gateway's frames/s per core (bench/stomp_ratio.py)
  mqtt-latency         PUBACK time and schedule lag well below capacity (bench/mqtt_latency.py)
  pipeline-throughput  sustained msg/s through the whole embedded stack (bench/pipeline_throughput.py)
  kafka-scaling        sustained msg/s and p99 vs Kafka partitions x consumer processes (bench/kafka_scaling.py)
  soak                 the whole stack at a steady rate for minutes: per-minute hop p50/p99, loss, RSS, CPU (bench/soak.py)
  e2e-floor            StompSubscriber p50 through the stack vs a bare paho pair (bench/e2e_floor.py)
  bridge-cost          the bridge's CPU µs per message and drain rate, MQTT -> Kafka (bench/bridge_cost.py)
  analyze-speed        analyze.py on a synthetic one-hour run (bench/analyze_speed.py)
  telemetry-costs      µs per message of the envelope and the ledger (bench/telemetry_costs.py)
  redis                RedisUser (Locust) vs redis-benchmark on the same server (bench/redis_bench.py)
  reconnect-storm      the broker restarted under 5,000 connected devices: time until all are back (bench/reconnect_storm.py)
  mqtt-auth            the MQTT auth plugin's cost per CONNECT vs anonymous, and a password file's (bench/mqtt_auth.py)
  http-vs-mqtt         HTTP vs MQTT ingest, equal fleets taking turns, rising rate (bench/http_vs_mqtt.py)
  clock-skew           one worker's clock 50 ms ahead (libfaketime): offsets measured, cross-host p50 unchanged (bench/clock_skew.py)
  amqp-engines         pika BlockingConnection under gevent vs the AMQP users' engine: msg/s, loop lag (bench/amqp_engines.py)
  gateway-churn        the gateway's RSS under connection churn while never quiet (bench/gateway_churn.py)
  load-soak            Locust's master and workers at the demo's load for minutes: RSS, CPU, loss (bench/load_soak.py)

With no command, runs mqtt-ratio and idle-devices with their defaults. Figures: bench/README.md.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "mqtt-ratio": "bench.mqtt_ratio",
    "idle-devices": "bench.idle_devices",
    "mqtt-engines": "bench.mqtt_engines",
    "stomp-engines": "bench.stomp_engines",
    "stomp-ratio": "bench.stomp_ratio",
    "mqtt-latency": "bench.mqtt_latency",
    "pipeline-throughput": "bench.pipeline_throughput",
    "kafka-scaling": "bench.kafka_scaling",
    "soak": "bench.soak",
    "e2e-floor": "bench.e2e_floor",
    "bridge-cost": "bench.bridge_cost",
    "analyze-speed": "bench.analyze_speed",
    "telemetry-costs": "bench.telemetry_costs",
    "redis": "bench.redis_bench",
    "reconnect-storm": "bench.reconnect_storm",
    "mqtt-auth": "bench.mqtt_auth",
    "http-vs-mqtt": "bench.http_vs_mqtt",
    "clock-skew": "bench.clock_skew",
    "amqp-engines": "bench.amqp_engines",
    "gateway-churn": "bench.gateway_churn",
    "load-soak": "bench.load_soak",
}
DEFAULT = ("mqtt-ratio", "idle-devices")


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    if not argv:
        rc = 0
        for name in DEFAULT:
            rc = rc or int(importlib.import_module(COMMANDS[name]).main([]) or 0)
        return rc
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(
            f"bench: unknown command {name!r}; choose one of {', '.join(COMMANDS)}.",
            file=sys.stderr,
        )
        return 2
    return int(importlib.import_module(COMMANDS[name]).main(rest) or 0)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
