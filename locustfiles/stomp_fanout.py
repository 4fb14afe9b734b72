"""STOMP fan-out: subscribers arrive in stages while a small fleet keeps publishing.

The Go STOMP load tool's scenario: 300 more connections every 10 s, reporting
P50/P90/P95/P99 of message latency (the ``E2E`` entries ``mqtt→stomp``) and of
connect time (``STOMP connect``)::

    locust -f locustfiles/stomp_fanout.py --headless --shape stages \
        --shape-stages 10:310,10:610,10:910 -t 30s

Stage user counts include the 10 publishing devices (``Device.fixed_count``).
``--stomp-destination /topic/devices/{device_id} --stomp-device-count 10``
subscribes each connection to one of the 10 devices instead of all (without the
count, subscriber n watches robot-n, which does not exist beyond the fleet);
``--stomp-token`` sends a bearer token.
"""

from users import MqttDevice, StompSubscriber
from users.shapes import PresetShape  # noqa: F401


class Device(MqttDevice):
    fixed_count = 10


class Subscriber(StompSubscriber):
    weight = 1
