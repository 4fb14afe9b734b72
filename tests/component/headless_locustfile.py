"""A locustfile that only imports telemetry: the exporter must serve it (no backend needed)."""

from __future__ import annotations

import random

from locust import User, constant, task

import telemetry  # noqa: F401  (registers the telemetry plugins, exporter included)


class Clock(User):
    wait_time = constant(0.05)

    @task
    def tick(self) -> None:
        self.environment.events.request.fire(
            request_type="TICK",
            name="tick",
            response_time=random.uniform(1, 30),
            response_length=0,
            exception=None,
            context={},
        )
