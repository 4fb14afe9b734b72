"""The network actions against a real Toxiproxy: toxics added and removed, a proxy cut and healed."""

from __future__ import annotations

import socket
import time

import pytest

from pipeline import _toxiproxy
from pipeline._procs import free_port, spawn, wait_until
from telemetry._fault_actions import ToxiproxyExecutor
from telemetry._fault_spec import parse_faults


@pytest.fixture(scope="module")
def toxiproxy(tmp_path_factory, mqtt_url):
    """A Toxiproxy with one proxy, ``mqtt``, in front of the session's real Mosquitto."""
    tmp = tmp_path_factory.mktemp("toxiproxy")
    api, listen = free_port(), free_port()
    upstream = int(mqtt_url.rsplit(":", 1)[1])
    conf = tmp / "toxiproxy.json"
    conf.write_text(_toxiproxy.config({"mqtt": (listen, upstream)}))
    argv = [_toxiproxy.binary(), "-host", "127.0.0.1", "-port", str(api), "-config", str(conf)]
    proc, popen = spawn("toxiproxy", argv, tmp)
    try:
        wait_until(lambda: _toxiproxy.proxies_up(api, ["mqtt"]), 10, "Toxiproxy", popen)
        yield f"http://127.0.0.1:{api}", listen
    finally:
        proc.stop()


#: a CONNECT -> CONNACK without a toxic, ms: loopback, well under the 300 ms the 150-ms toxic
#: adds, with room for a busy box
FAST_MS = 200


def _connect_ms(port: int) -> float:
    """Time of an MQTT CONNECT -> CONNACK through the proxy, ms."""
    connect = bytes.fromhex("101000044d5154540402003c000474657374")  # MQTT 3.1.1, id "test"
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        began = time.perf_counter()
        s.sendall(connect)
        assert s.recv(4)[:1] == b"\x20"  # CONNACK
        return (time.perf_counter() - began) * 1000


def test_latency_is_added_both_ways_and_removed(toxiproxy):
    url, port = toxiproxy
    executor = ToxiproxyExecutor(url)
    (fault,) = parse_faults("latency:mqtt@0s+1s:delay=150ms")
    assert _connect_ms(port) < FAST_MS
    assert executor.do(fault).ok
    toxics = executor.request("GET", "/proxies/mqtt/toxics")
    assert {(t["type"], t["stream"]) for t in toxics} == {
        ("latency", "upstream"),
        ("latency", "downstream"),
    }
    assert _connect_ms(port) >= 290  # 150 ms each way
    undo = executor.undo(fault)
    assert undo is not None and undo.ok
    assert executor.request("GET", "/proxies/mqtt/toxics") == []
    assert _connect_ms(port) < FAST_MS


def test_a_partition_cuts_the_proxy_until_healed(toxiproxy):
    url, port = toxiproxy
    executor = ToxiproxyExecutor(url)
    (fault,) = parse_faults("partition:mqtt@0s+1s")
    assert executor.do(fault).ok
    with pytest.raises(OSError):
        _connect_ms(port)
    assert executor.undo(fault).ok  # type: ignore[union-attr]
    assert _connect_ms(port) < FAST_MS


def test_netem_and_bandwidth_toxics_are_accepted_and_a_missing_proxy_is_reported(toxiproxy):
    url, _ = toxiproxy
    executor = ToxiproxyExecutor(url)
    for text in ("netem:mqtt@0s+1s:delay=10ms,loss=5%", "bandwidth:mqtt@0s+1s:rate=64KB"):
        (fault,) = parse_faults(text)
        assert executor.do(fault).ok, text
        assert len(executor.request("GET", "/proxies/mqtt/toxics")) in (2, 4)
        assert executor.undo(fault).ok  # type: ignore[union-attr]
        assert executor.request("GET", "/proxies/mqtt/toxics") == []
    (fault,) = parse_faults("partition:nowhere@0s+1s", free_components=True)
    outcome = executor.do(fault)
    assert outcome.exit_code == 404 and not outcome.ok


def test_a_proxy_the_server_does_not_have_stops_the_run_before_it_starts(toxiproxy, tmp_path):
    import argparse

    from locust.env import Environment
    from locust.event import Events

    from telemetry import faults
    from telemetry.exceptions import FaultError

    url, _ = toxiproxy
    options = argparse.Namespace(
        faults="partition:kafka@1s+1s", fault_command="", toxiproxy_url=url, run_time=None
    )
    env = Environment(events=Events(), parsed_options=options)
    with pytest.raises(FaultError, match=r"Toxiproxy at .* has no proxy 'kafka' \(it has mqtt\)"):
        faults.load_schedule(env)
    options.faults = "latency:mqtt@1s+1s:delay=5ms"
    assert [f.component for f in faults.load_schedule(env)] == ["mqtt"]
