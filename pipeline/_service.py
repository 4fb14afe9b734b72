"""What every pipeline service's ``main()`` shares: logging, its settings, its exit code.

The bridge, the consumer and the gateway each get their :class:`Settings` from
:func:`run_service`, the one place a service builds them (from the environment),
and end the same way on a user-facing mistake (a bad setting, a taken port):
``pipeline: <sentence>`` on stderr and exit code 2
(:func:`pipeline.exceptions.exit_on_error`).
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from typing import Protocol

from pipeline.config import SETTINGS, Settings
from pipeline.exceptions import PortTaken, exit_on_error


class ThreadedService(Protocol):
    """The bridge and the consumer: ``run()`` until ``stopping`` is set."""

    stopping: threading.Event

    def run(self) -> None: ...


def service_logging() -> None:
    """One line per event for the services; the Kafka client's chatter only on warnings."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)


def run_service(serve: Callable[[Settings], int]) -> int:
    """``main()`` of a service: logging, settings from the environment, then ``serve``.

    A :class:`~pipeline.exceptions.PipelineError` raised while reading the settings
    or inside ``serve`` ends the process with one line and its exit code.
    """
    service_logging()
    with exit_on_error():
        return serve(Settings.from_env())


def run_threaded_service(make: Callable[[Settings], ThreadedService], metrics_port: str) -> int:
    """``main()`` of the bridge and the consumer: /metrics on the port of the setting
    named ``metrics_port``, SIGTERM/SIGINT set ``service.stopping``, then ``run()``."""

    def serve(settings: Settings) -> int:
        from prometheus_client import start_http_server

        host, port = settings.metrics_host, getattr(settings, metrics_port)
        try:
            start_http_server(port, addr=host)
        except OSError as exc:
            raise PortTaken(
                f"cannot serve metrics on {host}:{port} ({exc.strerror}); "
                f"set {SETTINGS[metrics_port].env} to a free port."
            ) from None
        service = make(settings)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: service.stopping.set())
        service.run()
        return 0

    return run_service(serve)
