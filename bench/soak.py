"""Soak: the whole embedded stack at a steady rate for minutes, minute by minute.

Starts its own stack on free ports (or uses a running one with --state-dir),
publishes QoS 1 traffic from --devices devices at --rate msg/s in total for
--minutes, and receives it on --subscribers raw WebSocket subscribers
(``/coordinates``, each in its own process). It prints, per minute of
publishing (by the message's intended send time ``t0``):

- p50 / p99 per hop (mqtt: publish -> bridge, kafka: bridge -> consumer,
  redis: consumer -> gateway, push: gateway -> subscriber) and end to end,
- each stack process's RSS and CPU (% of one core) over that minute,

then loss and duplicates per subscriber (by device and sequence number) and
the verdicts the README states: 0 lost, 0 duplicated, the Kafka hop's p99
over the last 5 minutes <= 1.5x the first 5 after warm-up, every RSS flat
within +-20 % after warm-up.

    .venv/bin/python -m bench soak --rate 480 --minutes 30
    .venv/bin/python -m bench soak --rate 2000 --minutes 10
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import auth

HOPS = ("mqtt", "kafka", "redis", "push", "e2e")
WINDOW_NS = 10 * 1_000_000_000
WINDOWS_PER_MINUTE = 6


def _hop_deltas(trace: dict[str, Any], recv_ns: int) -> tuple[float, ...] | None:
    hops = trace.get("hops") or {}
    try:
        tp, b, c, g = trace["tp"], hops["bridge"], hops["consumer"], hops["gateway"]
    except KeyError:
        return None
    return ((b - tp) / 1e6, (c - b) / 1e6, (g - c) / 1e6, (recv_ns - g) / 1e6,
            (recv_ns - trace["t0"]) / 1e6)  # fmt: skip


def _subscriber(
    url: str, token: str, run: str, start_ns: int, stop_at: float, ready: Any, out: Any
) -> None:
    """One raw WebSocket subscriber: latencies by t0 10-s window, (device, seq) seen."""
    import websocket  # websocket-client: a thread and a blocking recv, ~20 us a frame

    header = [f"Authorization: Bearer {token}"]
    ws = websocket.create_connection(url, timeout=2, enable_multithread=False, header=header)
    ready.set()
    lat: dict[int, list[tuple[float, ...]]] = defaultdict(list)
    seen: dict[str, list[int]] = defaultdict(list)
    disconnects = 0
    last_id = None  # the gateway's stream id of the newest frame: resume from it
    while time.monotonic() < stop_at:
        try:
            raw = ws.recv() if ws is not None else None
        except websocket.WebSocketTimeoutException:
            continue
        except (websocket.WebSocketException, OSError):
            raw = None
        if not raw:  # the gateway went away: reconnect and ask for what was missed
            disconnects += ws is not None
            ws = None
            time.sleep(0.2)
            resume = f"{url}?since={last_id}" if last_id else url
            try:
                ws = websocket.create_connection(resume, timeout=2, header=header)
            except (websocket.WebSocketException, OSError):
                pass
            continue
        now = time.time_ns()
        try:
            msg = json.loads(raw)
        except ValueError:
            continue
        if isinstance(msg, dict) and isinstance(msg.get("stream_id"), str):
            last_id = msg["stream_id"]
        trace = msg.get("trace") if isinstance(msg, dict) else None
        if not isinstance(trace, dict) or trace.get("run") != run:
            continue
        seen[msg["device_id"]].append(trace["seq"])
        deltas = _hop_deltas(trace, now)
        if deltas is not None:
            lat[(trace["t0"] - start_ns) // WINDOW_NS].append(deltas)
    if ws is not None:
        ws.close()
    out.put(
        {
            "lat": {m: np.asarray(v, dtype=np.float32) for m, v in lat.items()},
            "seen": {d: np.asarray(s, dtype=np.int64) for d, s in seen.items()},
            "disconnects": disconnects,
        }
    )


def _publisher(port: int, run: str, devices: list[str], rate: float, start_ns: int,
               seconds: float, out: Any, login: tuple[str, str] | None = None) -> None:  # fmt: skip
    """QoS 1, paced on an absolute schedule (t0), like MqttDevice; returns counts per device."""
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"soak-{run}-{devices[0]}")
    acked = [0]

    def on_publish(*_: Any) -> None:
        acked[0] += 1

    client.on_publish = on_publish
    if login:  # the stack's tool account: one client publishes for many devices
        client.username_pw_set(*login)
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    total = int(rate * seconds)
    seq = dict.fromkeys(devices, 0)
    lag_max = 0.0
    for n in range(total):
        t0 = start_ns + int(n * 1e9 / rate)
        now = time.time_ns()
        if t0 > now:
            time.sleep((t0 - now) / 1e9)
            now = time.time_ns()
        lag_max = max(lag_max, (now - t0) / 1e6)
        device = devices[n % len(devices)]
        seq[device] += 1
        body = (
            f'{{"device_id":"{device}","x":1.5,"y":2.5,"timestamp":{now / 1e9:.3f},'
            f'"trace":{{"run":"{run}","seq":{seq[device]},"t0":{t0},"tp":{now},"hops":{{}}}}}}'
        )
        client.publish(f"sensors/{device}/coordinates", body, qos=1)
    deadline = time.monotonic() + 120
    while acked[0] < total and time.monotonic() < deadline:  # every PUBACK in
        time.sleep(0.05)
    client.loop_stop()
    client.disconnect()
    out.put({"published": seq, "lag_max_ms": lag_max, "acked": acked[0]})


def _stack(arrays: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(arrays) if arrays else np.empty((0, len(HOPS)), dtype=np.float32)


def _pct(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


class ProcWatch:
    """RSS and CPU per stack process, sampled once a minute (follows restarts by PID)."""

    def __init__(self, stack: Any) -> None:
        self.stack = stack
        self.procs: dict[str, Any] = {}
        self.last: dict[str, float] = {}
        self.last_t = time.monotonic()
        self.rows: list[dict[str, tuple[float, float]]] = []
        self._follow()

    def _follow(self) -> None:
        import psutil

        for name, proc in self.stack.procs.items():
            if name not in self.procs or self.procs[name].pid != proc.pid:
                try:
                    self.procs[name] = psutil.Process(proc.pid)
                    self.last[name] = self._cpu(self.procs[name])
                except psutil.Error:
                    continue

    @staticmethod
    def _cpu(p: Any) -> float:
        t = p.cpu_times()
        return float(t.user + t.system)

    def sample(self) -> dict[str, tuple[float, float]]:
        now = time.monotonic()
        row = {}
        for name, p in self.procs.items():
            try:
                cpu = self._cpu(p)
                rss = p.memory_info().rss / 2**20
            except Exception:  # noqa: BLE001 - a process killed mid-soak shows as 0
                cpu, rss = self.last[name], 0.0
            row[name] = (rss, 100 * (cpu - self.last[name]) / (now - self.last_t))
            self.last[name] = cpu
        self.last_t = now
        self.rows.append(row)
        self._follow()
        return row


class RedisProbe:
    """Redis's event loop seen from outside: a PING every 100 ms, the slowest answer of
    each minute (an AOF rewrite fsyncs its manifest on that loop, which LATENCY misses)."""

    def __init__(self, url: str, start_ns: int) -> None:
        import threading

        self.url, self.start_ns = url, start_ns
        self.max_ms: dict[int, float] = defaultdict(float)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import redis

        rds = redis.Redis.from_url(self.url, socket_timeout=30)
        while not self._stop.wait(0.1):
            began = time.time_ns()
            try:
                rds.ping()
            except redis.RedisError:  # a fault kills Redis: that is not a stall
                continue
            minute = max(0, began - self.start_ns) // (WINDOW_NS * WINDOWS_PER_MINUTE)
            self.max_ms[minute] = max(self.max_ms[minute], (time.time_ns() - began) / 1e6)
        rds.close()

    def stop(self) -> dict[int, float]:
        self._stop.set()
        self._thread.join(35)
        return dict(self.max_ms)


#: (seconds after the first t0, action, component, seconds until it is started again)
Fault = tuple[float, str, str, float]


def _inject(stack: Any, faults: list[Fault], start_ns: int, log: list[dict[str, Any]]) -> None:
    """Run the fault schedule on the stack's own controls (kill/stop/pause, then start/resume)."""
    for at, action, component, duration in sorted(faults):
        time.sleep(max(0.0, start_ns / 1e9 + at - time.time()))
        began = time.time()
        {"kill": stack.kill, "stop": stack.stop_service, "pause": stack.pause}[action](component)
        time.sleep(max(0.0, began + duration - time.time()))
        (stack.resume if action == "pause" else stack.start_service)(component)
        log.append({"action": action, "component": component, "from_s": began - start_ns / 1e9,
                    "back_s": time.time() - start_ns / 1e9})  # fmt: skip


