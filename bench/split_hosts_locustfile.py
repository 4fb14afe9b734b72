"""Publishers on one host, subscribers on another: the scenario of ``bench clock-skew``
and the clock tests.

Each worker process plays the role in its ``PIPESWARM_TEST_ROLE`` environment
variable. The master dispatches users by class name without knowing roles, so
a class does what the role of the process it lands in says:

- ``Device`` (MqttDevice, 10 msg/s): publishes on a ``publish`` worker, idles elsewhere;
- ``Watcher`` (a STOMP subscriber on ``/topic/coordinates``, every message):
  on a ``publish`` worker its ledger kind is ``near`` (publisher and subscriber
  share one clock), on a ``subscribe`` worker ``far`` (two clocks, corrected by
  both offsets); it idles on any other worker (``idle``: a worker to kill).

``mqtt→near`` and ``mqtt→far`` are then the same messages seen from two hosts.
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

ROLE = os.environ.get("PIPESWARM_TEST_ROLE", "")
KIND = {"publish": "near", "subscribe": "far"}


class _Idle(User):
    abstract = True
    wait_time = constant(1)

    @task
    def idle(self) -> None:
        pass


class Device(MqttDevice if ROLE in ("", "publish") else _Idle):  # type: ignore[misc]
    weight = 1
    interval = 0.1


class Watcher(StompSubscriber if ROLE in ("", *KIND) else _Idle):  # type: ignore[misc]
    fixed_count = 4
    ledger_kind = KIND.get(ROLE, "stomp")
    url = os.environ.get("PIPESWARM_TEST_GATEWAY_URL") or None
