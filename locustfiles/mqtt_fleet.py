"""A device fleet only: how many devices, at what rate, the broker (and bridge) hold.

    locust -f locustfiles/mqtt_fleet.py --headless -u 1000 -r 200 -t 120s \
        --mqtt-url mqtt://127.0.0.1:1883 --device-interval 1 --mqtt-qos 1

Publish latency is timed to PUBACK/PUBCOMP, connect to CONNACK; commands sent
to ``orin/{id}/command`` are reported on receipt. No subscriber: for end-to-end
figures use ``pipeline.py``.
"""

from users import MqttDevice
from users.shapes import PresetShape  # noqa: F401


class Device(MqttDevice):
    pass
