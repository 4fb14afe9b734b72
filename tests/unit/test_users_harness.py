"""A bounded local Locust run of pipeswarm users, and a gateway process; plus their own tests.

Shared by the user tests (``tests/component/test_*_user.py``,
``tests/integration/test_users_*.py``); it belongs in ``tests/helpers.py``::

    with LocustRun([MyStomp], "--gateway-url", url, results=tmp_path) as run:
        run.start(2)
        run.wait(lambda: run.delivered("mqtt→stomp") == 2 * n, 10, "deliveries")
    e2e = run.e2e            # e2e.json, written at test_stop
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gevent
import httpx
from locust import User
from locust.argument_parser import get_empty_argument_parser
from locust.env import Environment
from locust.event import Events
from locust.stats import StatsEntry

import telemetry
from pipeline._procs import free_port
from pipeline.config import UPDATES_CHANNEL
from telemetry import envelope
from tests.helpers import wait_for
from users import _config
from users import kafka as kafka_users
from users import stomp as stomp_users

REPO = Path(__file__).resolve().parents[2]


def parse_options(*args: str) -> argparse.Namespace:
    """Locust-style options with every pipeswarm option registered (env vars included)."""
    parser = get_empty_argument_parser()
    _config.add_arguments(parser)
    telemetry.add_arguments(parser)
    stomp_users.add_arguments(parser)
    kafka_users.add_arguments(parser)
    return parser.parse_args(list(args))


class LocustRun:
    """One local Locust run through the Environment API, with the telemetry plugin wired."""

    def __init__(self, user_classes: Sequence[type[User]], *args: str, results: Path) -> None:
        opts = parse_options(
            "--results-dir",
            str(results / "{run_id}"),
            "--e2e-drain",
            "1",
            "--e2e-grace",
            "2",
            *args,
        )
        self.env = Environment(
            user_classes=list(user_classes), events=Events(), parsed_options=opts
        )
        self.runner = self.env.create_local_runner()
        self.plugin = telemetry.install(self.env)
        self.results = results
        self.e2e: dict[str, Any] = {}
        self._stopped = False

    def __enter__(self) -> LocustRun:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def ledger(self) -> telemetry.Ledger:
        return telemetry.get_ledger(self.env)

    def start(self, users: int, rate: float = 100, timeout: float = 20, wait: bool = True) -> None:
        """Start ``users``; wait until they all run (``wait=False``: until the test started)."""
        self.runner.start(users, rate)
        wait_for(
            lambda: self.plugin.run_id and (not wait or self.runner.user_count == users),
            timeout,
            f"{users} users spawned",
        )

    def wait(self, check: Callable[[], Any], timeout: float, what: str) -> Any:
        return wait_for(check, timeout, what)  # time.sleep is gevent's: the users run meanwhile

    def entry(self, name: str, method: str) -> StatsEntry:
        return self.env.stats.get(name, method)

    def count(self, name: str, method: str) -> int:
        key = (name, method)
        return self.env.stats.entries[key].num_requests if key in self.env.stats.entries else 0

    def delivered(self, path: str) -> int:
        """Messages delivered on ``path`` so far, over every subscriber of this process."""
        total = 0
        for sub in self.ledger.subscribers.values():
            counters = sub.summary(0)["counters"].get(path)
            if counters:
                total += counters[0]
        return total

    def errors(self) -> dict[tuple[str, str], str]:
        return {(e.method, e.name): str(e.error) for e in self.env.stats.errors.values()}

    def stop(self, timeout: float = 30) -> dict[str, Any]:
        """Stop the test (drain, users' on_stop, results written) within ``timeout`` s."""
        if self._stopped:
            return self.e2e
        self._stopped = True
        run_id = self.plugin.run_id
        with gevent.Timeout(timeout, AssertionError(f"the Locust run did not stop in {timeout} s")):
            self.runner.quit()
        path = self.results / run_id / "e2e.json"
        if run_id and path.exists():
            self.e2e = json.loads(path.read_text())
        return self.e2e


class GatewayProcess:
    """``python -m pipeline.gateway`` on a free port against the given Redis and MQTT."""

    def __init__(self, log_path: Path, port: int | None = None, **env: str) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.env = {**os.environ, "GATEWAY_PORT": str(self.port), "PYTHONUNBUFFERED": "1", **env}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> GatewayProcess:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pipeline.gateway"],
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_for(self.healthy, 30, f"gateway on {self.port} healthy")
        return self

    def healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"gateway exited: {self.log_path.read_text()[-2000:]}")
        try:
            return httpx.get(f"{self.url}/api/health", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def push(rds: Any, run: str, device: str, seq: int, ledger: telemetry.Ledger | None = None) -> None:
    """Play the consumer: PUBLISH one traced update (bridge and consumer hops stamped).

    With ``ledger``, the message is also recorded as published (``t0 = tp = now``).
    """
    t0 = time.time_ns()
    msg = json.loads(envelope.build(device, float(seq), 1.0, run=run, seq=seq, t0=t0, tp=t0))
    msg["trace"]["hops"] = {"bridge": t0, "consumer": t0}
    if ledger is not None:
        ledger.published(device, seq, t0, t0)
    rds.publish(UPDATES_CHANNEL, json.dumps(msg))


# --- the harness's own tests ---------------------------------------------------------------
def test_every_pipeswarm_user_option_has_its_env_var(monkeypatch):
    opts = parse_options()
    assert opts.stomp_destination == "/topic/coordinates"
    assert opts.stomp_token == ""
    assert opts.stomp_device_count == 0
    assert (opts.kafka_interval, opts.kafka_acks, opts.kafka_linger_ms) == (0.1, "all", 5.0)
    assert (opts.kafka_compression, opts.kafka_max_messages) == ("none", 0)
    monkeypatch.setenv("PIPESWARM_STOMP_DESTINATION", "/topic/devices/{device_id}")
    monkeypatch.setenv("PIPESWARM_STOMP_TOKEN", "jwt")
    monkeypatch.setenv("PIPESWARM_STOMP_DEVICE_COUNT", "10")
    monkeypatch.setenv("PIPESWARM_KAFKA_INTERVAL", "0.02")
    monkeypatch.setenv("PIPESWARM_KAFKA_ACKS", "1")
    monkeypatch.setenv("PIPESWARM_KAFKA_LINGER_MS", "0")
    monkeypatch.setenv("PIPESWARM_KAFKA_COMPRESSION", "lz4")
    monkeypatch.setenv("PIPESWARM_KAFKA_MAX_MESSAGES", "500")
    opts = parse_options()
    assert opts.stomp_destination == "/topic/devices/{device_id}"
    assert opts.stomp_token == "jwt"
    assert opts.stomp_device_count == 10
    assert (opts.kafka_interval, opts.kafka_acks, opts.kafka_linger_ms) == (0.02, "1", 0.0)
    assert (opts.kafka_compression, opts.kafka_max_messages) == ("lz4", 500)
    # the command line wins over the environment
    assert parse_options("--stomp-token", "cli").stomp_token == "cli"


def test_the_token_is_masked_in_the_web_ui_and_in_run_json():
    parser = get_empty_argument_parser()
    stomp_users.add_arguments(parser)
    (action,) = [a for a in parser._actions if a.dest == "stomp_token"]
    assert getattr(action, "is_secret", False) is True
    from telemetry.results import safe_options

    assert safe_options(argparse.Namespace(stomp_token="jwt"))["stomp_token"] == "***"
