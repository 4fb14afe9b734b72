"""A bounded local Locust run of pipeswarm users, and a gateway process, for the user tests.

Shared by ``tests/component/test_gateway.py``, the user tests
(``tests/component/test_*_user.py``, ``tests/integration/test_users_*.py``) and
the option tests of ``tests/unit``::

    with Gateway(tmp_path / "gw.log", REDIS_URL=redis_url, MQTT_URL=mqtt_url).start() as gw:
        with LocustRun([MyStomp], "--gateway-url", gw.url, results=tmp_path) as run:
            run.start(2)
            run.wait(lambda: run.delivered("mqtt→stomp") == 2 * n, 10, "deliveries")
        e2e = run.e2e            # e2e.json, written at test_stop
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gevent
import httpx
import websocket
from locust import User
from locust.argument_parser import get_empty_argument_parser
from locust.env import Environment
from locust.event import Events
from locust.stats import StatsEntry
from prometheus_client.parser import text_string_to_metric_families

import telemetry
from pipeline import auth
from pipeline._procs import free_port
from pipeline.config import STREAM_FIELD, UPDATES_STREAM, Settings
from telemetry import envelope
from tests.helpers import wait_for
from users import _config
from users import amqp as amqp_users
from users import kafka as kafka_users
from users import stomp as stomp_users

REPO = Path(__file__).resolve().parents[1]
STREAM_MAXLEN = Settings().stream_maxlen  # trimmed as the consumer trims it


def parse_options(*args: str) -> argparse.Namespace:
    """Locust-style options with every pipeswarm option registered (env vars included)."""
    parser = get_empty_argument_parser()
    for group in (
        _config.OPTIONS,
        telemetry.options.TELEMETRY,
        stomp_users.OPTIONS,
        kafka_users.OPTIONS,
        amqp_users.OPTIONS,
    ):
        group.add_arguments(parser)
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


class Gateway:
    """``python -m pipeline.gateway`` on a free port (or ``port``), its output in ``log_path``.

    ``env`` is added to this process's environment (``REDIS_URL``, ``MQTT_URL``,
    ``PUSH_MODE``, …). ``start()`` after ``stop()`` restarts it on the same port with
    the same environment; as a context manager it stops on exit.

    Authentication is on, with a fresh ``secret`` (``GATEWAY_JWT_SECRET``) unless
    ``env`` gives one or ``GATEWAY_AUTH=off``; ``token`` is a valid token for it, and
    ``http`` and :meth:`ws` send it (``ws(..., header=[])`` sends none).
    """

    def __init__(self, log_path: Path, port: int | None = None, **env: str) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        if env.get("GATEWAY_AUTH") != "off":
            env.setdefault("GATEWAY_JWT_SECRET", secrets.token_urlsafe(32))
        self.secret = env.get("GATEWAY_JWT_SECRET", "")
        self.token = auth.mint_token(self.secret, "test") if self.secret else ""
        self.auth_header = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self.env = {**os.environ, "GATEWAY_PORT": str(self.port), "PYTHONUNBUFFERED": "1", **env}
        self.http = httpx.Client(base_url=self.url, timeout=10, headers=self.auth_header)
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Gateway:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, ready: str = "healthy") -> Gateway:
        """Spawn it and wait until /api/health is 200 (``ready="serving"``: answers at all)."""
        if self.http.is_closed:
            self.http = httpx.Client(base_url=self.url, timeout=10, headers=self.auth_header)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pipeline.gateway"],
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        check = self.healthy if ready == "healthy" else self.serving
        wait_for(check, 30, f"gateway on {self.port} {ready}")
        return self

    def _alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"gateway exited {self.proc.returncode}: {self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def health(self) -> tuple[int, dict] | None:
        """(status, body) of /api/health; None while nothing answers. Fails if it exited."""
        self._alive()
        try:
            r = self.http.get("/api/health")
        except httpx.TransportError:
            return None
        return r.status_code, r.json()

    def healthy(self) -> bool:
        h = self.health()
        return h is not None and h[0] == 200

    def serving(self) -> bool:
        return self.health() is not None

    def metrics(self) -> dict[tuple[str, tuple], float]:
        """Every sample of /metrics, keyed by (name, sorted labels): read them with ``metric``."""
        text = self.http.get("/metrics").text
        out = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out

    def ws(self, path: str = "/coordinates", **kwargs: Any) -> websocket.WebSocket:
        kwargs.setdefault("header", [f"{k}: {v}" for k, v in self.auth_header.items()])
        conn = websocket.create_connection(f"ws://127.0.0.1:{self.port}{path}", **kwargs)
        conn.settimeout(10)
        return conn

    def stop(self) -> int | None:
        """SIGTERM (SIGKILL after 15 s); the exit code, None if it never started."""
        self.http.close()
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


def metric(values: dict[tuple[str, tuple], float], name: str, **labels: str) -> float:
    """The sample ``name`` with exactly ``labels`` in ``Gateway.metrics()``, 0.0 if absent."""
    return values.get((name, tuple(sorted(labels.items()))), 0.0)


def push(rds: Any, run: str, device: str, seq: int, ledger: telemetry.Ledger | None = None) -> str:
    """Play the consumer: XADD one traced update (bridge and consumer hops stamped) to the
    update stream; return its stream id.

    With ``ledger``, the message is also recorded as published (``t0 = tp = now``).
    """
    t0 = time.time_ns()
    msg = json.loads(envelope.build(device, float(seq), 1.0, run=run, seq=seq, t0=t0, tp=t0))
    msg["trace"]["hops"] = {"bridge": t0, "consumer": t0}
    if ledger is not None:
        ledger.published(device, seq, t0, t0)
    stream_id = rds.xadd(
        UPDATES_STREAM, {STREAM_FIELD: json.dumps(msg)}, maxlen=STREAM_MAXLEN, approximate=True
    )
    return stream_id.decode() if isinstance(stream_id, bytes) else str(stream_id)
