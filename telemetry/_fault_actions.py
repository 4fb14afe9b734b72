"""Who carries a fault out: the embedded stack's CLI, the user's command, or Toxiproxy.

Each executor has ``do(fault)`` and ``undo(fault)``, both returning a
:class:`Outcome` (what ran, exit code, the tail of its output, seconds). They
run in a greenlet of the master (or local) process: subprocesses through
gevent's cooperative ``subprocess`` (Locust monkey-patches it), HTTP through
``urllib`` on gevent's sockets, so the load never stalls while a part restarts.

- :class:`StackExecutor` — ``python -m pipeline --state-dir DIR ACTION COMPONENT``
  (the pipeline package stands apart: it is driven through its CLI, never imported).
- :class:`CommandExecutor` — ``--fault-command 'docker {action} {component}'``:
  the template is run by ``/bin/sh -c`` with ``{action}`` (kill, stop, start,
  restart, pause, resume) and ``{component}`` filled in.
- :class:`ToxiproxyExecutor` — Toxiproxy's REST API (``--toxiproxy-url``):
  ``partition`` disables the proxy; ``latency``/``netem``/``bandwidth`` add toxics
  in both directions, removed when the phase ends.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from telemetry._fault_spec import Fault

__all__ = [
    "COMMAND_TIMEOUT_S",
    "CommandExecutor",
    "Executor",
    "Outcome",
    "StackExecutor",
    "ToxiproxyExecutor",
]

#: A part that does not come back within this long is reported as a failed command
#: (Apache Kafka's start, health check included, takes 10-40 s on this machine).
COMMAND_TIMEOUT_S = 120.0
_OUTPUT_TAIL = 400


@dataclass(slots=True)
class Outcome:
    """What one step of a phase did."""

    step: str  # "kill", "start", "toxic latency", ...
    command: str
    exit_code: int
    output: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Executor(Protocol):
    def do(self, fault: Fault) -> Outcome: ...

    def undo(self, fault: Fault) -> Outcome | None: ...


def _run(step: str, argv: list[str], shown: str) -> Outcome:
    began = time.monotonic()
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False
        )
        code, output = done.returncode, (done.stdout + done.stderr).strip()
    except subprocess.TimeoutExpired:
        code, output = 124, f"no answer within {COMMAND_TIMEOUT_S:g} s"
    except OSError as err:
        code, output = 127, str(err)
    return Outcome(step, shown, code, output[-_OUTPUT_TAIL:], round(time.monotonic() - began, 3))


class StackExecutor:
    """The embedded stack, through ``python -m pipeline`` (its own PID bookkeeping)."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir

    def _cli(self, action: str, component: str) -> Outcome:
        argv = [sys.executable, "-m", "pipeline", "--state-dir", str(self.state_dir)]
        argv += [action, component]
        return _run(action, argv, f"python -m pipeline {action} {component}")

    def do(self, fault: Fault) -> Outcome:
        return self._cli(fault.action, fault.component)

    def undo(self, fault: Fault) -> Outcome | None:
        return self._cli(fault.undo, fault.component) if fault.undo else None


class CommandExecutor:
    """The user's own pipeline: ``--fault-command`` with ``{action}`` and ``{component}``."""

    def __init__(self, template: str) -> None:
        self.template = template

    def _cmd(self, action: str, component: str) -> Outcome:
        text = self.template.replace("{action}", shlex.quote(action))
        text = text.replace("{component}", shlex.quote(component))
        return _run(action, ["/bin/sh", "-c", text], text)

    def do(self, fault: Fault) -> Outcome:
        return self._cmd(fault.action, fault.component)

    def undo(self, fault: Fault) -> Outcome | None:
        return self._cmd(fault.undo, fault.component) if fault.undo else None


class ToxiproxyExecutor:
    """Network faults on a proxy of a Toxiproxy server (its REST API, v2)."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310 - the user's URL
            raw = resp.read()
        return json.loads(raw) if raw else None

    def proxies(self) -> dict[str, Any]:
        """``GET /proxies``: name -> proxy (raises OSError when the server does not answer)."""
        return dict(self.request("GET", "/proxies") or {})

    @staticmethod
    def toxics(fault: Fault) -> list[dict[str, Any]]:
        """The toxics of a latency/netem/bandwidth phase, one per direction."""
        attrs: dict[str, Any]
        kinds: list[tuple[str, dict[str, Any], float]] = []
        if fault.action in ("latency", "netem") and "delay" in fault.params:
            attrs = {
                "latency": int(fault.param_s("delay") * 1000),
                "jitter": int(fault.param_s("jitter") * 1000),
            }
            kinds.append(("latency", attrs, 1.0))
        if fault.action == "netem" and fault.percent("loss") > 0:
            # TCP under a proxy has no packet loss to give: the nearest honest fault is a
            # share of the connections reset (what sustained loss ends in for a client).
            kinds.append(("reset_peer", {"timeout": 0}, fault.percent("loss")))
        if fault.action == "bandwidth":
            kinds.append(("bandwidth", {"rate": fault.rate_kb()}, 1.0))
        return [
            {
                "name": f"pipeswarm-{kind}-{stream}",
                "type": kind,
                "stream": stream,
                "toxicity": toxicity,
                "attributes": attrs,
            }
            for kind, attrs, toxicity in kinds
            for stream in ("upstream", "downstream")
        ]

    def _step(self, step: str, calls: list[tuple[str, str, dict[str, Any] | None]]) -> Outcome:
        began = time.monotonic()
        shown = "; ".join(f"{m} {p}" for m, p, _ in calls)
        try:
            for method, path, body in calls:
                self.request(method, path, body)
        except urllib.error.HTTPError as err:
            detail = err.read().decode("utf-8", "replace")[:_OUTPUT_TAIL]
            return Outcome(step, shown, err.code, detail, round(time.monotonic() - began, 3))
        except (OSError, ValueError) as err:
            return Outcome(step, shown, 1, str(err), round(time.monotonic() - began, 3))
        return Outcome(step, shown, 0, "", round(time.monotonic() - began, 3))

    def do(self, fault: Fault) -> Outcome:
        base = f"/proxies/{fault.component}"
        if fault.action == "partition":
            return self._step("partition", [("POST", base, {"enabled": False})])
        calls = [("POST", f"{base}/toxics", t) for t in self.toxics(fault)]
        return self._step(fault.action, calls)  # type: ignore[arg-type]

    def undo(self, fault: Fault) -> Outcome | None:
        base = f"/proxies/{fault.component}"
        if fault.action == "partition":
            return self._step("heal", [("POST", base, {"enabled": True})])
        calls = [("DELETE", f"{base}/toxics/{t['name']}", None) for t in self.toxics(fault)]
        return self._step("heal", calls)  # type: ignore[arg-type]
