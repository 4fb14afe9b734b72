"""Toxiproxy in front of Mosquitto, Kafka and Redis (``python -m pipeline up --fault-proxies``).

Toxiproxy (Shopify's fault proxy, a Go program) is built once with ``go install``
through the Go module proxy into ``~/.cache/pipeswarm/toxiproxy-<version>/``
(``python -m pipeline install-toxiproxy``, run by ``make setup``); a
``toxiproxy-server`` on PATH or ``$PIPESWARM_TOXIPROXY`` is used instead when
present. Nothing is downloaded at start time.

With proxies, each server listens on a private port and its proxy takes the
public one (the port in ``stack.json``'s URLs), so the services and the load
generator all pass through it and a toxic or a partition hits every client of
that server. Kafka advertises the proxy's port, or its clients would learn the
broker's own address from the metadata and go around the proxy.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.request
from pathlib import Path

from pipeline._procs import find_binary
from pipeline.exceptions import BinaryMissing, StartupFailed

__all__ = ["PROXIED", "VERSION", "binary", "config", "install", "installed", "proxies_up"]

#: The pinned release (github.com/Shopify/toxiproxy/v2).
VERSION = "2.5.0"
MODULE = "github.com/Shopify/toxiproxy/v2/cmd/server"
#: proxy name -> the stack's port name it stands in front of
PROXIED = {"mqtt": "mqtt", "kafka": "kafka", "redis": "redis"}


def cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "pipeswarm" / f"toxiproxy-{VERSION}"


def _candidates() -> list[str | None]:
    return [
        os.environ.get("PIPESWARM_TOXIPROXY"),
        shutil.which("toxiproxy-server"),
        str(cache_dir() / "server"),
    ]


def installed() -> bool:
    return any(c and os.access(c, os.X_OK) for c in _candidates())


def binary() -> str:
    for c in _candidates():
        if c and os.access(c, os.X_OK):
            return c
    raise BinaryMissing(
        f"Toxiproxy {VERSION} is not installed; run `make setup` "
        "(or `python -m pipeline install-toxiproxy`), or drop --fault-proxies."
    )


def install() -> str:
    """``go install`` the pinned Toxiproxy server into :func:`cache_dir` (skipped if there)."""
    if installed():
        return binary()
    # the Go toolchain's own install puts go in /usr/local/go/bin, often not on PATH
    local = Path("/usr/local/go/bin/go")
    go = str(local) if os.access(local, os.X_OK) else find_binary("go", "golang-go")
    target = cache_dir()
    target.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [go, "install", f"{MODULE}@v{VERSION}"],
        env={**os.environ, "GOBIN": str(target)},
        check=False,
    )
    if done.returncode != 0:
        raise StartupFailed(f"go install of Toxiproxy {VERSION} failed (exit {done.returncode}).")
    return binary()


def config(routes: dict[str, tuple[int, int]]) -> str:
    """The ``-config`` JSON: one proxy per route, name -> (listen port, upstream port)."""
    return json.dumps(
        [
            {
                "name": name,
                "listen": f"127.0.0.1:{listen}",
                "upstream": f"127.0.0.1:{upstream}",
                "enabled": True,
            }
            for name, (listen, upstream) in routes.items()
        ]
    )


def proxies_up(api_port: int, names: list[str]) -> bool:
    """The API answers and every proxy in ``names`` exists and is enabled."""
    url = f"http://127.0.0.1:{api_port}/proxies"
    with urllib.request.urlopen(url, timeout=1) as resp:  # noqa: S310 - loopback only
        have = json.loads(resp.read())
    return all(n in have and have[n].get("enabled") for n in names)
