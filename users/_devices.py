"""Device ids and numbering, the same for every user that stands for (or watches) a device.

A user class numbers its users 1, 2, 3, … per Locust ``Environment`` (one per
process, so a test's fresh ``Environment`` starts at 1 again) and per
:attr:`DeviceIds.numbering` (``MqttDevice`` and ``KafkaProducer`` count
separately; a ``StompSubscriber`` n watches ``MqttDevice`` n). The id is the
prefix and the number; on a distributed worker the worker index is part of it,
so ids are unique across workers.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

from locust.runners import WorkerRunner

from users._per_env import PerEnvironment

if TYPE_CHECKING:
    from locust.env import Environment

__all__ = ["DeviceIds", "device_id", "next_number"]

_counters: PerEnvironment[dict[str, itertools.count[int]]] = PerEnvironment(dict)


def next_number(environment: Environment, numbering: str) -> int:
    """1, 2, 3, … per ``environment`` and ``numbering``."""
    counters = _counters(environment)
    counter = counters.get(numbering)
    if counter is None:
        counter = counters[numbering] = itertools.count(1)
    return next(counter)


def device_id(environment: Environment, prefix: str, n: int) -> str:
    """``robot-0007``; on distributed worker 2 ``robot-w2-0007``."""
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        return f"{prefix}w{runner.worker_index}-{n:04d}"
    return f"{prefix}{n:04d}"


class DeviceIds:
    """Mixin of the users: :meth:`make_device_id` from :attr:`device_id_prefix` and a number."""

    environment: Environment
    #: The id's prefix: ``robot-`` gives ``robot-0001``, ``robot-0002``, …
    device_id_prefix: str = "robot-"
    #: Which count the user's numbers come from (users of one numbering share it).
    numbering: str = "device"

    def next_device_number(self) -> int:
        return next_number(self.environment, self.numbering)

    def make_device_id(self, n: int) -> str:
        """``robot-0007``; on a distributed worker ``robot-w2-0007`` (unique across workers)."""
        return device_id(self.environment, self.device_id_prefix, n)
