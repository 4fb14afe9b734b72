"""Every error the telemetry raises, and the one way a user mistake becomes an exit code.

    TelemetryError
     └── OptionError (ValueError)   a bad option value or file: one sentence, exit 2 at start
          ├── SloError              an ``--slo`` file that cannot be used
          └── FaultError            a ``--faults`` schedule (or its tools) that cannot be run

``users.exceptions.ConfigError`` is an :class:`OptionError` too, so every
load-side option mistake ends the same way: :func:`exit_on_option_error` writes
``pipeswarm: <sentence>`` to stderr and exits with :data:`EXIT_USAGE` — never a
traceback (the exit code argparse itself uses for a bad command line).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = [
    "EXIT_USAGE",
    "FaultError",
    "OptionError",
    "SloError",
    "TelemetryError",
    "exit_code",
    "exit_on_option_error",
]

#: Exit code of a user-facing mistake (argparse's own for a bad command line).
EXIT_USAGE = 2


class TelemetryError(Exception):
    """Base of the telemetry's errors (tree in the module docstring)."""


class OptionError(TelemetryError, ValueError):
    """A user-facing option mistake; ``str(err)`` is one sentence saying what to change."""


class SloError(OptionError):
    """An SLO file that cannot be used; ``str(err)`` is one sentence naming the problem."""


class FaultError(OptionError):
    """A ``--faults`` schedule, ``--fault-command`` or Toxiproxy that cannot be used."""


def exit_code(err: BaseException) -> int:
    """The process exit code for ``err``: :data:`EXIT_USAGE` for a user mistake, else 1."""
    return EXIT_USAGE if isinstance(err, OptionError) else 1


@contextmanager
def exit_on_option_error() -> Iterator[None]:
    """Turn an :class:`OptionError` raised inside into one sentence on stderr and exit 2."""
    try:
        yield
    except OptionError as err:
        sys.stderr.write(f"pipeswarm: {err}\n")
        raise SystemExit(exit_code(err)) from None
