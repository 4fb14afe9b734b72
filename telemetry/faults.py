"""``--faults``: a fault schedule run by the master (or the local runner) on Locust's clock.

::

    locust -f locustfiles/fault_tolerance.py --headless -t 4m \\
        --faults "kill:bridge@30s+10s, pause:consumer@60s+10s, restart:kafka@90s"

Each phase (grammar in ``telemetry._fault_spec``) is a greenlet started at
``test_start``: at ``AT`` seconds it does the action, after ``DURATION`` it
undoes it (``kill``/``stop`` -> ``start``, ``pause`` -> ``resume``, a network
toxic removed); ``test_stop`` ends the schedule: a phase not begun never
starts, an active one is healed at once (a step under way is waited for), so a
run never leaves a part paused or a proxy cut. Workers run nothing. Who acts (``telemetry._fault_actions``):

- the embedded stack (``python -m pipeline --state-dir $PIPESWARM_STATE_DIR ...``),
- or ``--fault-command 'docker {action} {component}'`` for a pipeline of one's own,
- and for ``latency``/``netem``/``partition``/``bandwidth``, Toxiproxy at
  ``--toxiproxy-url`` (the embedded stack's with ``python -m pipeline up --fault-proxies``).

At the end of the test it writes ``faults.json`` into the results folder
(``docs/results.md``), logs the fault table, and keeps the figures for the SLO
keys ``fault_loss_max`` and ``recovery_s_max``. While a phase is active the
exporter's ``pipeswarm_fault_active{action,component}`` is 1.

A mistake in the schedule (unknown action or component, a phase past ``-t``,
two overlapping phases on one part, a ``--fault-command`` tool that is not
installed, a Toxiproxy that does not answer) is one sentence and exit code 2
before any user starts.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gevent
import locust
from gevent.event import Event
from locust.runners import WorkerRunner

from telemetry import results
from telemetry._fault_actions import (
    COMMAND_TIMEOUT_S,
    CommandExecutor,
    Executor,
    Outcome,
    StackExecutor,
    ToxiproxyExecutor,
)
from telemetry._fault_figures import format_table, phase_figures, seconds_of
from telemetry._fault_spec import Fault, check_schedule, parse_faults
from telemetry.exceptions import FaultError
from telemetry.options import Option, OptionGroup

if TYPE_CHECKING:
    from locust.env import Environment

__all__ = [
    "FAULTS",
    "FAULT_COMMAND",
    "FAULTS_FORMAT",
    "OPTIONS",
    "TOXIPROXY_URL",
    "FaultSchedule",
    "get_schedule",
]

log = logging.getLogger(__name__)

FAULTS_FORMAT = "pipeswarm-faults/1"
STATE_DIR_ENV = "PIPESWARM_STATE_DIR"
DEFAULT_TOXIPROXY_URL = "http://127.0.0.1:8474"


def state_dir() -> Path:
    """The embedded stack's state dir: ``$PIPESWARM_STATE_DIR`` or ``.pipeswarm``."""
    return Path(os.environ.get(STATE_DIR_ENV) or ".pipeswarm")


def _stack_toxiproxy() -> str | None:
    try:
        doc = json.loads((state_dir() / "stack.json").read_text())
        url = doc["urls"].get("toxiproxy")
    except (OSError, ValueError, KeyError, AttributeError, TypeError):
        return None
    return url if isinstance(url, str) and url else None


FAULTS = Option(
    "--faults",
    str,
    "",
    "PIPESWARM_FAULTS",
    "Fault schedule run by the master on the test's clock: comma-separated "
    "ACTION:COMPONENT@AT[+DURATION][:KEY=VALUE,...], e.g. 'kill:bridge@30s+10s, "
    "restart:kafka@90s, netem:mqtt@150s+20s:delay=200ms,loss=5%'. Actions kill, stop, "
    "pause, restart (processes) and latency, netem, partition, bandwidth (Toxiproxy)",
    doc_default="none",
    error=FaultError,
)
FAULT_COMMAND = Option(
    "--fault-command",
    str,
    "",
    "PIPESWARM_FAULT_COMMAND",
    "Shell command that does a process action on a pipeline of your own, with {action} "
    "(kill, stop, start, restart, pause, resume) and {component} filled in, e.g. "
    "'docker {action} {component}'; empty = the embedded stack's `python -m pipeline`",
    doc_default="the embedded stack",
    # the one option kept out of the web UI's form: a browser must not choose a shell
    # command for the master to run (Locust's web UI has no login by default)
    web_ui=False,
    error=FaultError,
)
TOXIPROXY_URL = Option(
    "--toxiproxy-url",
    str,
    DEFAULT_TOXIPROXY_URL,
    "PIPESWARM_TOXIPROXY_URL",
    "Toxiproxy REST API for the network actions; its proxy names are the components",
    default_from=_stack_toxiproxy,
    error=FaultError,
)
OPTIONS = OptionGroup("pipeswarm faults", FAULTS, FAULT_COMMAND, TOXIPROXY_URL)


