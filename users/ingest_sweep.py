"""``IngestSweep``: the HTTP-vs-MQTT ingest comparison as a Locust load shape.

Equal fleets of an MQTT device class and an HTTP device class take turns at the
same offered rate (``devices / --device-interval``), in front of the same
subscribers, which stay connected the whole run. Each turn is a *phase*: the
fleet spawns, runs ``--compare-warmup`` seconds, then is measured for
``--compare-seconds`` (``telemetry.ingest_compare``). The fleets take turns
rather than run together so that generator CPU per message belongs to one
protocol, and neither fleet's traffic queues behind the other's in the pipeline.

Without ``--sweep-steps`` there is one step: ``--compare-devices`` devices each.
With ``--sweep-steps N`` the fleets grow by ``--sweep-factor`` per step (up to N
steps). A protocol that did not keep up at a step (less than 95 % of the offered
rate acknowledged, or over 1 % failed) is saturated once its acknowledged rate
stops rising (under :data:`STILL_RISING` × its previous step's): it sits out the later steps, and the sweep ends
when neither goes on. Each side's highest acknowledged rate is then its plateau,
and their ratio is a measured ratio::

    class Shape(IngestSweep):
        mqtt = Device            # an MqttDevice subclass
        http = Poster            # an HttpDevice subclass
        subscribers = (Dashboard,)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from locust import LoadTestShape
from locust.runners import LocalRunner

from telemetry.ingest_compare import Entry, Recorder
from telemetry.options import Option, OptionGroup, at_least
from users._config import settings
from users._mqtt_client import REQUEST_TYPE as MQTT_REQUEST_TYPE
from users.exceptions import ConfigError
from users.http import INGEST_NAME, WIRE_PROTOCOL
from users.http import REQUEST_TYPE as HTTP_REQUEST_TYPE

if TYPE_CHECKING:
    from locust import User

__all__ = ["IngestSweep", "OPTIONS", "ENTRIES"]

log = logging.getLogger(__name__)

#: How each protocol's acknowledgement and bytes show up (``telemetry.ingest_compare``).
ENTRIES = (
    Entry("mqtt", MQTT_REQUEST_TYPE, "publish:", MQTT_REQUEST_TYPE, prefix=True),
    Entry("http", HTTP_REQUEST_TYPE, INGEST_NAME, WIRE_PROTOCOL),
)

DEVICES = Option(
    "--compare-devices",
    int,
    50,
    "PIPESWARM_COMPARE_DEVICES",
    "Ingest comparison: devices in each fleet (the first step's, with --sweep-steps)",
    check=at_least(1, "must be at least 1"),
    error=ConfigError,
)
SECONDS = Option(
    "--compare-seconds",
    float,
    20.0,
    "PIPESWARM_COMPARE_SECONDS",
    "Ingest comparison: seconds each phase is measured",
    check=at_least(1, "must be at least 1 second"),
    error=ConfigError,
)
WARMUP = Option(
    "--compare-warmup",
    float,
    5.0,
    "PIPESWARM_COMPARE_WARMUP",
    "Ingest comparison: seconds a fleet runs before its phase is measured",
    check=at_least(0, "must be 0 or positive"),
    error=ConfigError,
)
STEPS = Option(
    "--sweep-steps",
    int,
    0,
    "PIPESWARM_SWEEP_STEPS",
    "Ingest comparison: rising-rate steps, until neither protocol keeps up (0 = one step)",
    check=at_least(0, "must be 0 (one step) or positive"),
    error=ConfigError,
)
FACTOR = Option(
    "--sweep-factor",
    float,
    2.0,
    "PIPESWARM_SWEEP_FACTOR",
    "Ingest comparison: fleet growth per sweep step",
    check=lambda v: None if v > 1 else "must be more than 1",
    error=ConfigError,
)
OPTIONS = OptionGroup("pipeswarm ingest comparison", DEVICES, SECONDS, WARMUP, STEPS, FACTOR)
OPTIONS.register()

#: A protocol that fell behind goes on to the next step only while its acknowledged rate
#: still grows by this factor (more devices, more requests in flight, more throughput).
STILL_RISING = 1.1
#: Longest wait for a fleet to spawn (and the other to stop) before measuring anyway.
RAMP_TIMEOUT_S = 60.0


class IngestSweep(LoadTestShape):
    """The phases of the comparison (see the module docstring)."""

    abstract = True
    #: The MQTT device class (an ``MqttDevice`` subclass) and the HTTP one (``HttpDevice``).
    mqtt: type[User] | None = None
    http: type[User] | None = None
    #: Classes that run the whole time (subscribers), each with its ``fixed_count``.
    subscribers: Sequence[type[User]] = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.recorder: Recorder | None = None
        self._plan: list[tuple[int, str]] = []
        self._saturated: set[str] = set()
        #: src -> its previous phase's acknowledged rate
        self._last: dict[str, float] = {}
        self._stage = "ramp"
        self._since = 0.0

    # --- the plan ------------------------------------------------------------------
    def _start(self) -> bool:
        assert self.runner is not None
        env = self.runner.environment
        if not isinstance(self.runner, LocalRunner):
            log.error(
                "the ingest comparison measures generator CPU per protocol: run it in one "
                "process (no --processes, --master or --worker)"
            )
            return False
        if self.mqtt is None or self.http is None:
            raise ConfigError(f"{type(self).__name__} needs both an mqtt and an http class.")
        steps = max(STEPS.get(env), 1)
        self._plan = [(step, src) for step in range(1, steps + 1) for src in ("mqtt", "http")]
        mode = "sweep" if STEPS.get(env) else "fixed"
        self.recorder = Recorder(env, list(ENTRIES), mode)
        self.recorder.interval_s = settings(env).device_interval
        self._since = self.get_run_time()
        return True

    def devices(self, step: int) -> int:
        assert self.runner is not None
        env = self.runner.environment
        return round(DEVICES.get(env) * FACTOR.get(env) ** (step - 1))

    def _class(self, src: str) -> type[User]:
        cls = self.mqtt if src == "mqtt" else self.http
        assert cls is not None
        return cls

    def _interval(self, cls: type[User]) -> float:
        assert self.runner is not None
        own = getattr(cls, "interval", None)
        return float(own) if own is not None else settings(self.runner.environment).device_interval

    def _judge(self, src: str, acked_per_s: float, kept_up: bool) -> None:
        """Saturated: fell behind, and the rate stopped rising (see the module docstring)."""
        previous = self._last.get(src)
        self._last[src] = acked_per_s
        if not kept_up and previous is not None and acked_per_s < STILL_RISING * previous:
            self._saturated.add(src)

    # --- Locust's tick ----------------------------------------------------------------
    def tick(self) -> tuple[int, float, list[type[User]]] | None:
        assert self.runner is not None
        if self.recorder is None and not self._start():
            return None
        recorder = self.recorder
        assert recorder is not None
        while self._plan and self._plan[0][1] in self._saturated:
            self._plan.pop(0)  # a protocol that stopped keeping up sits the later steps out
        if not self._plan:
            return None
        step, src = self._plan[0]
        cls = self._class(src)
        other = self._class("http" if src == "mqtt" else "mqtt")
        devices = self.devices(step)
        now = self.get_run_time()
        counts = self.runner.user_classes_count
        fixed = sum(int(getattr(s, "fixed_count", 0) or 0) for s in self.subscribers)
        spawn_rate = math.ceil(max(devices / 5.0, 10.0))  # a fleet is up within ~5 s
        if self._stage == "ramp" and counts.get(other.__name__, 0):
            # Locust keeps the classes it has when only the classes change: the other
            # fleet stops first, then this one spawns.
            if now - self._since <= RAMP_TIMEOUT_S:
                return fixed, spawn_rate, list(self.subscribers)
        if self._stage == "ramp":
            ready = counts.get(cls.__name__, 0) >= devices and not counts.get(other.__name__, 0)
            if ready or now - self._since > RAMP_TIMEOUT_S:
                self._stage, self._since = "warm", now
        elif self._stage == "warm":
            if now - self._since >= WARMUP.get(self.runner.environment):
                interval = self._interval(cls)
                offered = devices / interval if interval > 0 else 0.0
                recorder.open(step, src, devices, offered)
                self._stage, self._since = "measure", now
        elif now - self._since >= SECONDS.get(self.runner.environment):
            phase = recorder.close()
            if phase is not None:
                self._judge(src, phase.acked / phase.seconds, recorder.keeps_up(phase))
            self._plan.pop(0)
            self._stage, self._since = "ramp", now
            return self.tick()
        return devices + fixed, spawn_rate, [*self.subscribers, cls]
