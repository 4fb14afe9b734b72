"""The subscribers of ``bench gateway-churn``: some held, and a stream of short-lived ones.

    python -m bench._churn_child --port P --hold 150 --churn 20 --life 2 --seconds 600

``--hold`` STOMP subscriptions stay open the whole run (so the gateway is never
quiet); every second ``--churn`` more connect, subscribe to ``/topic/coordinates``,
stay ``--life`` seconds and DISCONNECT. Every 10 s one JSON line: connections
made and failed so far, and the frames the held ones received.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402
import gevent.pool  # noqa: E402

from users._mqtt_loop import Pump  # noqa: E402
from users._stomp_client import StompClient  # noqa: E402


def _discard(body: bytes, recv_ns: int) -> None:
    pass


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench._churn_child")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--hold", type=int, default=150)
    p.add_argument("--churn", type=float, default=20.0, help="new connections per second")
    p.add_argument("--life", type=float, default=2.0, help="seconds each short one stays")
    p.add_argument("--seconds", type=float, default=600.0)
    args = p.parse_args()
    token = os.environ["PIPESWARM_TOKEN"]
    pump = Pump()

    def client() -> StompClient:
        return StompClient("127.0.0.1", args.port, "/ws", pump=pump, on_message=_discard,
                           heartbeats=(10_000, 10_000), token=token)  # fmt: skip

    held = []
    for _ in range(args.hold):
        c = client()
        c.connect()
        c.subscribe("/topic/coordinates")
        held.append(c)
    counts = {"made": 0, "failed": 0}

    def short() -> None:
        c = client()
        try:
            c.connect()
            c.subscribe("/topic/coordinates")
            gevent.sleep(args.life)
            counts["made"] += 1
        except Exception:  # noqa: BLE001 - counted; the run goes on
            counts["failed"] += 1
        finally:
            c.close()

    pool = gevent.pool.Pool(int(args.churn * (args.life + 5)) + 10)
    start = time.monotonic()
    next_report = start + 10
    n = 0
    while time.monotonic() - start < args.seconds:
        n += 1
        pool.spawn(short)
        now = time.monotonic()
        if now >= next_report:
            up = sum(1 for c in held if c.up)
            frames = sum(c.messages for c in held)
            print(json.dumps({**counts, "held_up": up, "held_frames": frames}), flush=True)
            next_report += 10
        gevent.sleep(max(0.0, start + n / args.churn - time.monotonic()))
    pool.join(timeout=args.life + 10)
    for c in held:
        c.close()
    print(json.dumps({**counts, "held_up": 0, "done": True}), flush=True)


if __name__ == "__main__":
    main()