# --- checking the options ----------------------------------------------------------------------
def _run_time_s(environment: Environment) -> float | None:
    from locust.util.timespan import parse_timespan

    raw = getattr(environment.parsed_options, "run_time", None)
    if not raw:
        return None
    try:
        return float(parse_timespan(raw)) if isinstance(raw, str) else float(raw)
    except ValueError:
        return None  # Locust reports its own -t mistakes


def load_schedule(environment: Environment) -> list[Fault]:
    """``--faults`` parsed and checked against ``-t`` and the executors it needs."""
    text = FAULTS.get(environment)
    if not text:
        return []
    command = FAULT_COMMAND.get(environment)
    faults = parse_faults(text, free_components=bool(command))
    check_schedule(faults, _run_time_s(environment))
    process = [f for f in faults if not f.network]
    if process and command:
        try:
            tool = shlex.split(command)[0]
        except (ValueError, IndexError):
            raise FAULT_COMMAND.bad(command, "is not a shell command") from None
        if "{action}" not in command and "{component}" not in command:
            raise FAULT_COMMAND.bad(command, "must use {action} and/or {component}")
        if shutil.which(tool) is None:
            raise FAULT_COMMAND.bad(command, f"{tool!r} is not installed or not on PATH")
    elif process and not (state_dir() / "stack.json").exists():
        raise FaultError(
            f"--faults: no embedded stack recorded in {state_dir() / 'stack.json'}; start one "
            "with `python -m pipeline up --detach` (or set PIPESWARM_STATE_DIR), or pass "
            "--fault-command for a pipeline of your own."
        )
    network = [f for f in faults if f.network]
    if network:
        url = TOXIPROXY_URL.get(environment)
        try:
            proxies = ToxiproxyExecutor(url).proxies()
        except (OSError, ValueError):
            raise FaultError(
                f"--toxiproxy-url {url}: Toxiproxy does not answer; start the stack with "
                "`python -m pipeline up --fault-proxies`, or point --toxiproxy-url at yours."
            ) from None
        for f in network:
            if f.component not in proxies:
                have = ", ".join(sorted(proxies)) or "none"
                raise FaultError(
                    f"--faults {f.text!r}: Toxiproxy at {url} has no proxy {f.component!r} "
                    f"(it has {have})."
                )
    return faults


def _validate(environment: Environment) -> None:
    if not isinstance(environment.runner, WorkerRunner):
        load_schedule(environment)


OPTIONS.validators.append(_validate)


# --- running the schedule ----------------------------------------------------------------------
@dataclass(slots=True)
class Phase:
    """One fault as it ran (an entry of ``faults.json``)."""

    fault: Fault
    started_epoch_s: float | None = None
    ended_epoch_s: float | None = None
    steps: list[Outcome] = field(default_factory=list)
    note: str = ""

    @property
    def active(self) -> bool:
        return self.started_epoch_s is not None and self.ended_epoch_s is None

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.steps)

    def as_dict(self, run_start: float) -> dict[str, Any]:
        f = self.fault

        def rel(t: float | None) -> float | None:
            return None if t is None else round(t - run_start, 3)

        return {
            "spec": f.text,
            "action": f.action,
            "component": f.component,
            "params": f.params,
            "at_s": f.at_s,
            "duration_s": f.duration_s,
            "started_s": rel(self.started_epoch_s),
            "ended_s": rel(self.ended_epoch_s),
            "started_epoch_s": self.started_epoch_s,
            "ended_epoch_s": self.ended_epoch_s,
            "ok": self.ok,
            "steps": [s.as_dict() for s in self.steps],
            "note": self.note,
        }


