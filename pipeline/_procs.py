"""Child processes of the embedded stack: free ports, start, wait, stop by PID.

Nothing here kills by name: a process is stopped through the PID we started,
and only after checking its start time still matches (PIDs get reused).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from pipeline.exceptions import BinaryMissing, PortTaken, StartupFailed

#: Debian puts mosquitto in /usr/sbin, which a non-login PATH may lack.
_EXTRA_PATH = ("/usr/sbin", "/sbin", "/usr/local/sbin")


def find_binary(name: str, package: str) -> str:
    """Return the path of `name`, searching PATH and the sbin folders."""
    path = shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), *_EXTRA_PATH]))
    if path is None:
        raise BinaryMissing(
            f"{name} is not installed; run `make setup` (apt-get install {package})."
        )
    return path


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now, outside the ephemeral range.

    Binding port 0 would hand out an ephemeral port, which any process's next
    outgoing connection may take as its source port before our server binds it
    (seen here: the gateway lost its port to a client socket). So pick at
    random below the ephemeral range and check that it binds.
    """
    low, _ = _ephemeral_range()
    candidates = (10_000, low - 1) if low > 11_000 else (_ephemeral_range()[1] + 1, 65_535)
    for _ in range(200):
        port = random.randint(*candidates)
        if port_is_free(port, host):
            return port
    with socket.socket() as s:  # everything we tried was taken: let the OS choose
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def ensure_port_free(port: int, what: str, option: str) -> None:
    if not port_is_free(port):
        raise PortTaken(
            f"port {port} ({what}) is already in use; pass {option} PORT "
            "with a free port, or --ports auto."
        )


def wait_until(
    check: Callable[[], bool], timeout: float, what: str, proc: subprocess.Popen | None = None
) -> None:
    """Poll `check` until it is true; fail early when `proc` dies, kill it on time-out."""
    deadline = time.monotonic() + timeout
    delay = 0.02
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise StartupFailed(f"{what} exited with code {proc.returncode} while starting.")
        try:
            if check():
                return
        except Exception:  # noqa: BLE001 - any failure means "not ready yet"
            pass
        time.sleep(delay)
        delay = min(delay * 1.5, 0.25)
    if proc is not None and proc.poll() is None:
        # Ours and never recorded anywhere: leave nothing running behind a failed start.
        proc.kill()
        proc.wait(10)
    raise StartupFailed(f"{what} did not become healthy within {timeout:.0f} s.")


def accepts(port: int, host: str = "127.0.0.1") -> bool:
    with socket.create_connection((host, port), timeout=0.5):
        return True


def http_ok(url: str, contains: str | None = None) -> bool:
    with urllib.request.urlopen(url, timeout=1.0) as resp:  # noqa: S310 - loopback only
        if resp.status != 200:
            return False
        return contains is None or contains in resp.read().decode("utf-8", "replace")


@dataclass
class Proc:
    """One started child, as recorded in the state file."""

    name: str
    pid: int
    create_time: float
    log: str

    def as_dict(self) -> dict:
        return asdict(self)

    def _process(self) -> psutil.Process | None:
        try:
            p = psutil.Process(self.pid)
            # Same PID but another process: it is not ours any more.
            if abs(p.create_time() - self.create_time) > 0.01:
                return None
            return p
        except psutil.NoSuchProcess:
            return None

    def alive(self) -> bool:
        p = self._process()
        return p is not None and p.status() != psutil.STATUS_ZOMBIE

    def signal(self, sig: int) -> None:
        p = self._process()
        if p is not None:
            p.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL and wait until it is gone; only if the PID is still ours."""
        p = self._process()
        if p is None:
            return
        try:
            p.kill()
            p.wait(10)
        except psutil.NoSuchProcess:
            pass

    def stop(self, timeout: float = 8.0) -> None:
        """SIGTERM, then SIGKILL after `timeout`; only if the PID is still ours."""
        p = self._process()
        if p is None:
            return
        try:
            p.send_signal(signal.SIGCONT)  # a paused process cannot handle SIGTERM
            p.terminate()
            p.wait(timeout)
        except psutil.TimeoutExpired:
            p.kill()
            p.wait(5)
        except psutil.NoSuchProcess:
            pass


def spawn(
    name: str,
    argv: list[str],
    log_dir: Path,
    env: dict[str, str] | None = None,
) -> tuple[Proc, subprocess.Popen]:
    """Start `argv` in its own session with output to `log_dir/name.log`."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    with open(log_path, "ab") as log:
        popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    create_time = psutil.Process(popen.pid).create_time()
    return Proc(name, popen.pid, create_time, str(log_path)), popen
