"""MQTT auth: what the embedded stack's plugin costs per CONNECT, and what a password file would.

Starts the stack's own Mosquitto twice on free ports (``Stack.start_service``), once with
auth (the plugin, the ACL) and once anonymous, and times ``--connects`` sequential
CONNECT -> CONNACK -> DISCONNECT of devices (raw sockets, each its own id and derived
password), with the broker's CPU per connect. Then the alternative the plugin replaces:
a ``password_file`` entry per device, written with ``mosquitto_passwd`` and as Mosquitto's
``$7$`` PBKDF2-SHA512 (101 iterations) in Python, extrapolated to ``--devices``.

    .venv/bin/python -m bench mqtt-auth
    .venv/bin/python -m bench mqtt-auth --connects 5000 --devices 50000
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psutil

from users._mqtt_codec import connect_packet  # (imports Locust, which patches ssl first)


def _connects(stack, n: int) -> tuple[float, float]:
    """(connects/s, broker CPU µs per connect) of ``n`` sequential device connects."""
    from pipeline.auth import mqtt_password

    broker = psutil.Process(stack.procs["mosquitto"].pid)
    secret = stack.secret if stack.mqtt_auth else ""
    packets = []
    for i in range(n):
        device = f"bench-auth-{i:06d}"
        login = (device, mqtt_password(secret, device)) if secret else (None, None)
        packets.append(connect_packet(device, username=login[0], password=login[1]))
    cpu0 = sum(broker.cpu_times()[:2])
    t0 = time.perf_counter()
    for packet in packets:
        with socket.create_connection(("127.0.0.1", stack.ports["mqtt"])) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.sendall(packet)
            ack = s.recv(4)
            if len(ack) < 4 or ack[3] != 0:
                raise SystemExit(f"bench: CONNECT refused ({ack!r})")
            s.sendall(b"\xe0\x00")  # DISCONNECT
    seconds = time.perf_counter() - t0
    cpu = sum(broker.cpu_times()[:2]) - cpu0
    return n / seconds, cpu / n * 1e6


def _password_file(entries: int) -> tuple[float, float]:
    """(µs per entry in Python, ms per ``mosquitto_passwd -b`` call)."""
    t0 = time.perf_counter()
    for i in range(entries):
        hashlib.pbkdf2_hmac("sha512", f"pw-{i}".encode(), os.urandom(12), 101)
    py_us = (time.perf_counter() - t0) / entries * 1e6
    tool = shutil.which("mosquitto_passwd")
    if tool is None:
        return py_us, float("nan")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "passwd"
        path.touch()
        calls = 50
        t0 = time.perf_counter()
        for i in range(calls):
            subprocess.run([tool, "-b", str(path), f"dev-{i}", f"pw-{i}"], check=True)
        tool_ms = (time.perf_counter() - t0) / calls * 1e3
    return py_us, tool_ms


def main(argv: list[str] | None = None) -> int:
    from pipeline.stack import Stack

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--connects", type=int, default=2000, help="sequential connects per broker")
    p.add_argument("--devices", type=int, default=50_000, help="fleet size to extrapolate to")
    args = p.parse_args(argv)
    results = {}
    for auth in (True, False):
        stack = Stack.with_ports(
            auto=True, state_dir=Path(tempfile.mkdtemp(prefix="bench-auth-")), mqtt_auth=auth
        )
        try:
            stack.start_service("mosquitto")
            results[auth] = _connects(stack, args.connects)
        finally:
            stack.stop(remove_data=True)
    print(f"# {args.connects} sequential device connects (CONNECT, CONNACK, DISCONNECT) each")
    for auth, label in ((True, "plugin + ACL"), (False, "anonymous")):
        rate, cpu = results[auth]
        print(f"{label:<14} {rate:8.0f} connects/s   broker CPU {cpu:6.1f} µs per connect")
    py_us, tool_ms = _password_file(2000)
    print(f"# a password_file for {args.devices:,} devices instead (written at every `up`)")
    print(f"Python $7$ PBKDF2  {py_us:6.0f} µs per entry -> {py_us * args.devices / 1e6:6.1f} s")
    print(
        f"mosquitto_passwd  {tool_ms:6.1f} ms per entry -> "
        f"{tool_ms * args.devices / 1e3 / 60:6.1f} min"
    )
    return 0
