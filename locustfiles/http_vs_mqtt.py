"""HTTP vs MQTT ingest: equal device fleets at the same rate, to the same subscribers.

The original claim (``http_vs_mqtt_comparison.py --requests 1000 --concurrent 10``):
"MQTT 3–5× the throughput of HTTP, 2–3× lower latency, 10× the concurrent
connections". Here the two doors of the same pipeline are measured: MqttDevice
(QoS 1 PUBLISH → Mosquitto → bridge → Kafka) and HttpDevice (``POST
/api/ingest/{id}`` → gateway → Kafka), each answered once its message is safe
(PUBACK / 202), both delivered through consumer → Redis → gateway to the same
STOMP subscribers. The fleets take turns (``users/ingest_sweep.py``); the
figures of each turn go to ``comparison.json`` / ``comparison.csv`` in the
results folder and to the report's "HTTP vs MQTT ingest" section::

    python -m pipeline up --detach
    locust -f locustfiles/http_vs_mqtt.py --headless --compare-devices 50 --device-interval 0.1
    locust -f locustfiles/http_vs_mqtt.py --headless --sweep-steps 6 --compare-seconds 15
    python analyze.py results/<run id>
"""

from users import HttpDevice, IngestSweep, MqttDevice, StompSubscriber


class Dashboard(StompSubscriber):
    fixed_count = 2


class Device(MqttDevice):
    weight = 1


class Poster(HttpDevice):
    weight = 1


class Shape(IngestSweep):
    mqtt = Device
    http = Poster
    subscribers = (Dashboard,)