class FaultSchedule:
    """The schedule of one Environment (master or local): greenlets, records, results."""

    def __init__(self, environment: Environment) -> None:
        self.environment = environment
        self.phases: list[Phase] = []
        self.started_epoch_s = 0.0
        self.figures: list[dict[str, Any]] = []
        self._greenlets: list[gevent.Greenlet] = []
        self._stopping = Event()
        self._stack: Executor | None = None
        self._proxy: ToxiproxyExecutor | None = None
        environment.events.test_start.add_listener(self.on_test_start)
        environment.events.test_stop.add_listener(self.on_test_stop)

    def executor(self, fault: Fault) -> Executor:
        if fault.network:
            assert self._proxy is not None
            return self._proxy
        assert self._stack is not None
        return self._stack

    def on_test_start(self, environment: Environment, **_kw: Any) -> None:
        self.stop()
        try:
            faults = load_schedule(environment)  # the web UI may have changed nothing else
        except FaultError as err:
            log.error("%s The test runs without faults.", err)
            faults = []
        command = FAULT_COMMAND.get(environment)
        self._stack = CommandExecutor(command) if command else StackExecutor(state_dir())
        self._proxy = ToxiproxyExecutor(TOXIPROXY_URL.get(environment))
        self.started_epoch_s = time.time()
        self.phases = [Phase(f) for f in faults]
        self.figures = []
        self._stopping = Event()
        self._greenlets = [gevent.spawn(self._run, p) for p in self.phases]

    def _run(self, phase: Phase) -> None:
        fault = phase.fault
        if self._stopping.wait(max(0.0, self.started_epoch_s + fault.at_s - time.time())):
            return  # the test ended first: never started
        executor = self.executor(fault)
        phase.started_epoch_s = time.time()
        log.info("fault %s: %s %s", fault.text, fault.action, fault.component)
        outcome = executor.do(fault)
        phase.steps.append(outcome)
        if not outcome.ok:
            log.warning("fault %s: %s failed (%d): %s", fault.text, outcome.command,
                        outcome.exit_code, outcome.output)  # fmt: skip
        if fault.duration_s and self._stopping.wait(
            max(0.0, phase.started_epoch_s + fault.duration_s - time.time())
        ):
            phase.note = "ended early by the end of the test"
        self._end(phase, executor)

    def _end(self, phase: Phase, executor: Executor) -> None:
        undo = executor.undo(phase.fault)
        if undo is not None:
            phase.steps.append(undo)
            if not undo.ok:
                log.warning("fault %s: %s failed (%d): %s", phase.fault.text, undo.command,
                            undo.exit_code, undo.output)  # fmt: skip
        phase.ended_epoch_s = time.time()
        log.info("fault %s: over after %.1f s", phase.fault.text,
                 phase.ended_epoch_s - (phase.started_epoch_s or 0))  # fmt: skip

    def stop(self) -> None:
        """End the schedule: phases not begun never start, active ones are healed now.

        A step under way is waited for, never killed: killing ``python -m pipeline
        start kafka`` halfway would leave a broker running that no state file records.
        """
        self._stopping.set()
        gevent.joinall(self._greenlets, timeout=2 * COMMAND_TIMEOUT_S + 5)
        gevent.killall(self._greenlets, block=True, timeout=5)  # (a step that never returned)
        self._greenlets = []

    def active(self) -> list[Fault]:
        return [p.fault for p in self.phases if p.active]

    def document(self) -> dict[str, Any]:
        return {
            "format": FAULTS_FORMAT,
            "started_epoch_s": round(self.started_epoch_s, 3),
            "executor": "command" if isinstance(self._stack, CommandExecutor) else "stack",
            "fault_command": FAULT_COMMAND.get(self.environment) or None,
            "toxiproxy_url": self._proxy.url if self._proxy and self._has_network() else None,
            "phases": [p.as_dict(self.started_epoch_s) for p in self.phases],
            "figures": self.figures,
        }

    def _has_network(self) -> bool:
        return any(p.fault.network for p in self.phases)

    def on_test_stop(self, environment: Environment, **_kw: Any) -> None:
        if not self.phases:
            return
        self.stop()
        from telemetry.plugin import get_plugin

        plugin = get_plugin(environment)
        rows = plugin.timeseries.rows if plugin.timeseries is not None else []
        final_lost = None
        if plugin.final_e2e is not None:
            final_lost = sum(
                int(p.get("totals", {}).get("lost", 0))
                for p in plugin.final_e2e.get("paths", {}).values()
            )
        doc = self.document()
        self.figures = doc["figures"] = phase_figures(doc["phases"], seconds_of(rows), final_lost)
        if plugin.results_path is not None:
            results.write_json(Path(plugin.results_path) / "faults.json", doc)
        log.info("%s", format_table(self.figures, doc["phases"]))


_schedules: weakref.WeakKeyDictionary[Environment, FaultSchedule] = weakref.WeakKeyDictionary()


def get_schedule(environment: Environment) -> FaultSchedule | None:
    """The schedule of ``environment`` (None on a worker or before ``init``)."""
    return _schedules.get(environment)


def install(environment: Environment) -> FaultSchedule:
    """Attach the fault schedule to ``environment`` (idempotent; tests call it directly)."""
    schedule = _schedules.get(environment)
    if schedule is None:
        schedule = _schedules[environment] = FaultSchedule(environment)
    return schedule


def _on_init(environment: Environment, **_kw: Any) -> None:
    if not isinstance(environment.runner, WorkerRunner):
        install(environment)


OPTIONS.register()
locust.events.init.add_listener(_on_init)
