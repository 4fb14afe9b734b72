"""Sustained messages/s through the whole embedded stack: MQTT -> STOMP subscriber.

Starts its own stack on free ports (or uses a running one with --state-dir),
then offers QoS1 traffic at rising rates, each for a fixed time, to one STOMP
subscriber on /topic/coordinates in its own process. A step passes when every
published message arrived and p99 (t0 -> received) stayed under --p99-limit.

    .venv/bin/python -m bench.pipeline_throughput --rates 1000,2000,3000 --seconds 10
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import tempfile
import time
from pathlib import Path

DEVICES = 50


def _subscriber(port: int, run: str, expected: int, ready, out, timeout: float) -> None:
    import stomp
    from stomp.adapter.ws import WSStompConnection

    lat_ms: list[float] = []

    class Listener(stomp.ConnectionListener):
        def on_message(self, frame) -> None:
            now = time.time_ns()
            msg = json.loads(frame.body)
            trace = msg.get("trace") or {}
            if trace.get("run") == run:
                lat_ms.append((now - trace["t0"]) / 1e6)

    conn = WSStompConnection([("127.0.0.1", port)], ws_path="/ws")
    conn.set_listener("l", Listener())
    conn.connect(wait=True)
    conn.subscribe("/topic/coordinates", id="1", receipt="r")
    time.sleep(0.5)
    ready.set()
    deadline = time.monotonic() + timeout
    while len(lat_ms) < expected and time.monotonic() < deadline:
        time.sleep(0.05)
    conn.disconnect()
    out.put(lat_ms)


def _publish(port: int, run: str, rate: int, seconds: float) -> tuple[int, float]:
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-{run}")
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    total = int(rate * seconds)
    start = time.time_ns()
    seq = [0] * DEVICES
    infos = []
    lag_max = 0.0
    for n in range(total):
        t0 = start + int(n * 1e9 / rate)
        now = time.time_ns()
        if t0 > now:
            time.sleep((t0 - now) / 1e9)
            now = time.time_ns()
        lag_max = max(lag_max, (now - t0) / 1e6)
        d = n % DEVICES
        seq[d] += 1
        body = {
            "device_id": f"bench-{d}",
            "x": 1.0,
            "y": 2.0,
            "timestamp": now / 1e9,
            "trace": {"run": run, "seq": seq[d], "t0": t0, "tp": now, "hops": {}},
        }
        infos.append(client.publish(f"sensors/bench-{d}/coordinates", json.dumps(body), qos=1))
    for info in infos:
        info.wait_for_publish(30)
    client.loop_stop()
    client.disconnect()
    return total, lag_max


def _pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


def run_step(gateway_port: int, mqtt_port: int, rate: int, seconds: float) -> dict:
    ctx = mp.get_context("spawn")
    run = f"bench-{rate}-{time.time_ns()}"
    ready, out = ctx.Event(), ctx.Queue()
    expected = int(rate * seconds)
    sub = ctx.Process(
        target=_subscriber, args=(gateway_port, run, expected, ready, out, seconds + 30)
    )
    sub.start()
    ready.wait(30)
    started = time.monotonic()
    published, lag_max = _publish(mqtt_port, run, rate, seconds)
    lat = out.get(timeout=seconds + 60)
    elapsed = time.monotonic() - started
    sub.join(10)
    return {
        "rate": rate,
        "published": published,
        "delivered": len(lat),
        "elapsed_s": round(elapsed, 1),
        "publisher_lag_max_ms": round(lag_max, 1),
        "p50_ms": round(statistics.median(lat), 2) if lat else None,
        "p99_ms": round(_pct(lat, 99), 2) if lat else None,
        "max_ms": round(max(lat), 2) if lat else None,
    }


def main(argv: list[str] | None = None) -> int:
    from pipeline.stack import Stack

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rates", default="500,1000,2000,3000,4000")
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--p99-limit-ms", type=float, default=1000)
    p.add_argument("--state-dir", type=Path, help="use the stack recorded there instead")
    args = p.parse_args(argv)
    own = args.state_dir is None
    if own:
        stack = Stack.with_ports(auto=True, state_dir=Path(tempfile.mkdtemp(prefix="bench-")))
        stack.start()
    else:
        stack = Stack.load(args.state_dir)
    try:
        print(
            f"{'offered/s':>10} {'published':>10} {'delivered':>10} {'p50 ms':>8} "
            f"{'p99 ms':>8} {'max ms':>8} {'pub lag ms':>10}  verdict"
        )
        best = 0
        for rate in (int(r) for r in args.rates.split(",")):
            r = run_step(stack.ports["gateway"], stack.ports["mqtt"], rate, args.seconds)
            ok = r["delivered"] == r["published"] and (r["p99_ms"] or 1e9) < args.p99_limit_ms
            best = rate if ok else best
            print(
                f"{rate:>10} {r['published']:>10} {r['delivered']:>10} {r['p50_ms']!s:>8} "
                f"{r['p99_ms']!s:>8} {r['max_ms']!s:>8} {r['publisher_lag_max_ms']:>10}  "
                f"{'sustained' if ok else 'NOT sustained'}",
                flush=True,
            )
        print(f"sustained through the whole stack (QoS1, 1 STOMP subscriber): {best} msg/s")
    finally:
        if own:
            stack.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
