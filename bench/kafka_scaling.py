"""Sustained msg/s and p99 against Kafka partitions x consumer processes in one group.

For every cell of the grid (``--partitions`` x ``--consumers``) a fresh stack is
started whose topic has that many partitions and whose consumer group has that
many processes, and rates rise (``--rates``, ``--step-seconds`` each) until one
loses messages. The cell's *sustained* rate is the highest that met
``pipeline-throughput``'s rule (every message arrived, p99 under
``--p99-limit-ms``; a rate that fails is offered once more unless
``--no-confirm``). Per step it prints the CPU (% of one core) of every process and
of the whole machine, so the table says where the limit was.

- default: the whole pipeline (``bench.soak``'s QoS 1 publisher, Mosquitto,
  bridge, Kafka, consumer(s), Redis, gateway, one WebSocket subscriber); p99 is
  end to end;
- ``--kafka-only``: Apache Kafka alone, paced confluent-kafka producers and the
  consumer processes (``bench._kafka_alone``); p99 is intended send -> consume.

Writes ``index.html`` (the table and the chart, inline SVG), ``kafka_scaling.svg``
and ``cells.json`` to ``--out`` (default ``results/kafka-scaling-<mode>-<time>/``)
after every cell; ``--replot DIR`` renders the page again from them.

    .venv/bin/python -m bench kafka-scaling                       # the full grid, 60 s steps
    .venv/bin/python -m bench kafka-scaling --kafka-only
    .venv/bin/python -m bench kafka-scaling --partitions 1,2,4 --consumers 1,2 --step-seconds 20
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from bench._scaling_page import Cell, find_sustained, markdown_table, text_table, write_page

PIPELINE_RATES = "500,1000,1500,2000,3000,4000"
KAFKA_RATES = "2000,5000,10000,20000,40000,80000,160000"


def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected numbers like 1,2,4") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: every number must be at least 1")
    return values


def _pipeline_cell(args: argparse.Namespace, partitions: int, consumers: int,
                   report: Any) -> Cell:  # fmt: skip
    import psutil

    from bench._kafka_alone import box_cpu
    from bench.pipeline_throughput import _step
    from bench.soak import bench_stack, soak

    cell = Cell(partitions, consumers)
    with bench_stack(None, consumers, partitions) as stack:
        if args.warmup > 0:
            soak(stack, args.rates[0], args.warmup / 60, 1, devices=50, quiet=True)

        def step(rate: int) -> dict[str, Any]:
            box = psutil.cpu_times()
            r = _step(stack, rate, args.step_seconds, subscribers=1)
            return {**r, "p99": r["e2e_p99"], "p50": r["e2e_p50"],
                    "box_cpu": box_cpu(box, psutil.cpu_times())}  # fmt: skip

        return find_sustained(
            cell, step, args.rates, args.p99_limit_ms, args.keep_going, report, not args.no_confirm
        )


def _kafka_cell(args: argparse.Namespace, partitions: int, consumers: int, report: Any) -> Cell:
    from bench._kafka_alone import KafkaAlone

    cell = Cell(partitions, consumers)
    with KafkaAlone(partitions, consumers, devices=args.devices) as kafka:
        if args.warmup > 0:
            kafka.step(args.rates[0], args.warmup)

        def step(rate: int) -> dict[str, Any]:
            return kafka.step(rate, args.step_seconds)

        return find_sustained(
            cell, step, args.rates, args.p99_limit_ms, args.keep_going, report, not args.no_confirm
        )


def _start_retrying(run_cell: Any, args: argparse.Namespace, partitions: int,
                    consumers: int, attempts: int = 3) -> Cell:  # fmt: skip
    """Run a cell; a start that failed (a free port taken by a neighbour before our
    server bound it: seen on the shared box) is tried again on other free ports."""
    from pipeline.exceptions import PortTaken, StartupFailed

    for attempt in range(1, attempts + 1):
        try:
            return run_cell(args, partitions, consumers, _print_step)
        except (PortTaken, StartupFailed) as exc:
            if attempt == attempts:
                raise
            print(f"P={partitions} C={consumers}: {exc} Again on other ports.", flush=True)
    raise AssertionError("unreachable")


def _print_step(cell: Cell, s: dict[str, Any], ok: bool) -> None:
    cpu = " ".join(f"{n} {c:.0f}" for n, c in s["cpu"].items())
    print(
        f"  P={cell.partitions:<2} C={cell.consumers}  {s['rate']:>7}/s  published "
        f"{s['published']:>8}  lost {s['lost']:>6}  p50 {s['p50']:>7.1f}  p99 {s['p99']:>8.1f} ms  "
        f"lag {s['lag_max_ms']:>6.1f}  {'sustained' if ok else 'NOT      '}  box {s['box_cpu']:.0f}  {cpu}",
        flush=True,
    )


def _title(args: argparse.Namespace) -> tuple[str, str]:
    what = "Apache Kafka alone" if args.kafka_only else "the whole pipeline"
    note = f"{args.step_seconds:g} s per rate, p99 < {args.p99_limit_ms:g} ms. {args.note}"
    return f"Kafka partitions x consumer processes: {what}", note.strip()


def _replot(args: argparse.Namespace) -> int:
    cells = [Cell(**c) for c in json.loads((args.replot / "cells.json").read_text())]
    title, note = _title(args)
    command = (args.replot / "command.txt").read_text().strip()
    page = write_page(args.replot, cells, title, note, command, args.p99_limit_ms)
    print(text_table(cells))
    print(f"page: {page}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--kafka-only", action="store_true", help="Kafka alone, no MQTT/Redis/gateway")
    p.add_argument("--partitions", type=_ints, default=[1, 2, 4, 8, 16])
    p.add_argument("--consumers", type=_ints, default=[1, 2, 4], help="processes in one group")
    p.add_argument(
        "--rates",
        type=_ints,
        help=f"msg/s offered, rising (default {PIPELINE_RATES}; --kafka-only {KAFKA_RATES})",
    )
    p.add_argument("--step-seconds", type=float, default=60, help="seconds each rate is offered")
    p.add_argument(
        "--warmup", type=float, default=10, help="seconds at the first rate per cell, not counted"
    )
    p.add_argument("--p99-limit-ms", type=float, default=250)
    p.add_argument(
        "--no-confirm",
        action="store_true",
        help="a failed rate ends the cell at once (default: offered once more, as one "
        "neighbour's burst on a shared box can spoil one step)",
    )
    p.add_argument(
        "--keep-going", action="store_true", help="offer every rate, even after one lost messages"
    )
    p.add_argument(
        "--devices", type=int, default=1000, help="keys (--kafka-only; the pipeline uses 50)"
    )
    p.add_argument(
        "--note", default="", help="a line for the page, e.g. 'measured under contention'"
    )
    p.add_argument("--out", type=Path, help="folder for index.html, the SVG and cells.json")
    p.add_argument(
        "--replot",
        type=Path,
        metavar="DIR",
        help="measure nothing: render DIR/index.html again from DIR/cells.json "
        "(with --note, --kafka-only and --p99-limit-ms as given)",
    )
    args = p.parse_args(argv)
    if args.replot:
        return _replot(args)
    mode = "kafka-only" if args.kafka_only else "pipeline"
    args.rates = args.rates or _ints(KAFKA_RATES if args.kafka_only else PIPELINE_RATES)
    out = args.out or Path("results") / f"kafka-scaling-{mode}-{time.strftime('%Y%m%d-%H%M%S')}"
    command = "python -m bench kafka-scaling " + shlex.join(
        argv if argv is not None else sys.argv[1:]
    )
    run_cell = _kafka_cell if args.kafka_only else _pipeline_cell
    cells: list[Cell] = []
    for consumers in args.consumers:
        for partitions in args.partitions:
            cell = _start_retrying(run_cell, args, partitions, consumers)
            cells.append(cell)
            print(
                f"P={partitions} C={consumers}: sustained {cell.sustained} msg/s, 0 lost up to "
                f"{cell.kept_up} msg/s; {cell.limit}",
                flush=True,
            )
            # after every cell: an interrupted grid keeps what it measured
            title, note = _title(args)
            page = write_page(out, cells, title, note, command, args.p99_limit_ms)
            (out / "command.txt").write_text(command + "\n")
    print()
    print(text_table(cells))
    print()
    print(markdown_table(cells))
    print(f"\n{command}\npage: {page}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
