"""Publishers on one host, subscribers on others: the scenario of ``bench clock-skew``
and the clock tests.

Each worker process plays the roles in its ``PIPESWARM_TEST_ROLE`` environment
variable (comma-separated). The master dispatches users by class name without
knowing roles, so a class does what the roles of the process it lands in say:

- ``Device`` (MqttDevice, 10 msg/s): publishes where the roles include
  ``publish``, idles elsewhere;
- ``Watcher`` (a STOMP subscriber on ``/topic/coordinates``, every message):
  ledger kind ``near`` where the roles include ``near`` (a process on the
  publishers' clock), ``far`` where they include ``far`` (another clock,
  corrected by both offsets); it idles elsewhere (``idle``: a worker to kill).

``mqtt→near`` and ``mqtt→far`` are then the same messages seen on two clocks.
``PIPESWARM_TEST_GATEWAY_URL`` gives one worker's watchers another way to the
gateway (a delaying proxy on that host): the master's ``--gateway-url`` reaches
every worker with the spawn message and overrides a worker's own.
``Watcher`` has a fixed count and ``Device`` a weight: Locust dispatches fixed
users first, round robin over the workers, so every worker gets watchers.
"""

from __future__ import annotations

import os

from locust import User, constant, task

from users import MqttDevice, StompSubscriber

ROLES = set(os.environ.get("PIPESWARM_TEST_ROLE", "").split(",")) - {""}
KIND = "near" if "near" in ROLES else "far" if "far" in ROLES else ""
MASTER = not ROLES  # the master loads the real classes


class _Idle(User):
    abstract = True
    wait_time = constant(1)

    @task
    def idle(self) -> None:
        pass


class Device(MqttDevice if MASTER or "publish" in ROLES else _Idle):  # type: ignore[misc]
    weight = 1
    interval = 0.1


class Watcher(StompSubscriber if MASTER or KIND else _Idle):  # type: ignore[misc]
    fixed_count = 6
    ledger_kind = KIND or "stomp"
    url = os.environ.get("PIPESWARM_TEST_GATEWAY_URL") or None
