#!/usr/bin/env python3
"""Turn a pipeswarm results folder into a report, an SLO verdict and a baseline comparison.

    python analyze.py results/<run id>                      # report.html, summary.md, charts/
    python analyze.py results/<run> --slo slo.yaml          # exit 1 when an objective fails
    python analyze.py results/<run> --baseline results/<other> --tolerance 10
    python analyze.py results/<run> -o /tmp/report          # write elsewhere

Exit codes: 0 pass, 1 SLO failed, 2 unusable input. The engine is ``report/``.
"""

from __future__ import annotations

import sys

from report.cli import main

if __name__ == "__main__":
    sys.exit(main())
