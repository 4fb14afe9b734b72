"""Per-message costs of the telemetry hot paths: ``python -m bench telemetry-costs``.

Prints µs per call (best of 5 runs) for building an envelope, reading one, and a
subscriber's ``received`` without Locust request events (what a run pays by default)
and with them through Locust's own stats listener (what ``--e2e-in-stats true``
adds: the ``E2E`` entries go through ``events.request``). Not a test:
figures depend on the machine; ``bench/`` owns comparisons.
"""

from __future__ import annotations

import json
import time
import timeit
from collections.abc import Callable

from telemetry import envelope
from telemetry.ledger import Ledger
from telemetry.stages import STAMPS

__all__ = ["measure", "main"]

RUN = "20250101-000000-abcd"


def _best_us(fn: Callable[[], object], number: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6


def _stamped(seq: int, t0: int) -> bytes:
    msg = json.loads(envelope.build("robot-0007", 123.45, 67.89, run=RUN, seq=seq, t0=t0))
    # every stage of the pipeline stamps it, 1 µs apart
    msg["trace"]["hops"] = {stamp: t0 + 1_000 * i for i, stamp in enumerate(STAMPS, 1)}
    return json.dumps(msg, separators=(",", ":")).encode()


def measure(number: int = 50_000) -> dict[str, float]:
    from locust.env import Environment
    from locust.event import Events

    t0 = time.time_ns()
    out: dict[str, float] = {}
    sample = envelope.build("robot-0007", 123.45, 67.89, run=RUN, seq=42, t0=t0)
    out["payload_bytes"] = len(sample)
    out["envelope.build"] = _best_us(
        lambda: envelope.build("robot-0007", 123.45, 67.89, run=RUN, seq=42, t0=t0), number
    )
    stamped = _stamped(42, t0)
    out["stamped_payload_bytes"] = len(stamped)
    out[f"envelope.read ({len(STAMPS)} hops)"] = _best_us(lambda: envelope.read(stamped), number)

    payloads = [_stamped(seq, t0) for seq in range(1, number * 5 + 1)]

    def run_received(ledger: Ledger) -> float:
        sub = ledger.subscriber("stomp")
        it = iter(payloads)
        recv = t0 + 5_000
        return (
            min(timeit.repeat(lambda: sub.received(next(it), recv), number=number, repeat=5))
            / number
            * 1e6
        )

    out["ledger.received, default (6 histograms, no events)"] = run_received(Ledger(RUN))
    env = Environment(events=Events())
    runner = env.create_local_runner()  # Locust's stats listener, as in a real run
    try:

        def fire(name: str, ms: float, length: int) -> None:
            env.events.request.fire(
                request_type="E2E",
                name=name,
                response_time=ms,
                response_length=length,
                exception=None,
                context={},
            )

        out["ledger.received + 6 E2E events (--e2e-in-stats true)"] = run_received(
            Ledger(RUN, fire=fire)
        )
        out["ledger.received + 1 E2E event (... --e2e-hop-events false)"] = run_received(
            Ledger(RUN, fire=fire, hop_events=False)
        )
    finally:
        runner.quit()
    pub = Ledger(RUN)
    seqs = iter(range(1, number * 5 + 1))
    out["ledger.published"] = _best_us(
        lambda: pub.published("robot-0007", next(seqs), t0, t0 + 1_000), number
    )
    return out


def main(argv: list[str] | None = None) -> int:
    for name, value in measure().items():
        unit = "" if name.endswith("bytes") else " µs"
        print(f"{name:56s} {value:8.2f}{unit}")
    return 0


if __name__ == "__main__":
    main()
