"""The generator side of the benchmarks, run in a child process of its own.

    python -m bench._workload ratio --impl ours|theirs --qos 1 --port P --users 100 --seconds 15
    python -m bench._workload idle --port P --devices 19000
    python -m bench._workload storm --port P --devices 5000

``ratio`` prints ``START <epoch s>`` and ``END <epoch s>`` lines around the
measured window (so the parent can read its subscriber's count at those
instants) and then one JSON line with the generator's own figures; ``idle``
prints one JSON line. CPU is the generator process's user+system time (psutil).
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import gc  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from typing import Any  # noqa: E402

import gevent  # noqa: E402
import psutil  # noqa: E402
from locust import User, constant, task  # noqa: E402
from locust.env import Environment  # noqa: E402

import telemetry  # noqa: E402
from telemetry import envelope  # noqa: E402
from users import MqttDevice  # noqa: E402
from users._mqtt_payload import Trajectory  # noqa: E402

RUN_ID = "bench"
# locust.contrib.mqtt uses paho's deprecated callback API v1: not our concern here
warnings.filterwarnings("ignore", category=DeprecationWarning)


def _cpu(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _wait(check: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        gevent.sleep(0.05)
    return True


def _stats_count(env: Environment, prefix: str) -> tuple[int, int]:
    n = fails = 0
    for (name, _type), entry in env.stats.entries.items():
        if name.startswith(prefix):
            n += entry.num_requests
            fails += entry.num_failures
    return n, fails


def theirs_class(port: int, qos: int) -> type[User]:
    """Locust's own ``locust.contrib.mqtt.MqttUser``, publishing the same envelope."""
    from locust.contrib.mqtt import MqttUser

    numbers = itertools.count(1)

    class Theirs(MqttUser):
        host = "127.0.0.1"
        wait_time = constant(0)

        def __init__(self, environment: Environment) -> None:
            self.port = port
            super().__init__(environment)
            self.device_id = f"theirs-{next(numbers):04d}"
            self.topic = f"sensors/{self.device_id}/coordinates"
            self.seq = 0
            self.trajectory = Trajectory(t_start=time.time())

        @task
        def publish(self) -> None:
            self.seq += 1
            now = time.time_ns()
            x, y = self.trajectory.at(now / 1e9)
            payload = envelope.build(self.device_id, x, y, run=RUN_ID, seq=self.seq, t0=now, tp=now)
            self.client.publish(self.topic, payload, qos=qos)

    Theirs.port = port
    return Theirs


def ours_class(port: int, qos: int, interval: float, max_batch: int) -> type[User]:
    class Ours(MqttDevice):
        url = f"mqtt://127.0.0.1:{port}"
        device_id_prefix = "ours-"

    Ours.qos = qos
    Ours.interval = interval
    Ours.max_batch = max_batch
    return Ours


def ratio(args: argparse.Namespace) -> None:
    proc = psutil.Process()
    if args.impl == "theirs":
        cls = theirs_class(args.port, args.qos)
    else:
        cls = ours_class(args.port, args.qos, args.interval, args.max_batch)
    env = Environment(user_classes=[cls])
    runner = env.create_local_runner()
    plugin = telemetry.install(env)
    runner.start(args.users, spawn_rate=args.users * 10)
    _wait(lambda: runner.user_count >= args.users, 30)
    # let every connection come up and the pipes fill before measuring
    gevent.sleep(args.warmup)
    cpu0, t0 = _cpu(proc), time.time()
    _say(f"START {t0:.6f}")
    gevent.sleep(args.seconds)
    cpu1, t1 = _cpu(proc), time.time()
    _say(f"END {t1:.6f}")
    runner.quit()
    published, fails = _stats_count(env, "publish")
    connects, connect_fails = _stats_count(env, "connect")
    result = {
        "impl": args.impl,
        "qos": args.qos,
        "users": args.users,
        "wall_s": t1 - t0,
        "cpu_s": cpu1 - cpu0,
        "publish_entries": published,
        "publish_failures": fails,
        "connects": connects,
        "connect_failures": connect_fails,
        "ledger_published": plugin.ledger.published_total,
    }
    _say(json.dumps(result))


