"""Errors of ``report/`` (``analyze.py``'s engine).

::

    ReportError                 base of everything report/ raises on purpose
    └── UnusableInput           a folder, file or SLO file that cannot be analysed: exit code 2

``str(err)`` is always one sentence naming the file and the problem, printed
as is by ``analyze.py``.
"""

from __future__ import annotations

__all__ = ["ReportError", "UnusableInput"]


class ReportError(Exception):
    """Base class of the report's own errors."""


class UnusableInput(ReportError):
    """The input cannot be analysed (missing, empty or corrupt); exit code 2."""
