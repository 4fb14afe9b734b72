"""Several hosts, for real: the pipeline, the Locust master and three workers in five
network namespaces on one switch (``tests/netns.py``), traffic crossing the links.

- ``pipe`` (10.77.0.1): the embedded stack, ``up --listen-host 0.0.0.0``;
- ``master`` (10.77.0.2): ``locust --master``;
- ``w1``: devices publishing, and ``near`` STOMP watchers (one clock with the publishers);
- ``w2``: ``far`` STOMP watchers, whose pushes arrive 20 ms late: a Toxiproxy on
  that host delays the gateway's link (this kernel has no ``sch_netem`` for
  ``tc netem``; the proxy delays only the gateway's traffic, not Locust's own,
  so w2's clock offset is measured over an undelayed, symmetric path);
- ``w3``: idle users, SIGKILLed mid-run.

The run must merge the three workers' histograms, lose nothing on either path
although publishers and subscribers are on different hosts, show the 20 ms in
``mqtt→far`` only, report w3 as missing (``run.json`` and the report), and name
every host and address in ``run.json``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline import _toxiproxy
from report import build_report, load_run
from telemetry.hdr import Histogram
from tests import netns
from tests.helpers import wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
LOCUSTFILE = "bench/split_hosts_locustfile.py"
DELAY_MS = 20
MASTER_PORT = "5557"  # inside the master's own namespace: nothing else listens there


def _skip_reason() -> str | None:
    why = netns.unavailable()
    if why is None and not _toxiproxy.installed():
        why = "Toxiproxy is not installed (make setup)"
    return why


@pytest.fixture
def lab():
    why = _skip_reason()
    if why:
        pytest.skip(why)
    with netns.Lab() as lab:
        yield lab


def _env(tmp: Path, **more: str) -> dict[str, str]:
    return {**os.environ, "PATH": os.environ.get("PATH", "") + ":/usr/sbin:/sbin",
            "PIPESWARM_STATE_DIR": str(tmp / "no-stack-file"), **more}  # fmt: skip


def _delaying_proxy(lab: netns.Lab, host: netns.Host, upstream: str, tmp: Path) -> str:
    """A Toxiproxy in ``host`` in front of ``upstream`` with a latency toxic on what comes
    back (the pushes); returns the URL to use in that host."""
    listen, api = "18081", "18474"  # the host's own namespace: free by construction
    conf = tmp / "toxiproxy.json"
    conf.write_text(json.dumps([{"name": "gateway", "listen": f"127.0.0.1:{listen}",
                                 "upstream": upstream, "enabled": True}]))  # fmt: skip
    lab.popen(host, [_toxiproxy.binary(), "-host", "127.0.0.1", "-port", api, "-config",
                     str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    toxic = json.dumps({"type": "latency", "stream": "downstream",
                        "attributes": {"latency": DELAY_MS, "jitter": 0}})  # fmt: skip
    add = (
        "import sys, time, urllib.request\n"
        "for _ in range(200):\n"
        "    try:\n"
        f"        r = urllib.request.Request('http://127.0.0.1:{api}/proxies/gateway/toxics',\n"
        f"            data={toxic!r}.encode(), headers={{'Content-Type': 'application/json'}})\n"
        "        urllib.request.urlopen(r, timeout=1); sys.exit(0)\n"
        "    except OSError: time.sleep(0.05)\n"
        "sys.exit(1)\n"
    )
    assert lab.run(host, [sys.executable, "-c", add], timeout=30).returncode == 0
    return f"http://127.0.0.1:{listen}"


def test_three_workers_on_three_hosts(lab, tmp_path):
    pipe, master, w1, w2, w3 = (lab.host(n) for n in ("pipe", "master", "w1", "w2", "w3"))
    state = tmp_path / "stack"
    py = [sys.executable, "-m", "pipeline", "--state-dir", str(state)]
    up = lab.run(pipe, [*py, "up", "--detach", "--ports", "auto", "--listen-host", "0.0.0.0"],
                 cwd=ROOT, env=_env(tmp_path), timeout=180)  # fmt: skip
    try:
        assert up.returncode == 0, (up.stdout + up.stderr)[-3000:]
        ports = json.loads((state / "stack.json").read_text())["ports"]
        _run(lab, tmp_path, (pipe, master, w1, w2, w3), ports)
    finally:
        lab.run(pipe, [*py, "down"], cwd=ROOT, env=_env(tmp_path), timeout=60)


def _run(lab: netns.Lab, tmp: Path, hosts: tuple[netns.Host, ...], ports: dict) -> None:
    pipe, master, w1, w2, w3 = hosts
    out = tmp / "run"
    urls = ["--mqtt-url", f"mqtt://{pipe.address}:{ports['mqtt']}",
            "--gateway-url", f"http://{pipe.address}:{ports['gateway']}",
            "--kafka-bootstrap", f"{pipe.address}:{ports['kafka']}",
            "--redis-url", f"redis://{pipe.address}:{ports['redis']}/0",
            # the stack's MQTT logins and gateway tokens (its secret, shared as a file here)
            "--mqtt-secret-file", str(tmp / "stack" / "secret"),
            "--jwt-secret=" + (tmp / "stack" / "secret").read_text().strip()]  # fmt: skip
    locust = [sys.executable, "-m", "locust", "-f", LOCUSTFILE, *urls]
    log = (tmp / "master.log").open("w")
    master_proc = lab.popen(master, [
        *locust, "--master", "--headless", "--expect-workers", "3",
        "--master-bind-host", "0.0.0.0", "--master-bind-port", MASTER_PORT,
        "-u", "34", "-r", "34", "-t", "10s", "--e2e-drain", "2",
        "--results-dir", str(out), "--prometheus-port", "0",
    ], cwd=ROOT, env=_env(tmp), stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    far_gateway = _delaying_proxy(lab, w2, f"{pipe.address}:{ports['gateway']}", tmp)
    worker = [*locust, "--worker", "--master-host", master.address, "--master-port", MASTER_PORT]
    roles = ((w1, {"PIPESWARM_TEST_ROLE": "publish,near"}),
             (w2, {"PIPESWARM_TEST_ROLE": "far", "PIPESWARM_TEST_GATEWAY_URL": far_gateway}),
             (w3, {"PIPESWARM_TEST_ROLE": "idle"}))  # fmt: skip
    procs = {
        h.name: lab.popen(h, worker, cwd=ROOT, env=_env(tmp, **env),
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for h, env in roles
    }  # fmt: skip
    master_log = tmp / "master.log"
    wait_for(lambda: "Sending spawn jobs" in master_log.read_text(), timeout=60,
             what="the master to start the test")  # fmt: skip
    time.sleep(3)  # w3 runs its users and reports once (every 3 s) before it dies
    procs["w3"].kill()
    master_proc.wait(timeout=90)
    assert master_proc.returncode in (0, 1), master_log.read_text()[-3000:]

    run = json.loads((out / "run.json").read_text())
    e2e = json.loads((out / "e2e.json").read_text())
    # run.json names the hosts, by name and by address
    assert run["mode"] == "distributed" and run["cross_host_timing"] is True
    assert run["hosts"] == ["master", "w1", "w2", "w3"]
    by_host = {w["host"]: w for w in run["workers"]}
    assert {h: w["address"] for h, w in by_host.items()} == {
        "w1": w1.address, "w2": w2.address, "w3": w3.address}  # fmt: skip
    # the killed worker is reported as such; the others ended normally
    assert by_host["w3"]["state"] == "missing" and by_host["w3"]["final"] is False
    assert by_host["w1"]["final"] and by_host["w2"]["final"]
    assert e2e["complete"] is False
    # one kernel clock under all namespaces: the measured offsets are ~0, within 1 ms or the
    # estimate's own uncertainty (half its best round trip) on a busy box
    for h in ("w1", "w2"):
        clock = by_host[h]["clock"]
        assert abs(clock["offset_ms"]) <= max(1.0, clock["uncertainty_ms"]), clock

    # no false loss across hosts; the merged histogram is every subscriber's deliveries
    paths = e2e["paths"]
    for path in ("mqtt→near", "mqtt→far"):
        t = paths[path]["totals"]
        assert t["lost"] == 0 and t["duplicated"] == 0, (path, t)
        assert t["delivered"] == t["expected"] > 500, (path, t)
        merged = Histogram.decode(paths[path]["latency"]["total"]["hdr"])
        subs = [s for s in e2e["subscribers"] if path in s["counters"]]
        assert merged.count == sum(s["counters"][path]["delivered"] for s in subs) == t["delivered"]
    assert {s["worker"] for s in e2e["subscribers"] if "mqtt→far" in s["counters"]} == {
        by_host["w2"]["id"]}  # fmt: skip
    # the delayed link shows in the far path's last leg (gateway -> subscriber) only
    near = paths["mqtt→near"]["latency"]["push"]["p50_us"] / 1000
    far = paths["mqtt→far"]["latency"]["push"]["p50_us"] / 1000
    assert DELAY_MS * 0.75 < far - near < DELAY_MS * 2, (near, far)

    warnings = " ".join(build_report(load_run(out), charts=False).warnings)
    assert f"(w3, {w3.address}) stopped during the run (Locust state: missing)" in warnings
    assert "corrected to the master's clock" in warnings