def latency(args: argparse.Namespace) -> None:
    """Devices on a timetable well below capacity: PUBACK time and schedule lag."""
    cls = ours_class(args.port, 1, args.interval, 32)
    env = Environment(user_classes=[cls])
    runner = env.create_local_runner()
    plugin = telemetry.install(env)
    runner.start(args.devices, spawn_rate=args.devices * 10)
    _wait(lambda: runner.user_count >= args.devices, 30)
    gevent.sleep(1.0)
    env.stats.reset_all()
    plugin.ledger.schedule_lag.reset()  # measure the steady state only
    gevent.sleep(args.seconds)
    e = env.stats.entries[("publish:1:sensors/+/coordinates", "MQTT")]
    lag = plugin.ledger.schedule_lag
    result = {
        "devices": args.devices,
        "interval_s": args.interval,
        "rate": e.num_requests / args.seconds,
        "puback_avg_ms": e.avg_response_time,
        "puback_max_ms": e.max_response_time,
        "lag_samples": lag.count,
        "lag_us": {p: lag.percentile(p) for p in (50, 90, 99, 99.9)},
    }
    runner.quit()
    _say(json.dumps(result))


class _Bare(User):
    wait_time = constant(60)

    @task
    def listen(self) -> None:
        pass


def idle(args: argparse.Namespace) -> None:
    proc = psutil.Process()
    sources = [f"127.0.0.{i}" for i in range(2, 2 + args.sources)] if args.sources else []
    if args.impl == "bare":
        cls: type[User] = _Bare
    else:

        class Idle(MqttDevice):
            url = f"mqtt://127.0.0.1:{args.port}"
            interval = 0
            keepalive = args.keepalive
            device_id_prefix = "idle-"
            source_addresses = sources
            connect_timeout = 30.0

        cls = Idle
    env = Environment(user_classes=[cls])
    runner = env.create_local_runner()
    telemetry.install(env)
    gevent.sleep(0.5)
    gc.collect()
    rss0 = proc.memory_info().rss
    t0 = time.time()
    runner.start(args.devices, spawn_rate=args.spawn_rate)
    _wait(lambda: runner.user_count >= args.devices, args.timeout)
    spawned_at = time.time()

    def connected() -> int:
        entry = env.stats.entries.get(("connect", "MQTT"))
        return 0 if entry is None else entry.num_requests - entry.num_failures

    if args.impl == "bare":
        _wait(lambda: runner.user_count >= args.devices, args.timeout)
        up, t_up = args.devices, time.time()
    else:
        _wait(lambda: connected() >= args.devices, args.timeout)
        up, t_up = connected(), time.time()
    spawned_s = t_up - t0
    gevent.sleep(2)
    gc.collect()
    rss1 = proc.memory_info().rss
    cpu0 = _cpu(proc)
    gevent.sleep(args.idle_seconds)
    idle_cpu = (_cpu(proc) - cpu0) / args.idle_seconds * 100
    sub = env.stats.entries.get(("subscribe:1:orin/+/command", "MQTT"))
    conn = env.stats.entries.get(("connect", "MQTT"))
    fails = sum(e.num_failures for e in env.stats.entries.values())
    result = {
        "impl": args.impl,
        "devices": args.devices,
        "connected": up,
        "subscribed": 0 if sub is None else sub.num_requests - sub.num_failures,
        "failures": fails,
        "rss_delta_mb": (rss1 - rss0) / 2**20,
        "kb_per_device": (rss1 - rss0) / max(up, 1) / 1024,
        "seconds_to_connect": spawned_s,
        "seconds_to_spawn": spawned_at - t0,
        "connects_per_s": up / spawned_s if spawned_s else 0.0,
        "idle_cpu_pct": idle_cpu,
        "sources": sources,
        "errors": sorted(
            ([e.name, str(e.error), e.occurrences] for e in env.stats.errors.values()),
            key=lambda x: -x[2],
        )[:3],
        "connect_ms": {
            p: conn.get_response_time_percentile(p / 100) if conn is not None else 0
            for p in (50, 90, 99, 100)
        },
    }
    runner.quit()
    _say(json.dumps(result))


