"""Hosts for tests: Linux network namespaces on one switch (``ip netns``, iproute2).

Each host is a namespace with its own loopback and one veth whose other end is
a port of a bridge in a private "switch" namespace; host ``n`` has address
``10.77.0.n/24``. Processes run in a host under its own hostname (a UTS
namespace of their own, ``unshare --uts``), so ``socket.gethostname()`` names
the host as a real one would. Nothing touches the machine's own namespace, so
the fixed subnet and ports cannot clash with anything outside a lab.

    with Lab() as lab:
        pipe = lab.host("pipe")
        proc = lab.popen(pipe, [sys.executable, "-m", "http.server"])
    # every process started here is killed by its PID, every namespace deleted

Needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN): :func:`unavailable` says why not.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from typing import Any

SUBNET = "10.77.0"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=20)


def unavailable() -> str | None:
    """Why network namespaces cannot be made here (None: they can)."""
    name = f"psprobe{os.getpid()}"
    try:
        done = _ip("netns", "add", name, check=False)
    except FileNotFoundError:
        return "iproute2's `ip` is not installed (make setup)"
    if done.returncode != 0:
        return f"`ip netns add` is not permitted here ({done.stderr.strip()}): needs root"
    _ip("netns", "del", name, check=False)
    return None


@dataclass
class Host:
    name: str
    ns: str
    address: str


@dataclass
class Lab:
    """A switch and the hosts on it; :meth:`close` (or ``with``) removes everything."""

    tag: str = field(default_factory=lambda: str(os.getpid()))
    hosts: list[Host] = field(default_factory=list)
    procs: list[subprocess.Popen[Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.switch = f"ps{self.tag}sw"
        _ip("netns", "add", self.switch)
        try:
            _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.switch, "link", "set", "br0", "up")
        except subprocess.CalledProcessError:
            _ip("netns", "del", self.switch, check=False)
            raise

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def host(self, name: str) -> Host:
        """A new host ``name`` on the switch, address ``10.77.0.<n>`` (n = 1, 2, …)."""
        n = len(self.hosts) + 1
        h = Host(name, f"ps{self.tag}{name}", f"{SUBNET}.{n}")
        _ip("netns", "add", h.ns)
        self.hosts.append(h)
        port, eth = f"v{self.tag}{n}", f"e{self.tag}{n}"
        _ip("link", "add", port, "netns", self.switch, "type", "veth", "peer", "name", eth,
            "netns", h.ns)  # fmt: skip
        _ip("-n", self.switch, "link", "set", port, "master", "br0", "up")
        _ip("-n", h.ns, "link", "set", "lo", "up")
        _ip("-n", h.ns, "link", "set", eth, "name", "eth0")
        _ip("-n", h.ns, "addr", "add", f"{h.address}/24", "dev", "eth0")
        _ip("-n", h.ns, "link", "set", "eth0", "up")
        return h

    def command(self, host: Host, argv: list[str]) -> list[str]:
        """``argv`` run inside ``host`` under its hostname."""
        return ["ip", "netns", "exec", host.ns, "unshare", "--uts", "sh", "-c",
                'hostname "$0" && exec "$@"', host.name, *argv]  # fmt: skip

    def popen(self, host: Host, argv: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` in ``host`` (``exec`` all the way: the PID is the program's)."""
        proc = subprocess.Popen(self.command(host, argv), **kwargs)
        self.procs.append(proc)
        return proc

    def run(self, host: Host, argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[Any]:
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        return subprocess.run(self.command(host, argv), check=False, **kwargs)

    def close(self) -> None:
        """Kill what :meth:`popen` started (by PID), delete the namespaces (and their veths)."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        for ns in [h.ns for h in self.hosts] + [self.switch]:
            _ip("netns", "del", ns, check=False)
        self.hosts.clear()