def soak(stack: Any, rate: float, minutes: float, subscribers: int = 4, devices: int = 48,
         publishers: int = 0, quiet: bool = False, faults: list[Fault] | None = None,
         drain_s: float = 15.0) -> dict[str, Any]:  # fmt: skip
    """Run one soak against a started stack; return the figures (also used by the tests)."""
    import threading

    ctx = mp.get_context("spawn")
    run = f"soak-{time.time_ns()}"
    seconds = minutes * 60
    url = stack.urls["gateway"].replace("http://", "ws://") + "/coordinates"
    token = auth.mint_token(auth.read_secret(stack.secret_file), "bench-soak")
    start_ns = time.time_ns() + 3_000_000_000  # everybody connected before the first t0
    stop_at = time.monotonic() + 3 + seconds + drain_s
    outs = ctx.Queue()
    subs = []
    for _ in range(subscribers):
        ready = ctx.Event()
        p = ctx.Process(target=_subscriber, args=(url, token, run, start_ns, stop_at, ready, outs))
        p.start()
        ready.wait(30)
        subs.append(p)
    n_pub = publishers or max(1, int(rate // 3000) + 1)
    names = [f"soak-{d:04d}" for d in range(devices)]
    pub_out = ctx.Queue()
    pubs = [
        ctx.Process(
            target=_publisher,
            args=(
                stack.ports["mqtt"],
                run,
                names[i::n_pub],
                rate / n_pub,
                start_ns,
                seconds,
                pub_out,
                stack.mqtt_login(),
            ),
        )  # fmt: skip
        for i in range(n_pub)
    ]
    for p in pubs:
        p.start()
    watch = ProcWatch(stack)
    probe = RedisProbe(stack.urls["redis"], start_ns)
    fault_log: list[dict[str, Any]] = []
    injector = threading.Thread(target=_inject, args=(stack, faults or [], start_ns, fault_log))
    injector.start()
    if not quiet:
        print(f"soak: {rate:g} msg/s from {devices} devices for {minutes:g} min, "
              f"{subscribers} WebSocket subscribers; run {run}", flush=True)  # fmt: skip
    minute = 0
    while time.monotonic() < stop_at - drain_s:
        time.sleep(min(60, max(0.0, stop_at - drain_s - time.monotonic())))
        row = watch.sample()
        minute += 1
        if not quiet:
            cells = "  ".join(f"{n} {rss:.0f}MB {cpu:.0f}%" for n, (rss, cpu) in row.items())
            print(f"  minute {minute:>3}: {cells}", flush=True)
    published: dict[str, int] = {}
    lag_max = 0.0
    for _ in pubs:
        r = pub_out.get(timeout=180)
        published.update(r["published"])
        lag_max = max(lag_max, r["lag_max_ms"])
    results = [outs.get(timeout=120) for _ in subs]
    for p in [*pubs, *subs]:
        p.join(30)
    injector.join()
    ping_max = probe.stop()
    result = _summarise(results, published, watch, lag_max, minutes)
    for m in result["minutes"]:
        m["redis_ping_max_ms"] = round(ping_max.get(m["minute"] - 1, float("nan")), 1)
    result["redis_stalls"] = _redis_stalls(stack)
    result["faults"] = fault_log
    result["lost_at_s"] = _lost_times(results, published, devices, rate)
    return result


def _redis_stalls(stack: Any) -> dict[str, Any]:
    """What Redis says held its event loop: LATENCY LATEST (events over the stack's
    ``latency-monitor-threshold``), writes it delayed behind an AOF fsync, AOF rewrites."""
    import redis

    rds = redis.Redis.from_url(stack.urls["redis"], socket_timeout=5, decode_responses=True)
    try:
        info = rds.info("persistence")
        events = {str(e[0]): {"last_ms": e[2], "max_ms": e[3]} for e in rds.latency_latest()}
    except redis.RedisError as e:
        return {"error": str(e)}
    finally:
        rds.close()
    return {"aof_delayed_fsync": info.get("aof_delayed_fsync"),
            "aof_rewrites": info.get("aof_rewrites"), "events": events}  # fmt: skip


def _lost_times(results: list[dict], published: dict[str, int], devices: int,
                rate: float) -> list[float]:  # fmt: skip
    """Intended send time (s after the first t0) of every lost message, for attribution.

    Device ``d`` (of one publisher) sends its n-th message as global message
    ``(n - 1) * devices + d``; with several publishers this is approximate.
    """
    out = []
    for r in results:
        for device, sent in published.items():
            d = int(device.rsplit("-", 1)[1])
            got = set(r["seen"].get(device, np.empty(0, dtype=np.int64)).tolist())
            out += [
                ((seq - 1) * devices + d) / rate for seq in range(1, sent + 1) if seq not in got
            ]
    return sorted(out)


def _summarise(results: list[dict], published: dict[str, int], watch: ProcWatch,
               lag_max: float, minutes: float) -> dict[str, Any]:  # fmt: skip
    lost = duplicated = 0
    for r in results:
        for device, sent in published.items():
            seqs = r["seen"].get(device, np.empty(0, dtype=np.int64))
            distinct = len(np.unique(seqs))
            lost += max(0, sent - len(np.unique(seqs[(seqs >= 1) & (seqs <= sent)])))
            duplicated += len(seqs) - distinct
    per_minute = []
    for m in range(int(np.ceil(minutes))):
        windows = [
            [r["lat"][w] for r in results if w in r["lat"]]
            for w in range(m * WINDOWS_PER_MINUTE, (m + 1) * WINDOWS_PER_MINUTE)
        ]
        lat = _stack([a for arrays in windows for a in arrays])
        by_window = [_stack(arrays) for arrays in windows]
        per_minute.append(
            {
                "minute": m + 1,
                "count": int(len(lat)),
                **{f"{h}_p50": _pct(lat[:, i], 50) for i, h in enumerate(HOPS)},
                **{f"{h}_p99": _pct(lat[:, i], 99) for i, h in enumerate(HOPS)},
                # p99 of each 10-s window, then their median: one stall of a few
                # seconds lifts one window; a trend lifts them all.
                **{
                    f"{h}_window_p99_median": float(
                        np.median([_pct(w[:, i], 99) for w in by_window if len(w)])
                    )
                    if any(len(w) for w in by_window)
                    else float("nan")
                    for i, h in enumerate(HOPS)
                },
            }
        )
    return {
        "published": sum(published.values()),
        "subscribers": len(results),
        "lost": lost,
        "duplicated": duplicated,
        "disconnects": sum(r["disconnects"] for r in results),
        "publisher_lag_max_ms": round(lag_max, 1),
        "minutes": per_minute,
        "procs": watch.rows,
    }


def verdicts(result: dict[str, Any], warmup: int = 1) -> list[tuple[str, bool, str]]:
    """The soak's claims, each (what, held, figures)."""
    mins = [m for m in result["minutes"] if m["count"]][warmup:]
    window = min(5, max(1, len(mins) // 2))
    first = float(np.mean([m["kafka_p99"] for m in mins[:window]])) if mins else float("nan")
    last = float(np.mean([m["kafka_p99"] for m in mins[-window:]])) if mins else float("nan")
    out: list[tuple[str, bool, str]] = [
        (
            "0 lost",
            result["lost"] == 0,
            f"{result['lost']} of {result['published']} x {result['subscribers']}",
        ),
        ("0 duplicated", result["duplicated"] == 0, str(result["duplicated"])),
    ]
    if len(mins) >= 2:  # a trend needs two minutes after the warm-up
        out.append((f"kafka p99 last {window} min <= 1.5x first {window}", last <= 1.5 * first,
                    f"{first:.1f} -> {last:.1f} ms"))  # fmt: skip
    rows = result["procs"][warmup:]
    if len(rows) >= 2:
        worst, name = 0.0, ""
        for proc in rows[0]:
            rss = [r[proc][0] for r in rows if r[proc][0] > 0]
            if rss:
                drift = (max(rss) - min(rss)) / min(rss)
                if drift > worst:
                    worst, name = drift, proc
        out.append(("every RSS flat within +-20 %", worst <= 0.2, f"worst {name} {worst:+.0%}"))
    return out


def table(result: dict[str, Any]) -> str:
    """The soak's figures as the bench prints them: hops per minute, processes, verdicts."""
    out = [
        f"\n{'min':>4} {'msgs':>7} "
        + " ".join(f"{h + ' p50/p99 ms':>18}" for h in HOPS)
        + "  redis PING max ms"
    ]
    for m in result["minutes"]:
        cells = " ".join(f"{m[h + '_p50']:>8.1f}/{m[h + '_p99']:<9.1f}" for h in HOPS)
        ping = m.get("redis_ping_max_ms", float("nan"))
        out.append(f"{m['minute']:>4} {m['count']:>7} {cells} {ping:>8.1f}")
    out.append("\nprocess RSS MB / CPU % of one core, per minute:")
    for i, row in enumerate(result["procs"], 1):
        out.append(f"  {i:>3} " + "  ".join(f"{n} {r:.0f}/{c:.0f}" for n, (r, c) in row.items()))
    for f in result.get("faults", []):
        out.append(
            f"fault {f['action']}:{f['component']} from {f['from_s']:.1f} s, back at {f['back_s']:.1f} s"
        )
    if result.get("lost_at_s"):
        lost = result["lost_at_s"]
        out.append(f"lost messages were due between {lost[0]:.1f} s and {lost[-1]:.1f} s")
    out.append(
        f"\npublished {result['published']}, subscribers {result['subscribers']}, lost "
        f"{result['lost']}, duplicated {result['duplicated']}, subscriber reconnects "
        f"{result['disconnects']}, publisher schedule lag max {result['publisher_lag_max_ms']} ms"
    )
    if "redis_stalls" in result:
        out.append(f"redis: {result['redis_stalls']}")
    for what, held, figures in verdicts(result):
        out.append(f"  {'HELD ' if held else 'FAILED'} {what}: {figures}")
    return "\n".join(out)


def print_table(result: dict[str, Any]) -> None:
    print(table(result))


def _fault(text: str) -> Fault:
    try:
        action, rest = text.split(":", 1)
        component, when = rest.split("@", 1)
        at, duration = when.split("+", 1)
        if action not in ("kill", "stop", "pause"):
            raise ValueError(action)
        return float(at), action, component, float(duration)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected ACTION:COMPONENT@AT+DURATION with ACTION kill, stop or pause"
        ) from None


@contextlib.contextmanager
def bench_stack(
    state_dir: Path | None, consumers: int = 1, partitions: int | None = None
) -> Iterator[Any]:
    """The stack recorded in ``state_dir``; without one, a stack of our own on free
    ports (``consumers`` consumer processes, ``partitions`` in the topic, default the
    pipeline's), stopped and its data removed after."""
    from pipeline.stack import Stack

    if state_dir is not None:
        yield Stack.load(state_dir)
        return
    sized = {"partitions": partitions} if partitions else {}
    stack = Stack.with_ports(
        auto=True, state_dir=Path(tempfile.mkdtemp(prefix="bench-")), consumers=consumers, **sized
    )
    stack.start()
    try:
        yield stack
    finally:
        stack.stop(remove_data=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rate", type=float, default=480, help="msg/s in, all devices together")
    p.add_argument("--minutes", type=float, default=30)
    p.add_argument("--devices", type=int, default=48)
    p.add_argument("--subscribers", type=int, default=4)
    p.add_argument("--consumers", type=int, default=1, help="consumer processes (own stack)")
    p.add_argument("--state-dir", type=Path, help="use the stack recorded there instead")
    p.add_argument(
        "--fault",
        action="append",
        default=[],
        type=_fault,
        help="ACTION:COMPONENT@AT+DURATION (seconds), e.g. kill:mosquitto@20+3; repeatable",
    )
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)
    with bench_stack(args.state_dir, args.consumers) as stack:
        result = soak(
            stack, args.rate, args.minutes, args.subscribers, args.devices, faults=args.fault
        )
    print_table(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=float))
    return 0 if all(held for _, held, _ in verdicts(result)) else 1


if __name__ == "__main__":
    raise SystemExit(main())
