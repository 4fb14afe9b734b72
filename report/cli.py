"""``python analyze.py results/<run>``: the command line of the report.

Exit codes (for CI, like k6 thresholds):

- 0 — report written; every SLO met (or no ``--slo`` given)
- 1 — report written; an SLO failed (or, with ``--fail-on-regression``, a
  figure got worse than the baseline beyond the tolerance)
- 2 — unusable input: a missing, empty or corrupt results folder or file, a
  bad SLO file, an output folder that cannot be written; one sentence on stderr
- 3 — a bug in analyze.py (one sentence; ``--debug`` shows the traceback)
"""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path

from report._build import build_report
from report._compare import DEFAULT_TOLERANCE_PCT
from report._load import load_run
from report._render import terminal_summary, write_report
from report.exceptions import UnusableInput
from telemetry import slo as slo_mod
from telemetry.exceptions import EXIT_USAGE

__all__ = ["main", "parser"]

EXIT_PASS, EXIT_FAIL, EXIT_BUG = 0, 1, 3
#: unusable input is a user mistake: the load side's one exit code for those
EXIT_UNUSABLE = EXIT_USAGE


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="analyze.py",
        description="Turn a pipeswarm results folder into report.html, summary.md and charts/, "
        "check SLOs and compare with a baseline run.",
        epilog="Exit codes: 0 pass, 1 SLO failed, 2 unusable input.",
    )
    p.add_argument("results", type=Path, help="results folder of a run (results/<run id>)")
    p.add_argument(
        "-o", "--output", type=Path, metavar="DIR",
        help="where to write report.html, summary.md and charts/ (default: the results folder)",
    )  # fmt: skip
    p.add_argument(
        "--slo", type=Path, metavar="FILE",
        help="YAML file of service-level objectives (docs/slo.example.yaml); a failed one exits 1",
    )  # fmt: skip
    p.add_argument(
        "--baseline", type=Path, metavar="DIR", help="results folder of a run to compare with"
    )
    p.add_argument(
        "--tolerance", type=float, default=DEFAULT_TOLERANCE_PCT, metavar="PCT",
        help="flag baseline figures worse by more than PCT %% (default %(default)g)",
    )  # fmt: skip
    p.add_argument(
        "--tolerance-ms", type=float, default=0.0, metavar="MS",
        help="never flag a latency that got worse by MS milliseconds or less (default 0)",
    )  # fmt: skip
    p.add_argument(
        "--fail-on-regression", action="store_true",
        help="exit 1 when a figure is worse than the baseline beyond the tolerance",
    )  # fmt: skip
    p.add_argument("--no-charts", action="store_true", help="skip the charts (faster)")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    p.add_argument("--debug", action="store_true", help="show tracebacks of unexpected errors")
    return p


def _error(message: str) -> None:
    sys.stderr.write(f"analyze.py: {message}\n")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.tolerance < 0 or args.tolerance_ms < 0:
        _error("--tolerance and --tolerance-ms must not be negative.")
        return EXIT_UNUSABLE
    try:
        slo = slo_mod.load(args.slo) if args.slo is not None else None
        run = load_run(args.results)
        baseline = None
        if args.baseline is not None:
            try:
                baseline = load_run(args.baseline)
            except UnusableInput as err:
                raise UnusableInput(f"baseline: {err}") from None
        out_dir = args.output if args.output is not None else args.results
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / "charts").mkdir(exist_ok=True)
        except OSError as err:
            raise UnusableInput(f"cannot write the report to {out_dir} ({err.strerror}).") from None
    except (UnusableInput, slo_mod.SloError) as err:
        _error(str(err))
        return EXIT_UNUSABLE
    except Exception as err:  # noqa: BLE001 - corrupt input we did not foresee: still one sentence
        if args.debug:
            traceback.print_exc()
        _error(f"{args.results} cannot be read: {type(err).__name__}: {err}.")
        return EXIT_UNUSABLE
    try:
        report = build_report(
            run,
            slo=slo,
            baseline=baseline,
            tolerance_pct=args.tolerance,
            tolerance_ms=args.tolerance_ms,
            charts_dir=None if args.no_charts else out_dir / "charts",
            charts=not args.no_charts,
        )
        write_report(report, out_dir)
        summary = terminal_summary(report, out_dir)
    except OSError as err:
        _error(f"cannot write the report to {out_dir} ({err.strerror or err}).")
        return EXIT_UNUSABLE
    except Exception as err:  # noqa: BLE001 - a bug: one sentence, the traceback on request
        if args.debug:
            traceback.print_exc()
        _error(f"internal error while analysing {args.results}: {type(err).__name__}: {err} "
               "(run with --debug for the traceback, and please report it).")  # fmt: skip
        return EXIT_BUG
    if not args.quiet:
        print(summary)
    if report.failed_checks or (args.fail_on_regression and report.regressions):
        return EXIT_FAIL
    return EXIT_PASS
