"""RestCommander: the web client's REST side — reads the API and sends device commands.

A Locust ``FastHttpUser`` against the gateway (``--gateway-url``; Locust's
``--host`` wins when given). Its tasks, with their stats names (``request_type``
is the HTTP method, as Locust's HTTP users report it):

=========================  ===============================  =======
name                       request                          weight
=========================  ===============================  =======
``/api/health``            ``GET /api/health``              1
``/api/stats``             ``GET /api/stats``               1
``/api/coordinates``       ``GET /api/coordinates``         2
``/api/coordinates/{id}``  ``GET /api/coordinates/<id>``    2
``/api/commands/{id}``     ``POST /api/commands/<id>``      4
                           ``{"command": "tracking|slam|none"}``
=========================  ===============================  =======

A command counts as a success only when the gateway answers 202 with a
``command_id`` and an integer ``issued_at`` (epoch ns). The gateway puts both
into the MQTT command, and the target ``MqttDevice`` reports the REST → MQTT
round trip (``command:orin/+/command``) from ``issued_at``: the commander picks
its targets among devices that really listen, i.e. the devices of the current
run (their messages carry the run id) that entered through MQTT, as listed by
``GET /api/coordinates``. Only listed ones: the gateway takes commands only for
devices the pipeline has stored a message of (404 otherwise), so a device that
has just started publishing becomes a target once it is listed. Against a
pipeline whose messages carry no trace, every listed device is a target. With
no target yet, the per-device tasks send nothing.

Every request carries ``Authorization: Bearer <token>`` (:attr:`RestCommander.token`:
``--token``, or one minted from ``--jwt-secret``, by default the running embedded
stack's secret); a refused one is a failure ``HTTP 401: <the gateway's reason>``.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from locust import between, task
from locust.contrib.fasthttp import FastHttpUser

import telemetry
from users._config import settings

if TYPE_CHECKING:
    from locust.env import Environment

__all__ = ["RestCommander", "COMMANDS"]

#: The original IoT server's commands.
COMMANDS: tuple[str, ...] = ("tracking", "slam", "none")


class RestCommander(FastHttpUser):
    """Reads the gateway's REST API and sends commands to live devices.

    Set :attr:`device_ids` to fix the targets; otherwise they are discovered::

        class Operator(RestCommander):
            commands = ("tracking",)
            wait_time = constant_pacing(0.5)
    """

    abstract = True

    #: Commands to choose from, uniformly.
    commands: Sequence[str] = COMMANDS
    #: Fixed target devices; empty = discover them (see the module docstring).
    device_ids: Sequence[str] = ()
    #: Seconds before the target list is refreshed by an extra ``GET /api/coordinates``
    #: (the ``/api/coordinates`` task refreshes it too, every time it runs).
    refresh_interval: float = 10.0
    #: Bearer token of every request; "" = none. None = ``--token`` (or one minted
    #: from ``--jwt-secret``).
    token: str | None = None

    wait_time = between(0.5, 1.5)

    def __init__(self, environment: Environment) -> None:
        config = settings(environment)
        if self.host is None:  # neither the class nor --host: the gateway URL option
            self.host = config.gateway_url
        token = self.token if self.token is not None else config.gateway_token
        if token:
            self.default_headers = {
                **(self.default_headers or {}),
                "Authorization": f"Bearer {token}",
            }
        super().__init__(environment)
        #: devices to command; devices known to be stored (``/api/coordinates`` listed them)
        self.targets: list[str] = list(self.device_ids)
        self.stored: list[str] = list(self.device_ids)
        self._refreshed = 0.0
        self._ledger: telemetry.Ledger | None = None

    def on_start(self) -> None:
        self._ledger = telemetry.get_ledger(self.environment)

    # --- tasks ---------------------------------------------------------------------
    @task(1)
    def health(self) -> None:
        self.client.get("/api/health")

    @task(1)
    def stats(self) -> None:
        self.client.get("/api/stats")

    @task(2)
    def coordinates(self) -> None:
        with self.client.get("/api/coordinates", catch_response=True) as resp:
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}")
                return
            try:
                listed = json.loads(resp.content or b"")
            except ValueError:
                resp.failure("the body is not JSON")
                return
            if not isinstance(listed, list):
                resp.failure("expected a JSON list")
                return
            self._learn(listed)

    @task(2)
    def device_coordinates(self) -> None:
        device = self.pick_device(stored=True)
        if device is not None:
            self.client.get(f"/api/coordinates/{device}", name="/api/coordinates/{id}")

    @task(4)
    def command(self) -> None:
        device = self.pick_device()
        if device is None:
            return
        body = {"command": random.choice(self.commands)}
        with self.client.post(
            f"/api/commands/{device}",
            json=body,
            name="/api/commands/{id}",
            catch_response=True,
        ) as resp:
            if resp.status_code != 202:
                resp.failure(f"HTTP {resp.status_code}: {(resp.text or '')[:200]}")
                return
            try:
                accepted = json.loads(resp.content or b"")
            except ValueError:
                resp.failure("the 202 body is not JSON")
                return
            if not isinstance(accepted, dict) or not accepted.get("command_id"):
                resp.failure("the 202 body has no command_id")
            elif type(accepted.get("issued_at")) is not int:
                resp.failure("the 202 body has no integer issued_at")
            else:
                self.on_command_accepted(device, accepted)

    # --- targets ---------------------------------------------------------------------
    def on_command_accepted(self, device_id: str, accepted: dict[str, Any]) -> None:
        """Called for every accepted command (``command_id``, ``issued_at``, ``topic``, …)."""

    def pick_device(self, stored: bool = False) -> str | None:
        """A target device id, or None when there is none yet.

        ``stored``: only a device ``GET /api/coordinates`` listed (one that has
        just published its first message may not be in Redis yet: a 404).
        """
        if not self.device_ids and time.monotonic() - self._refreshed > self.refresh_interval:
            self._refreshed = time.monotonic()
            self.coordinates()  # a measured request like any other
        pool = self.stored if stored else self.targets
        return random.choice(pool) if pool else None

    def _learn(self, listed: list[Any]) -> None:
        """Take the targets from a ``GET /api/coordinates`` answer (see the module docstring)."""
        self._refreshed = time.monotonic()
        if self.device_ids:
            return
        ledger = self._ledger
        run = ledger.run_id if ledger is not None else ""
        live: set[str] = set()
        anyone: set[str] = set()
        for msg in listed:
            if not isinstance(msg, dict) or not isinstance(msg.get("device_id"), str):
                continue
            trace = msg.get("trace")
            if isinstance(trace, dict):
                if trace.get("run") == run and trace.get("src", "mqtt") == "mqtt":
                    live.add(msg["device_id"])
            else:
                anyone.add(msg["device_id"])
        # the gateway answers 404 for a device it has not stored yet: listed ones only
        self.stored = sorted(live or anyone)
        self.targets = list(self.stored)
