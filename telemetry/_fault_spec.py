"""``--faults`` text -> :class:`Fault` phases, checked before the run starts.

Grammar (phases separated by commas; a phase's parameters follow a second colon,
themselves separated by commas)::

    ACTION:COMPONENT@AT[+DURATION][:KEY=VALUE,KEY=VALUE]

    kill:bridge@30s+10s, pause:consumer@60s+10s, restart:kafka@90s,
    netem:mqtt@150s+20s:delay=200ms,loss=5%

Times are ``500ms``, ``30s``, ``2m``, ``1m30s``, ``1h`` or a plain number of
seconds, counted from the start of the test (Locust's ``test_start``).

Every mistake is a :class:`~telemetry.exceptions.FaultError` whose message is one
sentence naming the phase and what to change.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from telemetry.exceptions import FaultError

__all__ = [
    "ACTIONS",
    "NETWORK_ACTIONS",
    "PROCESS_ACTIONS",
    "PROXIES",
    "STACK_COMPONENTS",
    "Fault",
    "check_schedule",
    "parse_duration",
    "parse_faults",
]

#: process action -> the action that undoes it after the duration (None: instant)
PROCESS_ACTIONS: dict[str, str | None] = {
    "kill": "start",  # SIGKILL (a crash), started again after the duration
    "stop": "start",  # graceful stop, started again after the duration
    "pause": "resume",  # SIGSTOP: alive, holding its sockets, doing nothing
    "restart": None,  # graceful stop and start at once
}
#: network action -> parameters it takes (Toxiproxy toxics on the component's proxy)
NETWORK_ACTIONS: dict[str, tuple[str, ...]] = {
    "latency": ("delay", "jitter"),
    "netem": ("delay", "jitter", "loss"),
    "partition": (),
    "bandwidth": ("rate",),
}
ACTIONS = (*PROCESS_ACTIONS, *NETWORK_ACTIONS)

#: The embedded stack's parts (``python -m pipeline kill|stop|... COMPONENT``).
STACK_COMPONENTS = ("mosquitto", "redis", "kafka", "bridge", "consumer", "gateway", "rabbitmq")
#: The embedded stack's Toxiproxy proxies (``python -m pipeline up --fault-proxies``).
PROXIES = ("mqtt", "kafka", "redis")
#: Other names users write for the same part.
_PROCESS_ALIASES = {"mqtt": "mosquitto", "broker": "mosquitto"}
_PROXY_ALIASES = {"mosquitto": "mqtt", "broker": "mqtt"}

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_PHASE = re.compile(
    r"^(?P<action>[^:@+]+):(?P<component>[^:@+]+)@(?P<at>[^+:]+)(?:\+(?P<dur>[^:]+))?(?::(?P<params>.*))?$"
)
_SPAN = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_RATE = re.compile(r"^(\d+(?:\.\d+)?)\s*(kb|k|kb/s|mb|m|mb/s)?$", re.IGNORECASE)


def _one_of(values: tuple[str, ...] | list[str]) -> str:
    words = list(values)
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


def parse_duration(text: str) -> float:
    """``"1m30s"`` -> 90.0, ``"500ms"`` -> 0.5, ``"12"`` -> 12.0; ValueError otherwise."""
    text = text.strip().lower()
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        if value < 0:
            raise ValueError(text)
        return value
    if not text or _SPAN.sub("", text):
        raise ValueError(text)
    return sum(float(n) * _UNIT_S[unit] for n, unit in _SPAN.findall(text))


@dataclass(frozen=True, slots=True)
class Fault:
    """One phase of the schedule: do ``action`` to ``component`` at ``at_s`` for ``duration_s``."""

    action: str
    component: str
    at_s: float
    duration_s: float
    params: dict[str, str] = field(default_factory=dict)
    text: str = ""

    @property
    def network(self) -> bool:
        return self.action in NETWORK_ACTIONS

    @property
    def undo(self) -> str | None:
        """The process action that ends the phase (``start``/``resume``), None if instant."""
        return PROCESS_ACTIONS.get(self.action)

    @property
    def end_s(self) -> float:
        return self.at_s + self.duration_s

    def param_s(self, key: str, default: float = 0.0) -> float:
        """A time parameter (``delay=200ms``) in seconds."""
        return parse_duration(self.params[key]) if key in self.params else default

    def percent(self, key: str) -> float:
        """A percentage parameter (``loss=5%``) as a fraction 0..1."""
        return float(self.params.get(key, "0").rstrip("%")) / 100

    def rate_kb(self) -> int:
        """``rate=`` as KB/s (Toxiproxy's bandwidth unit): ``512``, ``512KB``, ``2MB``."""
        m = _RATE.match(self.params.get("rate", ""))
        assert m is not None  # checked by parse_faults
        value = float(m.group(1)) * (1024 if (m.group(2) or "k")[0].lower() == "m" else 1)
        return max(1, int(value))


def _split(text: str) -> list[str]:
    """Split at commas, gluing ``key=value`` pieces back onto the phase they belong to."""
    phases: list[str] = []
    for piece in (p.strip() for p in text.split(",")):
        if not piece:
            continue
        if "@" not in piece and "=" in piece and phases and ":" in phases[-1].split("@", 1)[1]:
            phases[-1] += "," + piece
        else:
            phases.append(piece)
    return phases


def _bad(phase: str, why: str) -> FaultError:
    return FaultError(f"--faults {phase!r}: {why}.")


def parse_faults(text: str, *, free_components: bool = False) -> list[Fault]:
    """Parse ``--faults``; ``free_components``: any name is a component (``--fault-command``).

    Network actions take any proxy name (a Toxiproxy of the user's own has its
    own names; ``telemetry.faults`` checks them against the server before the run).
    """
    out: list[Fault] = []
    for phase in _split(text or ""):
        m = _PHASE.match(phase)
        if m is None:
            raise _bad(
                phase,
                "write ACTION:COMPONENT@AT[+DURATION][:KEY=VALUE,...], e.g. kill:bridge@30s+10s",
            )
        action = m["action"].strip().lower()
        component = m["component"].strip()
        if action not in ACTIONS:
            raise _bad(phase, f"unknown action {action!r}; use {_one_of(list(ACTIONS))}")
        network = action in NETWORK_ACTIONS
        if network:
            component = _PROXY_ALIASES.get(component, component)
            allowed: tuple[str, ...] = ()
        else:
            component = _PROCESS_ALIASES.get(component, component)
            allowed = () if free_components else STACK_COMPONENTS
        if not _NAME.match(component) or (allowed and component not in allowed):
            where = "proxy" if network else "component"
            choices = f"; use {_one_of(list(allowed))}" if allowed else ""
            raise _bad(phase, f"unknown {where} {component!r}{choices}")
        try:
            at = parse_duration(m["at"])
            duration = parse_duration(m["dur"]) if m["dur"] is not None else 0.0
        except ValueError:
            raise _bad(phase, "times are like 30s, 2m, 1m30s, 500ms or plain seconds") from None
        if action == "restart" and duration:
            raise _bad(phase, "restart is instant; drop the +DURATION (or use stop, which has one)")
        if action != "restart" and duration <= 0:
            raise _bad(phase, f"{action} needs a duration, e.g. {action}:{component}@{m['at']}+10s")
        params = _params(phase, action, m["params"])
        out.append(Fault(action, component, at, duration, params, phase))
    return sorted(out, key=lambda f: (f.at_s, f.component))


def _params(phase: str, action: str, text: str | None) -> dict[str, str]:
    allowed = NETWORK_ACTIONS.get(action, ())
    params: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in (text or "").split(","))):
        key, sep, value = item.partition("=")
        key, value = key.strip().lower(), value.strip()
        if not sep or not value:
            raise _bad(phase, f"{item!r} is not KEY=VALUE")
        if key not in allowed:
            takes = f"takes {_one_of(list(allowed))}" if allowed else "takes no parameters"
            raise _bad(phase, f"{action} {takes}, not {key!r}")
        try:
            if key in ("delay", "jitter"):
                parse_duration(value)
            elif key == "loss":
                if not 0 <= float(value.rstrip("%")) <= 100:
                    raise ValueError(value)
            elif key == "rate" and _RATE.match(value) is None:
                raise ValueError(value)
        except ValueError:
            example = {"delay": "200ms", "jitter": "50ms", "loss": "5%", "rate": "512KB"}[key]
            raise _bad(phase, f"{key}={value!r} is not valid, e.g. {key}={example}") from None
        params[key] = value
    if action in ("latency", "netem") and "delay" not in params and "loss" not in params:
        raise _bad(phase, f"{action} needs delay= (and optionally jitter=, loss=)")
    if action == "bandwidth" and "rate" not in params:
        raise _bad(phase, "bandwidth needs rate=, e.g. rate=512KB (KB/s)")
    return params


def check_schedule(faults: list[Fault], run_time_s: float | None) -> None:
    """Phases must end before the run does and not overlap on one component."""
    for f in faults:
        if run_time_s and f.end_s >= run_time_s:
            raise _bad(
                f.text,
                f"the phase ends at {f.end_s:g} s but the run stops at {run_time_s:g} s (-t); "
                "move it earlier or run longer",
            )
    by_part: dict[str, list[Fault]] = {}
    for f in faults:
        by_part.setdefault(f.component, []).append(f)
    for phases in by_part.values():
        phases.sort(key=lambda f: f.at_s)
        for a, b in zip(phases, phases[1:], strict=False):
            if b.at_s <= a.end_s:
                raise _bad(
                    b.text,
                    f"overlaps {a.text!r} on {b.component} (which lasts until {a.end_s:g} s); "
                    "start it later",
                )
