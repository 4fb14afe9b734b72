"""The telemetry's Locust options, each with an environment variable (DESIGN.md).

Registered through ``events.init_command_line_parser`` (``telemetry.plugin``
does it on import), so the command line, the environment and ``locust.conf``
all work with Locust's one precedence.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from locust.argument_parser import LocustArgumentParser
    from locust.env import Environment

__all__ = ["DEFAULT_GRACE_S", "DEFAULT_DRAIN_S", "add_arguments", "option"]

DEFAULT_GRACE_S = 5.0
DEFAULT_DRAIN_S = 3.0


def add_arguments(parser: LocustArgumentParser) -> None:
    """The telemetry options (``events.init_command_line_parser`` listener)."""
    # plain add_argument: only LocustArgumentParser's own understands include_in_web_ui
    parser.add_argument(
        "--results-dir",
        type=str,
        default="",
        env_var="PIPESWARM_RESULTS_DIR",
        include_in_web_ui=False,
        help="Directory for run.json, e2e.json, timeseries.csv; '{run_id}' is replaced. "
        "Default: results/<run id>/",
    )
    parser.add_argument(
        "--run-id",
        type=str,
        default="",
        env_var="PIPESWARM_RUN_ID",
        help="Id of this run (tags every message; names the results dir). "
        "Default: a fresh UTC timestamp id per test",
    )
    parser.add_argument(
        "--e2e-grace",
        type=float,
        default=DEFAULT_GRACE_S,
        env_var="PIPESWARM_E2E_GRACE",
        help="Seconds a missing message may be late before it counts as lost",
    )
    parser.add_argument(
        "--e2e-drain",
        type=float,
        default=DEFAULT_DRAIN_S,
        env_var="PIPESWARM_E2E_DRAIN",
        help="Seconds subscribers keep reading after publishers stop, at the end of a test",
    )
    parser.add_argument(
        "--e2e-hop-events",
        type=str,
        default="true",
        choices=["true", "false"],
        env_var="PIPESWARM_E2E_HOP_EVENTS",
        help="Also show each hop (path:service, path:kafka, ...) as an E2E request entry; "
        "'false' keeps only the total (cheaper; e2e.json keeps every hop either way)",
    )


def option(environment: Environment, name: str, default: Any) -> Any:
    """``parsed_options.<name>``, or ``default`` when absent or empty."""
    options = environment.parsed_options
    value = getattr(options, name, None) if options is not None else None
    return default if value is None or value == "" else value
