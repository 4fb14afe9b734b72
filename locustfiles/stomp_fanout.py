"""STOMP fan-out: subscribers arrive in stages while a small fleet keeps publishing.

The Go STOMP load tool's scenario: 300 more connections every 10 s, reporting
P50/P90/P95/P99 of message latency (path ``mqtt→stomp`` in the End to end tab and
``summary.csv``) and of connect time (``STOMP connect``)::

    locust -f locustfiles/stomp_fanout.py --headless --shape stages \
        --shape-stages 10:310,10:610,10:910 -t 30s

Stage user counts include the 10 publishing devices (``Device.fixed_count``).
``--stomp-destination /topic/devices/{device_id} --stomp-device-count 10``
subscribes each connection to one of the 10 devices instead of all (without the
count, subscriber n watches robot-n, which does not exist beyond the fleet);
``--token`` (or ``--jwt-secret``, by default the running stack's) gives the bearer token.

At full size (10,000 subscribers over two worker processes, 2,000 more every
10 s)::

    locust -f locustfiles/stomp_fanout.py --headless --processes 2 --shape stages \
        --shape-stages 10:2010,10:4010,10:6010,10:8010,10:10010,30:10010 -t 70s \
        --stomp-destination '/topic/devices/{device_id}' --stomp-device-count 10 \
        --device-interval 1

Each subscriber costs ~16 KB and 35–68 µs of a generator core per MESSAGE with
the ledger on (``bench/README.md``); the frames a run asks for are subscribers x
their device's rate (10,000 x 1 msg/s here; at the Go tool's 10 msg/s per
device that is 100,000 frames/s, about five cores of subscribers plus the
gateway's). The end-of-run summary (``summary.csv`` in the results folder, and
printed) has connect time and message latency P50/P90/P95/P99, deliveries,
losses and each process's loop lag P99.
"""

from users import MqttDevice, StompSubscriber
from users.shapes import PresetShape  # noqa: F401


class Device(MqttDevice):
    fixed_count = 10


class Subscriber(StompSubscriber):
    weight = 1
