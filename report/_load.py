"""Load one results folder (docs/results.md) into a :class:`Run`, checking it on the way.

Everything the report uses is read and checked here, so a missing, empty or
corrupt folder ends in one :class:`~report.exceptions.UnusableInput` sentence
naming the file and the problem — never later, half-way through a chart. The
encoded HDR histograms are decoded with ``telemetry.hdr`` (the format's owner).

Required: ``run.json``, ``e2e.json``, ``timeseries.csv``. Optional: Locust's
``--csv`` files (``<prefix>_stats.csv`` and friends, found in the folder or at
``--csv`` as recorded in ``run.json``) and its ``--html`` report.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from report import _schema
from report.exceptions import UnusableInput
from telemetry.hdr import Histogram

__all__ = ["Run", "TimeseriesRow", "LocustCsv", "load_run", "OUTPUT_NAMES"]

#: What ``analyze.py`` itself writes into a folder (never mistaken for input).
OUTPUT_NAMES = frozenset({"report.html", "summary.md", "charts"})

_STATS_COLUMNS = ("Type", "Name", "Request Count", "Failure Count", "Max Response Time",
                  "Requests/s", "50%", "90%", "95%", "99%")  # fmt: skip
_TIMESERIES_REQUIRED = ("epoch_s", "path", "published", "delivered", "users")
_MISSING: Any = object()


@dataclass(slots=True)
class TimeseriesRow:
    """One (second, path) of ``timeseries.csv`` (late-report duplicates already added in)."""

    epoch_s: int
    elapsed_s: int
    path: str
    published: int
    delivered: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    lost_so_far: int
    users: int
    workers: int
    cpu_by_worker: dict[str, float]
    #: copies of already received messages in that second (absent in older files: 0)
    duplicated: int = 0


@dataclass(slots=True)
class LocustCsv:
    """Locust's own ``--csv`` files (rows as Locust wrote them) and its ``--html`` report."""

    prefix: Path
    stats: list[dict[str, str]] = field(default_factory=list)
    history: list[dict[str, str]] = field(default_factory=list)
    failures: list[dict[str, str]] = field(default_factory=list)
    exceptions: list[dict[str, str]] = field(default_factory=list)


@dataclass(slots=True)
class Run:
    """A checked results folder. ``hist[(path, hop)]`` are the decoded e2e histograms."""

    folder: Path
    run: dict[str, Any]
    e2e: dict[str, Any]
    timeseries: list[TimeseriesRow]
    hist: dict[tuple[str, str], Histogram]
    schedule_lag: Histogram
    loop_lag: dict[str, Histogram]
    batch_push: dict[str, Histogram]
    locust: LocustCsv | None = None
    locust_html: Path | None = None
    #: ``faults.json`` of a ``--faults`` run (docs/results.md), else None
    faults: dict[str, Any] | None = None
    #: ``comparison.json`` of an ingest comparison (``locustfiles/http_vs_mqtt.py``), else None
    comparison: dict[str, Any] | None = None
    #: ``protocols.json`` of an MQTT vs AMQP run (``users.broker_compare``), else None
    protocols: dict[str, Any] | None = None
    #: ``redis_benchmark.json`` of ``python -m bench redis``, else None
    redis_bench: dict[str, Any] | None = None

    @property
    def run_id(self) -> str:
        return str(self.run["run_id"])


# --- small checked readers -------------------------------------------------------------------
def _kind(types: tuple[type, ...]) -> str:
    names = {dict: "an object", list: "a list", str: "a string", int: "an integer",
             float: "a number", bool: "true/false"}  # fmt: skip
    return " or ".join(names.get(t, t.__name__) for t in types)


def _field(doc: Mapping[str, Any], key: str, types: tuple[type, ...], where: str,
           default: Any = _MISSING) -> Any:  # fmt: skip
    if key not in doc or doc[key] is None:
        if default is not _MISSING:
            return default
        raise UnusableInput(
            f"{where} has no {key!r}: the file is incomplete or not a pipeswarm file."
        )
    value = doc[key]
    if isinstance(value, bool) and bool not in types or not isinstance(value, types):
        raise UnusableInput(f"{where}: {key!r} should be {_kind(types)}, not {value!r:.60}.")
    return value


