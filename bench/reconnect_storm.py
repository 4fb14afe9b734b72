"""Reconnect storm: the MQTT broker restarted under N connected devices.

Starts its own Mosquitto on a free port, then one child process
(``bench._workload storm``) connects N idle ``MqttDevice`` users (default
5,000: keepalive 60 s, a command subscription each, reconnect backoff doubling
from 0.2 s up to ``--reconnect-max``, jittered). Once all are connected the
broker is restarted (graceful SIGTERM, or ``--kill`` for SIGKILL) on the same
port, and the child times every connection lost and every reconnect. Printed:

- ``down_s``: how long the broker took to stop and accept connections again;
- ``all_back_s``: from the broker accepting again to the last device reconnected
  (time until all are connected again);
- ``connect_rate``: reconnects per second over the storm (first to last), and
  the peak second;
- ``failed_attempts``: connect attempts refused or timed out during the storm.

The broker gets one open file per client: it inherits this process's limit
(20,000 hard here, which root cannot raise), so N must stay under it with room
for the broker's own files; the bench refuses a bigger N with one sentence.

    .venv/bin/python -m bench reconnect-storm                 # 5,000 devices, graceful
    .venv/bin/python -m bench reconnect-storm --kill --devices 10000 --sources 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections import Counter

from bench._broker import Mosquitto

__all__ = ["main"]

#: Open files the broker needs besides its clients (listeners, log, epoll, ...).
BROKER_SPARE_FILES = 64


def _accepting(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def _restart(broker: Mosquitto, kill: bool) -> tuple[float, float]:
    """Stop (SIGTERM or SIGKILL) and start the broker on its port; (stopped at, accepting at)."""
    assert broker.proc is not None
    t_down = time.time()
    if kill:
        os.kill(broker.pid, signal.SIGKILL)
        broker.proc.wait(10)
    else:
        broker.stop()
    broker.start()
    while not _accepting(broker.port):
        time.sleep(0.005)
    return t_down, time.time()


def storm(devices: int, kill: bool, sources: int, reconnect_max: float,
          timeout: float) -> dict[str, object]:  # fmt: skip
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if devices + BROKER_SPARE_FILES > hard:
        raise SystemExit(
            f"bench: {devices} devices need {devices + BROKER_SPARE_FILES} open files in the "
            f"broker, but the limit is {hard}; use fewer --devices."
        )
    with Mosquitto(nofile=hard) as broker:
        cmd = [sys.executable, "-m", "bench._workload", "storm", "--port", str(broker.port),
               "--devices", str(devices), "--sources", str(sources),
               "--reconnect-max", str(reconnect_max), "--timeout", str(timeout)]  # fmt: skip
        child = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        assert child.stdout is not None
        try:
            ready = child.stdout.readline().split()
            if not ready or ready[0] != "READY":
                raise SystemExit(f"bench: the storm child did not get ready: {' '.join(ready)}")
            connect_s = float(ready[2])
            time.sleep(2.0)  # every SUBACK in, the broker idle
            t_down, t_up = _restart(broker, kill)
            out, _ = child.communicate(timeout=timeout + 60)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
    doc = json.loads([ln for ln in out.splitlines() if ln.startswith("{")][-1])
    if "error" in doc:
        raise SystemExit(f"bench: {doc['error']}")
    back = sorted(doc["back"])
    per_second = Counter(int(t - t_up) for t in back)
    span = back[-1] - back[0] if len(back) > 1 else 0.0
    return {
        "devices": devices,
        "restart": "SIGKILL" if kill else "graceful (SIGTERM)",
        "initial_connect_s": round(connect_s, 2),
        "lost": len(doc["lost"]),
        "reconnected": len(back),
        "down_s": round(t_up - t_down, 3),
        "first_back_s": round(back[0] - t_up, 3) if back else None,
        "all_back_s": round(back[-1] - t_up, 3) if back else None,
        "connect_rate": round(len(back) / span, 0) if span else None,
        "peak_second": max(per_second.values()) if per_second else 0,
        "failed_attempts": doc["failed_attempts"],
        "reconnect_max_s": reconnect_max,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench reconnect-storm",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--devices", type=int, default=5000)
    p.add_argument("--kill", action="store_true", help="SIGKILL the broker instead of SIGTERM")
    p.add_argument(
        "--sources", type=int, default=0, help="spread over K source addresses 127.0.0.2.."
    )
    p.add_argument("--reconnect-max", type=float, default=10.0,
                   help="MqttDevice.reconnect_max: the longest backoff, s")  # fmt: skip
    p.add_argument("--timeout", type=float, default=120.0, help="bound on each phase, s")
    args = p.parse_args(argv)
    result = storm(args.devices, args.kill, args.sources, args.reconnect_max, args.timeout)
    print(json.dumps(result, indent=1))
    ok = result["reconnected"] == result["lost"] == args.devices
    print(
        f"{args.devices} devices, broker {result['restart']} down {result['down_s']} s: "
        f"all reconnected {result['all_back_s']} s after it was back, "
        f"{result['connect_rate']} reconnects/s (peak {result['peak_second']} in one second), "
        f"{result['failed_attempts']} failed attempts"
        + ("" if ok else f"; only {result['reconnected']} of {args.devices} came back")
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
