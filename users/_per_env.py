"""State that belongs to one Locust ``Environment``, never to the process.

Two environments in one process (tests, an embedder) must not share device
numbers, MQTT pumps or Kafka producers, and an environment's state goes away
with it: a ``WeakKeyDictionary`` keyed by the ``Environment``, as
``telemetry.plugin`` keeps its plugins.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from locust.env import Environment

__all__ = ["PerEnvironment"]

T = TypeVar("T")


class PerEnvironment(Generic[T]):
    """One ``T`` per ``Environment``, made by ``factory`` on first use.

    ``stale(value)`` true makes it again (the pump and the timetable are bound
    to the gevent hub they were made in).
    """

    def __init__(self, factory: Callable[[], T], stale: Callable[[T], bool] | None = None) -> None:
        self._factory = factory
        self._stale = stale
        self._values: weakref.WeakKeyDictionary[Environment, T] = weakref.WeakKeyDictionary()

    def __call__(self, environment: Environment) -> T:
        value = self._values.get(environment)
        if value is None or (self._stale is not None and self._stale(value)):
            value = self._values[environment] = self._factory()
        return value
