"""The stack's bookkeeping without starting anything: components, ports, metrics parsing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipeline import _kafka_server
from pipeline._health import metric
from pipeline.exceptions import UnknownComponent
from pipeline.stack import Stack


def test_consumer_component_is_every_consumer_process_each_with_its_own_metrics_port():
    s = Stack.with_ports(auto=True, consumers=3)
    assert s.members("consumer") == ["consumer", "consumer-2", "consumer-3"]
    assert s.members("consumer-2") == ["consumer-2"]
    ports = {s._metrics_port(n) for n in s.members("consumer")}
    assert len(ports) == 3 and s.ports["consumer_metrics"] in ports


def test_an_unknown_component_is_one_sentence_naming_the_choices():
    with pytest.raises(
        UnknownComponent, match="unknown component 'zookeeper'; choose one of mosquitto"
    ):
        Stack.with_ports(auto=True).members("zookeeper")


def test_state_file_round_trip_keeps_consumers_and_paused(tmp_path):
    s = Stack.with_ports(auto=True, state_dir=tmp_path, consumers=2)
    s.paused.add("consumer-2")
    s.save()
    back = Stack.load(tmp_path)
    assert back.consumers == 2 and back.paused == {"consumer-2"} and back.ports == s.ports


def test_metric_sums_every_labelled_sample_and_ignores_longer_names():
    text = (
        "# HELP x\n"
        'pipeline_bridge_produced_messages_total{topic="a"} 3.0\n'
        'pipeline_bridge_produced_messages_total{topic="b"} 4.0\n'
        "pipeline_bridge_produced_messages_total_created 99.0\n"
        "pipeline_bridge_buffer_messages 2.0\n"
    )
    assert metric(text, "pipeline_bridge_produced_messages_total") == 7.0
    assert metric(text, "pipeline_bridge_buffer_messages") == 2.0


def test_the_pom_fetches_the_release_the_launcher_expects():
    pom = Path(_kafka_server.POM).read_text()
    assert re.search(r"<kafka.version>([^<]+)</kafka.version>", pom).group(1) == (
        _kafka_server.KAFKA_VERSION
    )


def test_server_properties_are_loopback_only_with_no_auto_created_topics(tmp_path):
    text = _kafka_server.SERVER_PROPERTIES.format(
        port=1, controller_port=2, advertised_port=1, log_dir=tmp_path
    )
    props = dict(line.split("=", 1) for line in text.splitlines() if "=" in line and line[0] != "#")
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:1,CONTROLLER://127.0.0.1:2"
    assert props["auto.create.topics.enable"] == "false"
    assert props["log.dirs"] == str(tmp_path)


def test_a_start_that_never_becomes_healthy_leaves_no_process_behind():
    import subprocess
    import sys

    from pipeline._procs import wait_until
    from pipeline.exceptions import StartupFailed

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    with pytest.raises(StartupFailed, match="did not become healthy within 1 s"):
        wait_until(lambda: False, 1, "the sleeper", child)
    assert child.poll() is not None  # killed and reaped, not left running


def test_fault_proxies_put_the_servers_behind_private_ports_and_kafka_advertises_the_proxy(
    tmp_path,
):
    s = Stack.with_ports(auto=True, state_dir=tmp_path, fault_proxies=True)
    for name in ("mqtt", "kafka", "redis"):
        assert s.listen_port(name) == s.ports[f"{name}_direct"] != s.ports[name]
    assert s.urls["mqtt"].endswith(f":{s.ports['mqtt']}")  # clients use the proxy's port
    assert s.urls["toxiproxy"] == f"http://127.0.0.1:{s.ports['toxiproxy']}"
    s.save()
    back = Stack.load(tmp_path)
    assert back.fault_proxies and back.urls == s.urls
    plain = Stack.with_ports(auto=True)
    assert plain.listen_port("mqtt") == plain.ports["mqtt"] and "toxiproxy" not in plain.urls
    conf = _kafka_server.SERVER_PROPERTIES.format(
        port=1, controller_port=2, advertised_port=3, log_dir="d"
    )
    assert "listeners=PLAINTEXT://127.0.0.1:1," in conf
    assert "advertised.listeners=PLAINTEXT://127.0.0.1:3\n" in conf
