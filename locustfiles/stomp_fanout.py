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
The count is of the devices in the subscriber's own process: device ids are per
worker (``robot-w0-0001``), so over ``--processes 2`` the 10 devices are 5 per
worker and the count is 5 (with 10, half the subscribers would watch devices
that do not exist and receive nothing).

At full size (10,000 subscribers over two worker processes, 1,000 more every
10 s at 100/s, every subscriber receiving 1 msg/s: 10,000 frames/s)::

    locust -f locustfiles/stomp_fanout.py --headless --processes 2 --shape stages \
        --shape-stages 10:1010:100,10:2010:100,10:3010:100,10:4010:100,10:5010:100,\
10:6010:100,10:7010:100,10:8010:100,10:9010:100,10:10010:100,30:10010 -t 140s \
        --stomp-destination '/topic/devices/{device_id}' --stomp-device-count 5 \
        --device-interval 1

(the stages are one argument, without spaces.) Measured on this 2-core machine
with the whole embedded stack: every subscriber connected, 0 lost, worker loop
lag p99 13–17 ms (``bench/README.md``).

Each subscriber costs ~16 KB and 35–68 µs of a generator core per MESSAGE with
the ledger on (``bench/README.md``); at the Go tool's 10 msg/s per device the
frames a run asks for are 100,000/s, about five cores of subscribers plus the
gateway's. The end-of-run summary (``summary.csv`` in the results folder, and
printed) has connect time and message latency P50/P90/P95/P99, deliveries,
losses and each process's loop lag P99.
"""

from users import MqttDevice, StompSubscriber
from users.shapes import PresetShape  # noqa: F401


class Device(MqttDevice):
    fixed_count = 10


class Subscriber(StompSubscriber):
    weight = 1
