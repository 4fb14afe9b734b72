"""What is lost when a part fails: a steady fleet while each part of the pipeline goes down once.

    python -m pipeline up --detach
    locust -f locustfiles/fault_tolerance.py --headless -t 4m

40 QoS 1 devices on persistent sessions publish 5 msg/s each (200 msg/s), 2
STOMP subscribers (``/topic/coordinates``) and 1 raw WebSocket subscriber
watch everything, and the canonical schedule takes each part down once, 35 s
apart so each recovers before the next: bridge, consumer, Kafka, Redis and
gateway killed (SIGKILL) for 10 s, then a graceful restart of the MQTT broker.
At the end the fault table (console, ``faults.json``, the report's Faults
section) says, per phase, what was published during the outage, lost,
delivered late, when delivery resumed and when the backlog had drained.

Everything is an option: ``--faults`` replaces the schedule (``kill``, ``stop``,
``pause``, ``restart`` and, with ``python -m pipeline up --fault-proxies``,
``latency``/``netem``/``partition``/``bandwidth``), ``--fault-command`` acts on a
pipeline of your own, ``-u`` changes the fleet (every user beyond the 3
subscribers is a device). A CI-sized run::

    locust -f locustfiles/fault_tolerance.py --headless -t 40s \\
        --faults "kill:bridge@8s+3s, pause:consumer@18s+3s, restart:mosquitto@28s"
"""

from typing import Any

from locust import events

from users import MqttDevice, StompSubscriber, WsSubscriber

#: Each part once, 35 s apart: 10 s outages leave ~25 s to drain the backlog.
CANONICAL = (
    "kill:bridge@20s+10s, kill:consumer@55s+10s, kill:kafka@90s+10s, "
    "kill:redis@125s+10s, kill:gateway@160s+10s, restart:mosquitto@195s"
)
DEVICES = 40


@events.init_command_line_parser.add_listener
def _defaults(parser: Any, **_kw: Any) -> None:
    # this scenario's defaults; the command line, environment and locust.conf still win
    parser.set_defaults(faults=CANONICAL, num_users=DEVICES + 3, spawn_rate=DEVICES + 3)


class Dashboard(StompSubscriber):
    fixed_count = 2


class RawViewer(WsSubscriber):
    fixed_count = 1


class Device(MqttDevice):
    weight = 1
    qos = 1
    interval = 0.2
    #: the broker keeps the session (and what it had not yet delivered) across reconnects
    clean_session = False
