"""``pipeswarm``: Locust with every pipeswarm option registered before it parses.

Locust prints ``--help`` before it imports the locustfile, so a plain
``locust -f locustfiles/pipeline.py --help`` cannot list the options the
locustfile's imports would add. ``pipeswarm`` imports ``users`` (which brings
``telemetry``) first and then hands the command line to Locust unchanged::

    pipeswarm -f locustfiles/pipeline.py --help       # every option, grouped
    pipeswarm -f locustfiles/pipeline.py --headless -u 50 -r 10 -t 60s
    pipeswarm -f - --worker --master-host 10.0.0.5     # the master sends the locustfile

Everything else is Locust's own ``main``: options, exit codes, ``locust.conf``.

pipeswarm installs ``users``, ``telemetry``, ``pipeline``, ``report`` and
``analyze`` as top-level modules (the checkout's layout). Those names are
generic: if another installed distribution ships one of them, one would silently
shadow the other, so ``pipeswarm`` stops first with one sentence (exit 2).
"""

from __future__ import annotations

import sys
from importlib.metadata import packages_distributions

OURS = ("users", "telemetry", "pipeline", "report", "analyze")


def clashes() -> dict[str, list[str]]:
    """Our top-level names that another installed distribution also provides."""
    owners = packages_distributions()
    return {
        name: others
        for name in OURS
        if (others := sorted(d for d in owners.get(name, []) if d.lower() != "pipeswarm"))
    }


def main() -> None:
    found = clashes()
    if found:
        names = "; ".join(f"{n} (also from {', '.join(d)})" for n, d in found.items())
        print(
            f"pipeswarm: another installed distribution uses the same top-level module: "
            f"{names}; install pipeswarm in a virtualenv of its own.",
            file=sys.stderr,
        )
        sys.exit(2)
    # gevent patches first, as ``locust`` itself does; importing users registers the
    # options of every user and, through telemetry, the plugin's.
    import locust  # noqa: F401
    from locust.main import main as locust_main

    import users  # noqa: F401

    sys.argv[0] = "pipeswarm"
    locust_main()


if __name__ == "__main__":
    main()
