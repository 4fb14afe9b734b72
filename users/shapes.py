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

from dataclasses import dataclass
from typing import TYPE_CHECKING

from locust import LoadTestShape, events

if TYPE_CHECKING:
    from locust.argument_parser import LocustArgumentParser

__all__ = ["PRESETS", "PresetShape", "Stage", "parse_stages"]

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


@events.init_command_line_parser.add_listener
def _add_arguments(parser: LocustArgumentParser) -> None:
    g = parser.add_argument_group("pipeswarm load shape")
    g.add_argument(
        "--shape",
        choices=PRESETS,
        default="constant",
        env_var="PIPESWARM_SHAPE",
        help="Load shape preset (default constant: -u users at -r/s)",
    )
    g.add_argument(
        "--shape-stages",
        default="",
        env_var="PIPESWARM_SHAPE_STAGES",
        help="For --shape stages: SECONDS:USERS[:RATE],... held in turn",
    )
    g.add_argument(
        "--step-users",
        type=int,
        default=10,
        env_var="PIPESWARM_STEP_USERS",
        help="For --shape step: users added per step (default 10)",
    )
    g.add_argument(
        "--step-seconds",
        type=float,
        default=10.0,
        env_var="PIPESWARM_STEP_SECONDS",
        help="For --shape step: seconds per step (default 10)",
    )
    g.add_argument(
        "--spike-users",
        type=int,
        default=0,
        env_var="PIPESWARM_SPIKE_USERS",
        help="For --shape spike: users during the spike (default 4 x -u)",
    )
    g.add_argument(
        "--spike-at",
        type=float,
        default=30.0,
        env_var="PIPESWARM_SPIKE_AT",
        help="For --shape spike: seconds before the spike (default 30)",
    )
    g.add_argument(
        "--spike-seconds",
        type=float,
        default=10.0,
        env_var="PIPESWARM_SPIKE_SECONDS",
        help="For --shape spike: length of the spike (default 10)",
    )
    g.add_argument(
        "--ramp-seconds",
        type=float,
        default=60.0,
        env_var="PIPESWARM_RAMP_SECONDS",
        help="For --shape soak: ramp-up time to -u (default 60)",
    )


class PresetShape(LoadTestShape):
    """Reads ``--shape`` and its knobs; ``-u``/``-r`` are the base users and rate."""

    use_common_options = True  # -u / -r / -t stay editable in the web UI

    def tick(self) -> tuple[int, float] | None:
        assert self.runner is not None and self.runner.environment.parsed_options is not None
        opts = self.runner.environment.parsed_options
        users = int(getattr(opts, "num_users", None) or 1)
        rate = float(getattr(opts, "spawn_rate", None) or users)
        t = self.get_run_time()
        run_time = getattr(opts, "run_time", None)
        if run_time and t >= run_time:
            return None  # Locust leaves -t to the shape once a shape class is in use
        preset = getattr(opts, "shape", "constant")
        if preset == "stages":
            elapsed = 0.0
            for stage in parse_stages(opts.shape_stages):
                elapsed += stage.seconds
                if t < elapsed:
                    return stage.users, stage.rate or max(float(stage.users), 1.0)
            return None
        if preset == "step":
            steps = int(t // opts.step_seconds) + 1
            return min(users, steps * opts.step_users), rate
        if preset == "spike":
            spike = opts.spike_users or 4 * users
            in_spike = opts.spike_at <= t < opts.spike_at + opts.spike_seconds
            return (spike, max(rate, float(spike))) if in_spike else (users, rate)
        if preset == "soak":
            ramp = opts.ramp_seconds
            target = users if t >= ramp else max(1, round(users * t / ramp))
            return target, rate
        return users, rate


@events.init.add_listener
def _validate_at_init(environment, **_kw) -> None:
    """A bad --shape-stages is one sentence and exit code 2 before any user starts."""
    opts = environment.parsed_options
    if opts is not None and getattr(opts, "shape", None) == "stages":
        try:
            parse_stages(opts.shape_stages)
        except ValueError as err:
            import sys

            sys.stderr.write(f"pipeswarm: {err}\n")
            raise SystemExit(2) from None
