"""One declaration per load-side option, and everything that comes from it.

An :class:`Option` holds an option's flag, type, default, environment variable
and help; an :class:`OptionGroup` holds the options of one part (the telemetry,
the backends and devices, the STOMP and Kafka users, the load shape). From that
one declaration come

- the Locust parser registration (``events.init_command_line_parser``, each
  option with its ``env_var``, so the command line, the environment and
  ``locust.conf`` all work with Locust's one precedence, CLI > env > file >
  default): :meth:`OptionGroup.register`;
- the typed reader: ``RESULTS_DIR.get(environment)`` is a ``str``,
  ``E2E_GRACE.get(environment)`` a ``float``, converted and checked (the web UI
  hands custom options back as strings), a bad value an :class:`OptionError`
  whose message is one sentence naming the option;
- the check at ``init``: every option of a registered group is read once, so a
  bad value ends Locust with that sentence and exit code 2 before any user
  starts (:func:`telemetry.exceptions.exit_on_option_error`);
- the docs table, ``docs/options.md`` (:func:`markdown`;
  ``python -m telemetry.options_doc`` writes it)::

    GRACE = Option("--e2e-grace", float, 5.0, "PIPESWARM_E2E_GRACE",
                   "Seconds a missing message may be late before it counts as lost",
                   check=at_least(0))
    TELEMETRY = OptionGroup("pipeswarm telemetry", GRACE, ...).register()
    grace_s = GRACE.get(environment)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from locust import events

from telemetry.exceptions import OptionError, exit_on_option_error
from telemetry.results import mask_url_passwords

if TYPE_CHECKING:
    from argparse import Namespace

    from locust.argument_parser import LocustArgumentParser
    from locust.env import Environment

__all__ = [
    "GROUPS",
    "Option",
    "OptionGroup",
    "at_least",
    "markdown",
    "one_of",
    "RESULTS_DIR",
    "RUN_ID",
    "E2E_GRACE",
    "E2E_DRAIN",
    "E2E_HOP_EVENTS",
    "CLOCK_SYNC",
    "E2E_IN_STATS",
    "TELEMETRY",
]

T = TypeVar("T")

#: Every registered group, in registration order (the docs table lists them so).
GROUPS: list[OptionGroup] = []


def one_of(values: Sequence[Any]) -> str:
    """``("a", "b", "c")`` -> ``"a, b or c"`` (the words of an error message)."""
    words = [str(v) for v in values]
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


def at_least(low: float, why: str = "") -> Callable[[float], str | None]:
    """A check: the value must be ``>= low`` (``why`` replaces the default sentence)."""

    def check(value: float) -> str | None:
        return None if value >= low else why or f"must be {low:g} or more"

    return check


@dataclass(frozen=True, slots=True)
class Option(Generic[T]):
    """One option: the only place its flag, type, default, env var and help are written.

    ``check`` returns why a (converted) value is wrong, or None. ``default_from``
    supplies a default found at run time (the running stack's URLs) over
    ``default``; ``doc_default`` is what the docs show for it. ``error`` is the
    exception class a bad value raises (a package's own subclass of
    :class:`OptionError`).
    """

    flag: str
    kind: Callable[[Any], T]
    default: T
    env: str
    help: str
    choices: tuple[T, ...] = ()
    check: Callable[[T], str | None] | None = None
    default_from: Callable[[], T | None] | None = None
    doc_default: str = ""
    web_ui: bool = True
    secret: bool = False
    error: type[OptionError] = OptionError

    @property
    def dest(self) -> str:
        """The ``parsed_options`` attribute: ``--e2e-grace`` -> ``e2e_grace``."""
        return self.flag.lstrip("-").replace("-", "_")

    def current_default(self) -> T:
        found = self.default_from() if self.default_from is not None else None
        return self.default if found is None else found

    def add_to(self, parser: Any, web_ui: bool = True) -> None:
        """Register on a Locust parser or one of its argument groups (``web_ui``: the group's)."""
        default = self.current_default()
        where = " (from .pipeswarm/stack.json)" if default != self.default else ""
        shown = self.doc_default or (repr(default) if default == "" else str(default))
        if self.secret:  # the stack's URLs carry a password: not in --help, not in the web UI
            shown = mask_url_passwords(shown)
        kwargs: dict[str, Any] = {
            "default": default,
            "env_var": self.env,
            # argparse %-formats help texts: a literal % (e.g. loss=5%) must be %%
            "help": f"{self.help}. Default {shown}{where}".replace("%", "%%"),
        }
        if self.kind is not str:
            kwargs["type"] = self.kind
        if self.choices:
            kwargs["choices"] = self.choices
        action = parser.add_argument(self.flag, **kwargs)
        # what LocustArgumentParser.add_argument sets; an argument group's add_argument
        # does not, and an action without include_in_web_ui stays out of the web UI form
        action.include_in_web_ui = self.web_ui and web_ui
        action.is_secret = self.secret

    def read(self, options: Namespace | None) -> T:
        """The value in ``options`` (None, absent or empty: the default), converted and checked."""
        raw = getattr(options, self.dest, None) if options is not None else None
        if raw is None or raw == "":
            return self.current_default()
        try:
            value = self.kind(raw.strip() if isinstance(raw, str) else raw)
        except (TypeError, ValueError):
            what = {int: "an integer", float: "a number"}.get(self.kind, "valid")  # type: ignore[call-overload]
            raise self.bad(raw, f"must be {what}") from None
        if self.choices and value not in self.choices:
            raise self.bad(value, f"must be {one_of(self.choices)}")
        why = self.check(value) if self.check is not None else None
        if why:
            raise self.bad(value, why)
        return value

    def get(self, environment: Environment) -> T:
        """:meth:`read` on ``environment.parsed_options``."""
        return self.read(environment.parsed_options)

    def bad(self, value: Any, why: str) -> OptionError:
        """The one-sentence error for ``value``: ``--flag 'value': why.``"""
        return self.error(f"{self.flag} {value!r}: {why}.")


class OptionGroup:
    """The options of one part, registered and checked together (a parser argument group)."""

    __slots__ = ("title", "options", "web_ui", "validators", "_dests")

    def __init__(self, title: str, *options: Option[Any], web_ui: bool = True) -> None:
        self.title = title
        self.options = options
        self._dests = tuple(o.dest for o in options)  # key() runs for every user spawned
        #: whether the options appear in the web UI's form (each option may opt out)
        self.web_ui = web_ui
        #: more checks at ``init`` (e.g. that a file named by an option can be used)
        self.validators: list[Callable[[Environment], object]] = []

    def add_arguments(self, parser: LocustArgumentParser) -> None:
        """An ``init_command_line_parser`` listener: every option of the group."""
        group = parser.add_argument_group(self.title)
        for opt in self.options:
            opt.add_to(group, self.web_ui)

    def key(self, options: Namespace | None) -> tuple[Any, ...]:
        """The raw values (to see whether anything changed since the last read)."""
        return tuple(getattr(options, dest, None) for dest in self._dests)

    def validate(self, environment: Environment, **_kw: Any) -> None:
        """An ``init`` listener: a bad value is one sentence and exit code 2."""
        if environment.parsed_options is None:
            return
        with exit_on_option_error():
            for opt in self.options:
                opt.get(environment)
            for validator in self.validators:
                validator(environment)

    def register(self) -> OptionGroup:
        """Hook the group into Locust (parser and ``init``) and the docs table; once."""
        if self not in GROUPS:
            GROUPS.append(self)
            events.init_command_line_parser.add_listener(self.add_arguments)
            events.init.add_listener(self.validate)
        return self


def add_all(parser: LocustArgumentParser) -> None:
    """Every registered option on ``parser`` (tests and tools that build a parser by hand)."""
    for group in GROUPS:
        group.add_arguments(parser)


def markdown(groups: Sequence[OptionGroup] | None = None) -> str:
    """The docs table of every option: flag, env var, type, default, help."""
    lines = []
    for group in GROUPS if groups is None else groups:
        lines += [f"## {group.title}", "", "| option | env | type | default | help |"]
        lines.append("|---|---|---|---|---|")
        for o in group.options:
            kind = getattr(o.kind, "__name__", str(o.kind))
            if o.choices:
                kind = " \\| ".join(f"`{c}`" for c in o.choices)
            default = o.doc_default or (f"`{o.default}`" if o.default != "" else "(empty)")
            lines.append(f"| `{o.flag}` | `{o.env}` | {kind} | {default} | {o.help} |")
        lines.append("")
    return "\n".join(lines)


# --- the telemetry's own options ------------------------------------------------------------
RESULTS_DIR = Option(
    "--results-dir",
    str,
    "",
    "PIPESWARM_RESULTS_DIR",
    "Directory for run.json, e2e.json, timeseries.csv; '{run_id}' is replaced",
    doc_default="`results/<run id>/`",
)
RUN_ID = Option(
    "--run-id",
    str,
    "",
    "PIPESWARM_RUN_ID",
    "Id of this run (tags every message; names the results dir)",
    doc_default="a fresh UTC timestamp id per test",
)
E2E_GRACE = Option(
    "--e2e-grace",
    float,
    5.0,
    "PIPESWARM_E2E_GRACE",
    "Seconds a missing message may be late before it counts as lost",
    check=at_least(0, "must be 0 or more seconds"),
)
E2E_DRAIN = Option(
    "--e2e-drain",
    float,
    3.0,
    "PIPESWARM_E2E_DRAIN",
    "Seconds subscribers keep reading after publishers stop, at the end of a test",
    check=at_least(0, "must be 0 or more seconds"),
)
E2E_IN_STATS = Option(
    "--e2e-in-stats",
    str,
    "false",
    "PIPESWARM_E2E_IN_STATS",
    "Also fire every delivery as a Locust request of type E2E (one per path, and per hop "
    "with --e2e-hop-events), the old behaviour: Locust's RPS, Aggregated row, --csv and --html "
    "then count measurements, not requests. Off: end-to-end figures are in the End to end "
    "tab, e2e.json, timeseries.csv and the pipeswarm_* metrics only",
    choices=("true", "false"),
)
E2E_HOP_EVENTS = Option(
    "--e2e-hop-events",
    str,
    "true",
    "PIPESWARM_E2E_HOP_EVENTS",
    "With --e2e-in-stats true: also fire each hop (path:service, path:kafka, ...) as an "
    "E2E request entry; 'false' fires only the total (e2e.json keeps every hop either way)",
    choices=("true", "false"),
)
CLOCK_SYNC = Option(
    "--clock-sync",
    str,
    "true",
    "PIPESWARM_CLOCK_SYNC",
    "Workers measure their clock offset to the master and correct every timestamp to the "
    "master's clock; 'false' trusts the hosts' clocks as they are (offsets still measured "
    "and recorded in run.json)",
    choices=("true", "false"),
    web_ui=False,  # read when a worker starts (telemetry.clock), before any test
)
TELEMETRY = OptionGroup(
    "pipeswarm telemetry",
    RESULTS_DIR,
    RUN_ID,
    E2E_GRACE,
    E2E_DRAIN,
    E2E_IN_STATS,
    E2E_HOP_EVENTS,
    CLOCK_SYNC,
)
