"""Load shapes as one ``LoadTestShape`` whose preset is chosen by option.

Locust runs the shape class it finds in a locustfile; a scenario imports
:class:`PresetShape` and the preset comes from ``--shape`` (env
``PIPESWARM_SHAPE``), so CLI, environment and ``locust.conf`` all work::

    locust -f locustfiles/stomp_fanout.py --shape stages --shape-stages 10:300,10:600,10:900
    locust -f locustfiles/pipeline.py --shape spike -u 50 --spike-users 200 --spike-at 20

Presets (``-u`` / ``-r`` / ``-t`` keep their Locust meaning):

- ``constant`` (default): ``-u`` users at ``-r``/s, as if there were no shape.
- ``stages``: ``--shape-stages SECONDS:USERS[:RATE],...``, each held for its
  seconds; after the last stage the test stops. The Go STOMP tool's scenario,
  300 connections more every 10 s, is ``10:300,10:600,10:900,...``.
- ``step``: ``--step-users`` more every ``--step-seconds`` until ``-u``, then hold.
- ``spike``: ``-u`` users, ``--spike-users`` from ``--spike-at`` s for
  ``--spike-seconds``, then back to ``-u``.
- ``soak``: ramp to ``-u`` over ``--ramp-seconds``, then hold until ``-t``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from locust import LoadTestShape

from telemetry.options import Option, OptionGroup, at_least
from users.exceptions import ConfigError

if TYPE_CHECKING:
    from locust.env import Environment

__all__ = ["OPTIONS", "PRESETS", "PresetShape", "Stage", "parse_stages"]

PRESETS = ("constant", "stages", "step", "spike", "soak")


@dataclass(frozen=True)
class Stage:
    seconds: float
    users: int
    rate: float | None = None


def parse_stages(text: str) -> list[Stage]:
    """``"10:300,10:600:50"`` -> stages; one clear error for anything else."""
    stages = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        fields = part.split(":")
        try:
            if len(fields) not in (2, 3):
                raise ValueError
            seconds, users = float(fields[0]), int(fields[1])
            rate = float(fields[2]) if len(fields) == 3 else None
            if seconds <= 0 or users < 0 or (rate is not None and rate <= 0):
                raise ValueError
        except ValueError:
            raise ValueError(
                f"--shape-stages item {part!r} must be SECONDS:USERS[:RATE] with positive numbers"
            ) from None
        stages.append(Stage(seconds, users, rate))
    if not stages:
        raise ValueError("--shape stages needs --shape-stages SECONDS:USERS[:RATE],...")
    return stages


def _stages_check(text: str) -> str | None:
    try:
        if text:
            parse_stages(text)
    except ValueError as err:
        return str(err).removeprefix("--shape-stages ")
    return None


def _positive(what: str) -> Callable[[float], str | None]:
    return lambda value: None if value > 0 else f"must be more than 0 {what}"


SHAPE = Option(
    "--shape",
    str,
    "constant",
    "PIPESWARM_SHAPE",
    "Load shape preset (constant: -u users at -r/s)",
    choices=PRESETS,
    error=ConfigError,
)
SHAPE_STAGES = Option(
    "--shape-stages",
    str,
    "",
    "PIPESWARM_SHAPE_STAGES",
    "For --shape stages: SECONDS:USERS[:RATE],... held in turn",
    error=ConfigError,
)
STEP_USERS = Option(
    "--step-users",
    int,
    10,
    "PIPESWARM_STEP_USERS",
    "For --shape step: users added per step",
    check=at_least(1, "must be 1 or more users per step"),
    error=ConfigError,
)
STEP_SECONDS = Option(
    "--step-seconds",
    float,
    10.0,
    "PIPESWARM_STEP_SECONDS",
    "For --shape step: seconds per step",
    check=_positive("seconds per step"),
    error=ConfigError,
)
SPIKE_USERS = Option(
    "--spike-users",
    int,
    0,
    "PIPESWARM_SPIKE_USERS",
    "For --shape spike: users during the spike (0: 4 x -u)",
    check=at_least(0, "must be 0 (4 x -u) or a number of users"),
    error=ConfigError,
)
SPIKE_AT = Option(
    "--spike-at",
    float,
    30.0,
    "PIPESWARM_SPIKE_AT",
    "For --shape spike: seconds before the spike",
    check=at_least(0, "must be 0 or more seconds"),
    error=ConfigError,
)
SPIKE_SECONDS = Option(
    "--spike-seconds",
    float,
    10.0,
    "PIPESWARM_SPIKE_SECONDS",
    "For --shape spike: length of the spike",
    check=at_least(0, "must be 0 or more seconds"),
    error=ConfigError,
)
RAMP_SECONDS = Option(
    "--ramp-seconds",
    float,
    60.0,
    "PIPESWARM_RAMP_SECONDS",
    "For --shape soak: ramp-up time to -u",
    check=at_least(0, "must be 0 or more seconds"),
    error=ConfigError,
)
OPTIONS = OptionGroup(
    "pipeswarm load shape",
    SHAPE,
    SHAPE_STAGES,
    STEP_USERS,
    STEP_SECONDS,
    SPIKE_USERS,
    SPIKE_AT,
    SPIKE_SECONDS,
    RAMP_SECONDS,
)


def _check_stages(environment: Environment) -> None:
    """``--shape stages`` needs valid ``--shape-stages`` (checked at ``init``)."""
    if SHAPE.get(environment) == "stages":
        try:
            parse_stages(SHAPE_STAGES.get(environment))
        except ValueError as err:
            raise ConfigError(str(err)) from None


OPTIONS.validators.append(_check_stages)
OPTIONS.register()


class PresetShape(LoadTestShape):
    """Reads ``--shape`` and its knobs; ``-u``/``-r`` are the base users and rate."""

    use_common_options = True  # -u / -r / -t stay editable in the web UI

    def tick(self) -> tuple[int, float] | None:
        assert self.runner is not None and self.runner.environment.parsed_options is not None
        env = self.runner.environment
        opts = env.parsed_options
        users = int(getattr(opts, "num_users", None) or 1)
        rate = float(getattr(opts, "spawn_rate", None) or users)
        t = self.get_run_time()
        run_time = getattr(opts, "run_time", None)
        if run_time and t >= run_time:
            return None  # Locust leaves -t to the shape once a shape class is in use
        preset = SHAPE.get(env)
        if preset == "stages":
            elapsed = 0.0
            for stage in parse_stages(SHAPE_STAGES.get(env)):
                elapsed += stage.seconds
                if t < elapsed:
                    return stage.users, stage.rate or max(float(stage.users), 1.0)
            return None
        if preset == "step":
            steps = int(t // STEP_SECONDS.get(env)) + 1
            return min(users, steps * STEP_USERS.get(env)), rate
        if preset == "spike":
            spike = SPIKE_USERS.get(env) or 4 * users
            at = SPIKE_AT.get(env)
            in_spike = at <= t < at + SPIKE_SECONDS.get(env)
            return (spike, max(rate, float(spike))) if in_spike else (users, rate)
        if preset == "soak":
            ramp = RAMP_SECONDS.get(env)
            target = users if t >= ramp else max(1, round(users * t / ramp))
            return target, rate
        return users, rate
