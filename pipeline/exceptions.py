"""Every error the pipeline defines, and the one way an error becomes an exit code.

    PipelineError                   base of everything below
     ├── ConfigError (ValueError)   a bad setting: an environment variable of a service
     │                              or an option of `python -m pipeline up`
     ├── PortTaken                  a port the stack or a service wants is already bound
     ├── BinaryMissing              mosquitto, redis-server, java or the Kafka jars not found
     ├── KafkaUnreachable           an external KAFKA_BOOTSTRAP_SERVERS does not answer
     ├── StartupFailed              a service did not become healthy in time
     ├── StackNotRunning            `down`/`status` with no state file
     ├── UnknownComponent           `kill`/`start`/… of a part the stack does not have
     ├── CommandError               the gateway's REST -> MQTT command publisher
     │    ├── CommandUnavailable    the MQTT connection is down: nothing was published (503)
     │    └── CommandNotConfirmed   published, but no PUBACK in time (504)
     ├── IngestError                the gateway's HTTP -> Kafka ingest producer
     │    ├── IngestUnavailable     Kafka cannot take the record now: nothing queued (503)
     │    └── IngestNotConfirmed    queued, but Kafka did not acknowledge it in time (504)
     ├── StompProtocolError         a frame that breaks the STOMP 1.2 grammar
     │    (ValueError)              (the gateway answers ERROR and closes the session)
     ├── Rejected (ValueError)      a device message the bridge or consumer will not carry
     │                              (dead-lettered with its reason, counted)
     └── InvalidToken (ValueError)  a bearer token that is missing, malformed, forged,
                                    expired or for another issuer (`pipeline.auth`; 401)

The command, ingest, STOMP, token and rejection errors are handled inside the services, counted
in a metric, and never end a process. Everything else is a user-facing mistake whose ``str()`` is one
sentence saying what to change: the launcher (`python -m pipeline`) and every
service (`python -m pipeline.bridge|consumer|gateway`) end on it the same way,
through :func:`exit_on_error` — ``pipeline: <sentence>`` on stderr and exit
code :data:`EXIT_USAGE`, never a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = [
    "EXIT_USAGE",
    "BinaryMissing",
    "IngestError",
    "IngestNotConfirmed",
    "IngestUnavailable",
    "CommandError",
    "CommandNotConfirmed",
    "CommandUnavailable",
    "ConfigError",
    "InvalidToken",
    "KafkaUnreachable",
    "PipelineError",
    "PortTaken",
    "Rejected",
    "StackNotRunning",
    "StartupFailed",
    "StompProtocolError",
    "UnknownComponent",
    "exit_code",
    "exit_on_error",
]

#: Exit code of a user-facing mistake (argparse's own for a bad command line).
EXIT_USAGE = 2


class PipelineError(Exception):
    """Base class: str(exc) is the one-sentence message shown to the user."""


class ConfigError(PipelineError, ValueError):
    """A bad setting; ``str(err)`` names the variable (or option) and what it must be."""


# --- the launcher (and a service's own listening port) ----------------------------------------
class PortTaken(PipelineError):
    pass


class BinaryMissing(PipelineError):
    pass


class KafkaUnreachable(PipelineError):
    pass


class StartupFailed(PipelineError):
    pass


class StackNotRunning(PipelineError):
    pass


class UnknownComponent(PipelineError):
    pass


# --- the gateway --------------------------------------------------------------------------------
class CommandError(PipelineError):
    """A device command that REST accepted but MQTT did not take."""


class CommandUnavailable(CommandError):
    """The MQTT connection is down: nothing was published."""


class CommandNotConfirmed(CommandError):
    """Published, but the broker did not acknowledge it in time."""


class IngestError(PipelineError):
    """A device message that HTTP ingest accepted but Kafka did not take."""


class IngestUnavailable(IngestError):
    """Kafka cannot take the record now (producer queue full or down): nothing was queued."""


class IngestNotConfirmed(IngestError):
    """Queued, but Kafka did not acknowledge it in time (or refused it)."""


class StompProtocolError(PipelineError, ValueError):
    """A frame that breaks the STOMP 1.2 grammar; ``reason`` is a short metric label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class Rejected(PipelineError, ValueError):
    """A record the pipeline will not carry; ``reason`` is one of ``pipeline._schema.REASONS``."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class InvalidToken(PipelineError, ValueError):
    """A bearer token that is missing, malformed, forged, expired or for another issuer."""


#: Errors the services handle themselves (count, log, carry on): never an exit.
_HANDLED = (CommandError, IngestError, StompProtocolError, Rejected, InvalidToken)


def exit_code(err: BaseException) -> int:
    """The process exit code for ``err``: :data:`EXIT_USAGE` for a user mistake, else 1."""
    if isinstance(err, _HANDLED):
        return 1
    return EXIT_USAGE if isinstance(err, PipelineError) else 1


@contextmanager
def exit_on_error() -> Iterator[None]:
    """Turn a :class:`PipelineError` raised inside into one line on stderr and its exit code."""
    try:
        yield
    except PipelineError as err:
        sys.stderr.write(f"pipeline: {err}\n")
        raise SystemExit(exit_code(err)) from None
