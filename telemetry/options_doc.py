"""``python -m telemetry.options_doc > docs/options.md``: every load-side option in one table.

The table comes from the options' declarations (``telemetry.options``), so it
cannot drift from what Locust registers; ``tests/unit/test_options.py`` checks
that the file is current.
"""

from __future__ import annotations

import sys

__all__ = ["render"]

HEADER = """\
# Load-side options

Every pipeswarm option of `locust`, generated from the declarations
(`python -m telemetry.options_doc > docs/options.md`; do not edit by hand).
Each works on the command line, as its environment variable and in
`locust.conf`, with Locust's precedence: command line > environment > config
file > default. The backend URLs default to the running embedded stack's
(`.pipeswarm/stack.json`) when there is one.

"""


def render() -> str:
    """The Markdown of ``docs/options.md``."""
    import users.shapes  # noqa: F401 - registers every load-side group (users imports telemetry)
    from telemetry.options import markdown

    return HEADER + markdown()


if __name__ == "__main__":
    sys.stdout.write(render())