def storm(args: argparse.Namespace) -> None:
    """N idle devices; ``READY`` once all are connected; then every loss and reconnect,
    timed, until each device that lost its connection has it back (or the timeout)."""
    sources = [f"127.0.0.{i}" for i in range(2, 2 + args.sources)] if args.sources else []

    class Stormy(MqttDevice):
        url = f"mqtt://127.0.0.1:{args.port}"
        interval = 0
        keepalive = 60
        device_id_prefix = "storm-"
        source_addresses = sources
        connect_timeout = 30.0
        reconnect_max = args.reconnect_max

    env = Environment(user_classes=[Stormy])
    runner = env.create_local_runner()
    telemetry.install(env)
    lost: list[float] = []
    back: list[float] = []
    failed: list[float] = []

    def on_request(name: str, exception: Any, **_kw: Any) -> None:
        if name == "connection lost":
            lost.append(time.time())
        elif name == "reconnect":
            back.append(time.time())
        elif name == "connect" and exception is not None and lost:
            failed.append(time.time())

    env.events.request.add_listener(on_request)

    def connected() -> int:
        entry = env.stats.entries.get(("connect", "MQTT"))
        return 0 if entry is None else entry.num_requests - entry.num_failures

    t0 = time.time()
    runner.start(args.devices, spawn_rate=args.spawn_rate)
    if not _wait(lambda: connected() >= args.devices, args.timeout):
        _say(json.dumps({"error": f"only {connected()} of {args.devices} connected"}))
        runner.quit()
        return
    _say(f"READY {time.time():.6f} {time.time() - t0:.3f}")
    _wait(lambda: len(lost) >= args.devices, args.timeout)
    _wait(lambda: len(back) >= len(lost) > 0, args.timeout)
    _say(json.dumps({"lost": lost, "back": back, "failed_attempts": len(failed)}))
    runner.quit()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench._workload")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("ratio")
    r.add_argument("--impl", choices=("ours", "theirs"), required=True)
    r.add_argument("--qos", type=int, choices=(0, 1, 2), default=1)
    r.add_argument("--port", type=int, required=True)
    r.add_argument("--users", type=int, default=100)
    r.add_argument("--seconds", type=float, default=15.0)
    r.add_argument("--warmup", type=float, default=2.0)
    r.add_argument("--interval", type=float, default=1e-5)
    r.add_argument("--max-batch", type=int, default=32)
    i = sub.add_parser("idle")
    i.add_argument("--impl", choices=("ours", "bare"), default="ours")
    i.add_argument("--port", type=int, default=0)
    i.add_argument("--devices", type=int, default=19000)
    i.add_argument("--sources", type=int, default=0)
    i.add_argument("--spawn-rate", type=float, default=20000.0)
    i.add_argument("--timeout", type=float, default=120.0)
    i.add_argument("--idle-seconds", type=float, default=5.0)
    i.add_argument("--keepalive", type=int, default=60)
    lt = sub.add_parser("latency")
    lt.add_argument("--port", type=int, required=True)
    lt.add_argument("--devices", type=int, default=100)
    lt.add_argument("--interval", type=float, default=0.1)
    lt.add_argument("--seconds", type=float, default=10.0)
    st = sub.add_parser("storm")
    st.add_argument("--port", type=int, required=True)
    st.add_argument("--devices", type=int, default=5000)
    st.add_argument("--sources", type=int, default=0)
    st.add_argument("--spawn-rate", type=float, default=20000.0)
    st.add_argument("--timeout", type=float, default=120.0)
    st.add_argument("--reconnect-max", type=float, default=10.0)
    args = p.parse_args(argv)
    {"ratio": ratio, "idle": idle, "latency": latency, "storm": storm}[args.cmd](args)


if __name__ == "__main__":
    main()
