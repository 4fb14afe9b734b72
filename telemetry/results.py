"""Writers for ``results/<run id>/``: ``run.json``, ``e2e.json``, ``timeseries.csv``.

The formats are a contract with ``analyze.py``: every key is described in
``docs/results.md``. Files are written whole to a temporary name and renamed,
so a reader never sees half a file.
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import re
import socket
import sys
import tempfile
import tomllib
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = [
    "RUN_FORMAT",
    "TIMESERIES_COLUMNS",
    "results_dir",
    "write_json",
    "write_timeseries",
    "versions",
    "safe_options",
    "mask_url_passwords",
]

RUN_FORMAT = "pipeswarm-run/1"

#: ``timeseries.csv`` columns, in order (docs/results.md).
TIMESERIES_COLUMNS: tuple[str, ...] = (
    "epoch_s",
    "elapsed_s",
    "path",
    "published",
    "delivered",
    "e2e_p50_ms",
    "e2e_p95_ms",
    "e2e_p99_ms",
    "e2e_max_ms",
    "lost_so_far",
    "users",
    "workers",
    "cpu_max_percent",
    "cpu_mean_percent",
    "cpu_by_worker",
    "duplicated",
)

_SECRET_NAME = re.compile(r"pass|secret|token|(^|_)key$", re.IGNORECASE)
_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@/\s]+@", re.IGNORECASE)


def results_dir(option: str | None, run_id: str) -> Path:
    """``--results-dir`` when given (``{run_id}`` in it is substituted), else ``results/<run id>/``."""
    if option:
        return Path(option.replace("{run_id}", run_id))
    return Path("results") / run_id


def check_writable(option: str | None) -> str | None:
    """Why the results of a run could not be written under ``--results-dir``, or None.

    Checked before the run (a run's files are written at its end) and without
    creating anything: the nearest existing folder on the way to the one above
    the first ``{run_id}`` part (``results/`` by default) must be a directory
    that takes a file (one is written there and removed)."""
    parts = Path(option or "results/{run_id}").parts
    fixed = parts[: next((i for i, p in enumerate(parts) if "{run_id}" in p), len(parts))]
    base = Path(*fixed).absolute() if fixed else Path.cwd()
    existing = next(p for p in (base, *base.parents) if p.exists())
    shown = option or "results/"
    if not existing.is_dir():
        return f"--results-dir {shown}: {existing} is not a directory"
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".pipeswarm-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        return f"--results-dir {shown}: cannot write to {existing} ({err.strerror})"
    return None


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_json(path: Path, doc: Mapping[str, Any]) -> None:
    _atomic_write(path, json.dumps(doc, indent=2, ensure_ascii=False, default=str) + "\n")


def write_timeseries(path: Path, rows: Iterable[Mapping[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=TIMESERIES_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row.get(k, "") for k in TIMESERIES_COLUMNS})
    _atomic_write(path, buf.getvalue())


def _pipeswarm_version() -> str:
    try:
        return metadata.version("pipeswarm")
    except metadata.PackageNotFoundError:
        pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
        try:
            return str(tomllib.loads(pyproject.read_text())["project"]["version"])
        except (OSError, KeyError, tomllib.TOMLDecodeError):
            return "unknown"


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "pipeswarm": _pipeswarm_version()}
    for dist in ("locust", "gevent", "hdrhistogram", "paho-mqtt", "stomp.py", "websocket-client"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


def _json_safe(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple | set | frozenset):
        return [_json_safe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    return str(value)


def safe_options(options: Any) -> dict[str, Any]:
    """Locust's parsed options as JSON, secrets masked (``***``), URL passwords too."""
    if options is None:
        return {}
    out: dict[str, Any] = {}
    for name, value in sorted(vars(options).items()):
        value = _json_safe(value)
        if _SECRET_NAME.search(name) and value not in (None, "", False):
            value = "***"
        elif isinstance(value, str):
            value = _URL_PASSWORD.sub(r"\g<head>***@", value)
        out[name] = value
    return out


def mask_url_passwords(text: str) -> str:
    """``mqtt://dev:s3cret@h:1883`` -> ``mqtt://dev:***@h:1883`` (anywhere in ``text``)."""
    return _URL_PASSWORD.sub(r"\g<head>***@", text)


def safe_argv(argv: list[str]) -> list[str]:
    """``argv`` with URL passwords and the values of secret-named flags masked."""
    out: list[str] = []
    secret_next = False
    for arg in argv:
        if secret_next:
            out.append("***")
            secret_next = False
            continue
        flag, eq, value = arg.partition("=")
        if flag.startswith("--") and _SECRET_NAME.search(flag.lstrip("-").replace("-", "_")):
            if eq:
                out.append(f"{flag}=***")
            else:
                out.append(arg)
                secret_next = True
            continue
        out.append(_URL_PASSWORD.sub(r"\g<head>***@", arg))
    return out


def host_info() -> dict[str, Any]:
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "argv": safe_argv(sys.argv),
    }