def _read_json(path: Path, fmt: str) -> dict[str, Any]:
    if not path.is_file():
        raise UnusableInput(
            f"{path} is missing: the folder is not a pipeswarm results folder, "
            "or the run did not finish."
        )
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise UnusableInput(f"{path} is not valid JSON (line {err.lineno}: {err.msg}).") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UnusableInput(f"{path} cannot be read ({err}).") from None
    if not isinstance(doc, dict):
        raise UnusableInput(f"{path} is not a pipeswarm file: it holds no JSON object.")
    found = doc.get("format")
    if not isinstance(found, str) or found.rpartition("/")[0] != fmt.rpartition("/")[0]:
        raise UnusableInput(f"{path} is not a pipeswarm file (format {found!r}, expected {fmt!r}).")
    if found != fmt:
        raise UnusableInput(f"{path} has format {found!r}; this analyze.py reads {fmt!r}.")
    return doc


def _read_csv(path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    try:
        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            missing = [c for c in required if c not in header]
            if missing:
                what = "is empty" if not header else f"has no column {missing[0]!r}"
                raise UnusableInput(f"{path} {what}: not the file this analyze.py expects.")
            return list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise UnusableInput(f"{path} cannot be read ({err}).") from None


def _number(text: str | None, cast: Callable[[str], Any], where: str) -> Any:
    if text is None or text == "" or text == "N/A":
        return None
    try:
        return cast(text)
    except ValueError:
        raise UnusableInput(f"{where} is not a number ({text!r:.40}).") from None


def _histogram(entry: Any, where: str) -> Histogram:
    if not isinstance(entry, dict):
        raise UnusableInput(f"{where} should be a histogram object, not {entry!r:.60}.")
    count = _field(entry, "count", (int,), where)
    encoded = _field(entry, "hdr", (str,), where, default="")
    if not encoded:
        if count:
            raise UnusableInput(f"{where} has {count} samples but no encoded histogram ('hdr').")
        return Histogram()
    try:
        h = Histogram.decode(encoded)
    except Exception as err:  # hdrh raises zlib/base64/cookie/length errors of its own
        raise UnusableInput(
            f"{where}: the encoded histogram cannot be decoded ({type(err).__name__})."
        ) from None
    if h.count != count:
        raise UnusableInput(f"{where}: the histogram holds {h.count} samples but says {count}.")
    h.negative = int(entry.get("negative") or 0)
    h.clamped_high = int(entry.get("clamped_high") or 0)
    return h


# --- the three files -------------------------------------------------------------------------
def _check_run(doc: dict[str, Any], where: str) -> None:
    _field(doc, "run_id", (str,), where)
    for key in ("started_epoch_s", "duration_s"):
        _field(doc, key, (int, float), where)
    for key, types in (
        ("user_classes_count", (dict,)),
        ("workers", (list,)),
        ("hosts", (list,)),
        ("versions", (dict,)),
        ("options", (dict,)),
        ("master", (dict,)),
        ("e2e", (dict,)),
    ):
        _field(doc, key, types, where, default={} if dict in types else [])
    for w in doc.get("workers", []):
        if not isinstance(w, dict):
            raise UnusableInput(f"{where}: 'workers' should be a list of objects.")
    _schema.check(doc, _schema.RUN, where)  # every other field the report reads


def _check_e2e(doc: dict[str, Any], where: str) -> None:
    _field(doc, "run_id", (str,), where)
    paths = _field(doc, "paths", (dict,), where)
    _field(doc, "published", (dict,), where)
    _field(doc, "loop_lag", (dict,), where, default={})
    _field(doc, "subscribers", (list,), where, default=[])
    for path, entry in paths.items():
        at = f"{where} paths[{path!r}]"
        if not isinstance(entry, dict):
            raise UnusableInput(f"{at} should be an object.")
        totals = _field(entry, "totals", (dict,), at)
        for key, value in totals.items():
            if isinstance(value, bool) or not isinstance(value, int):
                raise UnusableInput(
                    f"{at}.totals: {key!r} should be an integer, not {value!r:.40}."
                )
        _field(entry, "latency", (dict,), at)
        _field(entry, "snapshot", (dict,), at, default={})
        worst = _field(entry, "worst_devices", (dict,), at, default={})
        for key, rows in worst.items():
            if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
                raise UnusableInput(f"{at}.worst_devices[{key!r}] should be a list of objects.")
    _schema.check(doc, _schema.E2E, where)  # every other field the report reads


def _timeseries(path: Path) -> list[TimeseriesRow]:
    rows: dict[tuple[int, str], TimeseriesRow] = {}
    raw = _read_csv(path, _TIMESERIES_REQUIRED)
    for n, r in enumerate(raw, start=2):
        at = f"{path} line {n}"

        def num(col: str, cast: Callable[[str], Any] = int, at: str = at, r: dict = r) -> Any:
            return _number(r.get(col), cast, f"{at}, column {col!r},")

        epoch = num("epoch_s")
        if epoch is None:
            raise UnusableInput(f"{at} has no 'epoch_s'.")
        cpu: dict[str, float] = {}
        for pair in (r.get("cpu_by_worker") or "").split(";"):
            if pair:
                key, _, value = pair.rpartition(":")
                cpu[key] = _number(value, float, f"{at}, column 'cpu_by_worker',") or 0.0
        row = TimeseriesRow(
            epoch_s=epoch,
            elapsed_s=num("elapsed_s") or 0,
            path=r.get("path") or "",
            published=num("published") or 0,
            delivered=num("delivered") or 0,
            p50_ms=num("e2e_p50_ms", float),
            p95_ms=num("e2e_p95_ms", float),
            p99_ms=num("e2e_p99_ms", float),
            max_ms=num("e2e_max_ms", float),
            lost_so_far=num("lost_so_far") or 0,
            users=num("users") or 0,
            workers=num("workers") or 0,
            cpu_by_worker=cpu,
            duplicated=num("duplicated") or 0,
        )
        prev = rows.get((epoch, row.path))
        if prev is None:
            rows[(epoch, row.path)] = row
            continue
        # a stalled worker's late report: a second set of rows for the same second
        # (docs/results.md); counts add up, percentiles cannot be merged: keep the worse
        prev.published += row.published
        prev.delivered += row.delivered
        prev.duplicated += row.duplicated
        for attr in ("p50_ms", "p95_ms", "p99_ms", "max_ms"):
            values = [v for v in (getattr(prev, attr), getattr(row, attr)) if v is not None]
            setattr(prev, attr, max(values) if values else None)
        prev.lost_so_far = max(prev.lost_so_far, row.lost_so_far)
    return sorted(rows.values(), key=lambda r: r.epoch_s)


# --- Locust's files --------------------------------------------------------------------------
def _locust_prefix(folder: Path, run: dict[str, Any]) -> Path | None:
    recorded = str(run.get("options", {}).get("csv_prefix") or "")
    found = sorted(
        p for p in folder.glob("*_stats.csv") if not p.name.endswith("_stats_history.csv")
    )
    if found:
        for p in found:
            if recorded and p.name == Path(recorded).name + "_stats.csv":
                return p.with_name(p.name.removesuffix("_stats.csv"))
        return found[0].with_name(found[0].name.removesuffix("_stats.csv"))
    if recorded and Path(recorded + "_stats.csv").is_file():
        return Path(recorded)
    return None


def _locust(folder: Path, run: dict[str, Any]) -> LocustCsv | None:
    prefix = _locust_prefix(folder, run)
    if prefix is None:
        return None
    out = LocustCsv(prefix)
    out.stats = _read_csv(Path(f"{prefix}_stats.csv"), _STATS_COLUMNS)
    for attr, suffix, required in (
        ("history", "_stats_history.csv", ("Timestamp", "Name", "Requests/s")),
        ("failures", "_failures.csv", ("Name", "Error", "Occurrences")),
        ("exceptions", "_exceptions.csv", ("Count", "Message")),
    ):
        path = Path(f"{prefix}{suffix}")
        if path.is_file():
            setattr(out, attr, _read_csv(path, required))
    for r in out.stats:
        for col in _STATS_COLUMNS[2:]:
            _number(r.get(col), float, f"{prefix}_stats.csv, {r.get('Name')!r} column {col!r},")
    return out


def _locust_html(folder: Path, run: dict[str, Any]) -> Path | None:
    recorded = str(run.get("options", {}).get("html_file") or "")
    candidates = [p for p in sorted(folder.glob("*.html")) if p.name not in OUTPUT_NAMES]
    for p in candidates:
        if recorded and p.name == Path(recorded).name:
            return p
    if candidates:
        return candidates[0]
    return Path(recorded) if recorded and Path(recorded).is_file() else None


# --- the folder -----------------------------------------------------------------------------
def load_run(folder: str | Path) -> Run:
    """Read and check ``folder``; :class:`UnusableInput` (one sentence) when it cannot be used."""
    folder = Path(folder)
    if not folder.exists():
        raise UnusableInput(f"results folder {folder} does not exist.")
    if not folder.is_dir():
        raise UnusableInput(f"{folder} is not a folder: give a results folder (results/<run id>).")
    try:
        entries = [p for p in folder.iterdir() if p.name not in OUTPUT_NAMES]
    except OSError as err:
        raise UnusableInput(f"results folder {folder} cannot be read ({err.strerror}).") from None
    if not entries:
        raise UnusableInput(
            f"results folder {folder} is empty: expected run.json, e2e.json and timeseries.csv."
        )
    run = _read_json(folder / "run.json", "pipeswarm-run/1")
    _check_run(run, str(folder / "run.json"))
    e2e = _read_json(folder / "e2e.json", "pipeswarm-e2e/1")
    where = str(folder / "e2e.json")
    _check_e2e(e2e, where)
    if e2e["run_id"] != run["run_id"]:
        raise UnusableInput(
            f"{where} is of run {e2e['run_id']}, but run.json of run {run['run_id']}: "
            "the folder mixes two runs."
        )
    ts_path = folder / "timeseries.csv"
    if not ts_path.is_file():
        raise UnusableInput(f"{ts_path} is missing: the run did not finish writing its results.")
    hist = {
        (path, hop): _histogram(h, f"{where} paths[{path!r}].latency[{hop!r}]")
        for path, entry in e2e["paths"].items()
        for hop, h in entry["latency"].items()
    }
    return Run(
        folder=folder,
        run=run,
        e2e=e2e,
        timeseries=_timeseries(ts_path),
        hist=hist,
        schedule_lag=_histogram(e2e.get("schedule_lag") or {"count": 0}, f"{where} schedule_lag"),
        loop_lag={
            src: _histogram(h, f"{where} loop_lag[{src!r}]") for src, h in e2e["loop_lag"].items()
        },
        batch_push={
            key: _histogram(h, f"{where} batch_push[{key!r}]")
            for key, h in (e2e.get("batch_push") or {}).items()
        },
        locust=_locust(folder, run),
        locust_html=_locust_html(folder, run),
        faults=_faults(folder / "faults.json"),
        comparison=_comparison(folder / "comparison.json"),
        protocols=_protocols(folder / "protocols.json"),
        redis_bench=_redis_bench(folder / "redis_benchmark.json"),
    )


def _redis_bench(path: Path) -> dict[str, Any] | None:
    """``redis_benchmark.json`` of ``python -m bench redis`` (optional; checked like the others)."""
    return _optional(
        path, "pipeswarm-redis/1", "rows",
        {"operation": (str,), "locust_per_s": (int, float), "native_per_s": (int, float)},
    )  # fmt: skip


def _optional(
    path: Path, fmt: str, rows_key: str, fields: Mapping[str, tuple[type, ...]]
) -> dict[str, Any] | None:
    """An optional results file: None when absent; else its document, whose ``rows_key``
    list holds objects with ``fields`` of those types (:class:`UnusableInput` otherwise)."""
    if not path.exists():
        return None
    doc = _read_json(path, fmt)
    rows = _field(doc, rows_key, (list,), str(path))
    for i, row in enumerate(rows):
        where = f"{path} {rows_key}[{i}]"
        if not isinstance(row, dict):
            raise UnusableInput(f"{where} is not an object.")
        for key, kinds in fields.items():
            _field(row, key, kinds, where)
    return doc


def _comparison(path: Path) -> dict[str, Any] | None:
    """``comparison.json`` of an ingest comparison run (optional; checked like the others)."""
    fields = {"src": (str,), "ack_ms": (dict,), "e2e_ms": (dict,)}
    doc = _optional(path, "pipeswarm-comparison/1", "phases", fields)
    if doc is not None:
        _field(doc, "summary", (dict,), str(path))
    return doc


def _protocols(path: Path) -> dict[str, Any] | None:
    """``protocols.json`` of ``locustfiles/mqtt_vs_amqp.py`` (optional)."""
    if not path.exists():
        return None
    doc = _read_json(path, "pipeswarm-protocols/1")
    _field(doc, "protocols", (dict,), str(path))
    return doc


def _faults(path: Path) -> dict[str, Any] | None:
    """``faults.json`` when the run had ``--faults`` (optional; checked like the others)."""
    fields = {"spec": (str,), "action": (str,), "component": (str,)}
    return _optional(path, "pipeswarm-faults/1", "phases", fields)
