"""Errors of the embedded stack launcher.

    PipelineError
     ├── PortTaken        a port the stack wants is already bound
     ├── BinaryMissing    mosquitto, redis-server, java or the Kafka jars not found
     ├── KafkaUnreachable an external KAFKA_BOOTSTRAP_SERVERS does not answer
     ├── StartupFailed    a service did not become healthy in time
     ├── StackNotRunning  `down`/`status` with no state file
     └── UnknownComponent `kill`/`start`/… of a part the stack does not have

Each carries one sentence a user can act on; the CLI prints it and exits 2.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Base class: str(exc) is the one-sentence message shown to the user."""


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
