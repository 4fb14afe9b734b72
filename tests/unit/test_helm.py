"""deploy/helm/pipeswarm renders valid Kubernetes objects wired as a swarm (no cluster here).

`helm lint`, `helm template` and kubeconform ``-strict`` against the Kubernetes schemas
that ``deploy/helm/k8s_tools.py`` keeps in ~/.cache/pipeswarm (``make setup`` builds helm and
kubeconform with ``go install`` and unpacks the schemas; nothing is fetched from GitHub).
The master's and the workers' command lines are parsed back by Locust's own parser with
pipeswarm's options registered, so an option that would not reach Locust fails here.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

# the first test builds helm and kubeconform when `make setup` has not (minutes on 2 cores)
pytestmark = pytest.mark.timeout(1200)

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "pipeswarm"
CONF_PATH = "/etc/pipeswarm/locust.conf"

_spec = importlib.util.spec_from_file_location(
    "k8s_tools", ROOT / "deploy" / "helm" / "k8s_tools.py"
)
assert _spec is not None and _spec.loader is not None
k8s_tools = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(k8s_tools)


@pytest.fixture(scope="session")
def tools(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """helm and kubeconform (installed when missing; a skip only when that is impossible)."""
    if not k8s_tools.installed():
        try:
            k8s_tools.install()
        except (SystemExit, OSError, subprocess.CalledProcessError) as exc:
            why = (
                f"helm/kubeconform/schemas cannot be installed ({exc}); `make setup` installs them"
            )
            if os.environ.get("CI"):
                pytest.fail(why)  # CI ran `make setup`: missing tools there are a defect
            pytest.skip(why)
    home = tmp_path_factory.mktemp("helm-home")
    env = {**os.environ, **{f"HELM_{d}_HOME": str(home / d) for d in ("CACHE", "CONFIG", "DATA")}}
    return {
        "helm": k8s_tools.binary("helm"),
        "kubeconform": k8s_tools.binary("kubeconform"),
        "env": env,
    }


def helm(tools: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tools["helm"], *args], capture_output=True, text=True, timeout=60, env=tools["env"]
    )


def template(tools: dict[str, Any], *sets: str) -> str:
    args = [a for s in sets for a in ("--set", s)]
    done = helm(tools, "template", "swarm", str(CHART), *args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def objects(text: str) -> dict[tuple[str, str], dict[str, Any]]:
    """(kind, name) -> object."""
    docs = [d for d in yaml.safe_load_all(text) if d]
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def kubeconform(tools: dict[str, Any], text: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tools["kubeconform"], "-strict", "-summary", *k8s_tools.kubeconform_args()],
        input=text, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def container(objs: dict[tuple[str, str], dict[str, Any]], name: str) -> dict[str, Any]:
    pod = objs[("Deployment", f"swarm-pipeswarm-{name}")]["spec"]["template"]["spec"]
    return pod["containers"][0]


def parse_locust(
    args: list[str], conf: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Any:
    """``args`` as the container's ``locust`` would read them, the ConfigMap's locust.conf included."""
    from locust.argument_parser import get_parser

    import users.shapes  # noqa: F401 - registers every pipeswarm option group

    for var in [v for v in os.environ if v.startswith(("LOCUST_", "PIPESWARM_"))]:
        monkeypatch.delenv(var)  # the environment would win over the config file
    path = tmp_path / "locust.conf"
    path.write_text(conf)
    local = [a.replace(CONF_PATH, str(path)) for a in args]
    assert local != args, "the command line names no --config"
    return get_parser(default_config_files=[]).parse_args(local)


def test_chart_lints_with_defaults_and_with_the_pipeline(tools):
    for extra in ([], ["--set", "pipeline.enabled=true", "--set", "worker.replicas=8"]):
        done = helm(tools, "lint", "--strict", str(CHART), *extra)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "0 chart(s) failed" in done.stdout


@pytest.mark.parametrize(
    ("sets", "count"),
    [
        ((), 4),  # ConfigMap, master Deployment + Service, worker Deployment
        (("pipeline.enabled=true", "worker.replicas=6", "options.headless=true",
          "locustfileContent=from users import MqttDevice"), 17),
    ],
)  # fmt: skip
def test_rendered_objects_pass_kubeconform_strict(tools, sets, count):
    done = kubeconform(tools, template(tools, *sets))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{count} resources found" in done.stdout
    assert f"Valid: {count}, Invalid: 0, Errors: 0, Skipped: 0" in done.stdout


def test_kubeconform_rejects_what_the_schemas_forbid(tools):
    """The local schemas are really used: a string replica count is refused."""
    done = kubeconform(tools, template(tools, "worker.replicas=many"))
    assert done.returncode == 1
    assert "/spec/replicas" in done.stdout
    assert "Invalid: 1" in done.stdout


def test_workers_scale_and_connect_to_the_master_service(tools, tmp_path, monkeypatch):
    objs = objects(template(tools, "worker.replicas=7", "options.device-interval=0.25",
                            "options.users=40", "options.spawn-rate=5"))  # fmt: skip
    assert objs[("Deployment", "swarm-pipeswarm-worker")]["spec"]["replicas"] == 7
    assert objs[("Deployment", "swarm-pipeswarm-master")]["spec"]["replicas"] == 1
    conf = objs[("ConfigMap", "swarm-pipeswarm")]["data"]["locust.conf"]

    worker = container(objs, "worker")
    opts = parse_locust(worker["command"][1:] + worker["args"], conf, tmp_path, monkeypatch)
    assert opts.worker and not opts.master
    assert (opts.master_host, opts.master_port) == ("swarm-pipeswarm-master", 5557)
    assert (opts.device_interval, opts.num_users, opts.spawn_rate) == (0.25, 40, 5)
    assert opts.locustfile == "locustfiles/pipeline.py"

    master = container(objs, "master")
    opts = parse_locust(master["command"][1:] + master["args"], conf, tmp_path, monkeypatch)
    assert opts.master and not opts.worker
    assert (opts.master_bind_port, opts.web_port, opts.prometheus_port) == (5557, 8089, 9646)
    assert (opts.device_interval, opts.num_users) == (0.25, 40)

    # the Service the workers name selects the master's pod and exposes its ports by name
    service = objs[("Service", "swarm-pipeswarm-master")]["spec"]
    pod_labels = objs[("Deployment", "swarm-pipeswarm-master")]["spec"]["template"]["metadata"][
        "labels"
    ]
    assert service["selector"].items() <= pod_labels.items()
    ports = {p["name"]: p["containerPort"] for p in master["ports"]}
    assert {p["port"]: ports[p["targetPort"]] for p in service["ports"]} == {
        5557: 5557, 8089: 8089, 9646: 9646
    }  # fmt: skip
    assert master["readinessProbe"]["httpGet"] == {"path": "/", "port": "web"}


def test_master_and_workers_run_as_non_root_with_a_read_only_root(tools):
    objs = objects(template(tools))
    for name in ("master", "worker"):
        pod = objs[("Deployment", f"swarm-pipeswarm-{name}")]["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        assert pod["enableServiceLinks"] is False
        c = pod["containers"][0]
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert set(c["resources"]) == {"requests", "limits"}
        mounts = {m["mountPath"] for m in c["volumeMounts"]}
        assert {"/tmp", "/etc/pipeswarm"} <= mounts
    master_mounts = {m["mountPath"] for m in container(objs, "master")["volumeMounts"]}
    assert "/app/results" in master_mounts  # where the results folder is written


def test_the_pipeline_services_point_the_load_and_each_other_at_the_cluster(
    tools, tmp_path, monkeypatch
):
    objs = objects(template(tools, "pipeline.enabled=true", "options.mqtt-url=mqtt://other:1883"))
    names = {name for kind, name in objs if kind == "Deployment"}
    assert names == {f"swarm-pipeswarm-{n}" for n in
                     ("master", "worker", "mosquitto", "redis", "kafka", "bridge", "consumer", "gateway")}  # fmt: skip
    services = {name for kind, name in objs if kind == "Service"}
    assert services == names - {"swarm-pipeswarm-worker"}

    env = {e["name"]: e["value"] for e in container(objs, "bridge")["env"]}
    assert env["MQTT_URL"] == "mqtt://swarm-pipeswarm-mosquitto:1883"
    assert env["KAFKA_BOOTSTRAP_SERVERS"] == "swarm-pipeswarm-kafka:9092"
    assert env["REDIS_URL"] == "redis://swarm-pipeswarm-redis:6379/0"
    assert container(objs, "bridge")["command"] == ["python", "-m", "pipeline.bridge"]

    # the broker's settings are docker-compose's (deploy/mosquitto.conf), not a drifting copy
    def directives(text: str) -> list[str]:
        return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]

    in_chart = objs[("ConfigMap", "swarm-pipeswarm-mosquitto")]["data"]["mosquitto.conf"]
    assert directives(in_chart) == directives((ROOT / "deploy" / "mosquitto.conf").read_text())
    kafka_env = {e["name"]: e["value"] for e in container(objs, "kafka")["env"]}
    assert kafka_env["KAFKA_ADVERTISED_LISTENERS"] == "PLAINTEXT://swarm-pipeswarm-kafka:9092"

    # the load goes to the in-cluster services, except where an option says otherwise
    conf = objs[("ConfigMap", "swarm-pipeswarm")]["data"]["locust.conf"]
    worker = container(objs, "worker")
    opts = parse_locust(worker["command"][1:] + worker["args"], conf, tmp_path, monkeypatch)
    assert opts.mqtt_url == "mqtt://other:1883"
    assert opts.gateway_url == "http://swarm-pipeswarm-gateway:8081"
    assert opts.kafka_bootstrap == "swarm-pipeswarm-kafka:9092"
    assert opts.redis_url == "redis://swarm-pipeswarm-redis:6379/0"

    # a part left out is not deployed and is replaced by its target
    objs = objects(template(tools, "pipeline.enabled=true", "pipeline.kafka.enabled=false",
                            "targets.kafkaBootstrap=kafka.example:9092"))  # fmt: skip
    assert ("Deployment", "swarm-pipeswarm-kafka") not in objs
    env = {e["name"]: e["value"] for e in container(objs, "consumer")["env"]}
    assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka.example:9092"


def test_a_locustfile_of_ones_own_is_mounted_and_used(tools, tmp_path, monkeypatch):
    text = "from users import MqttDevice\n\n\nclass Device(MqttDevice):\n    pass\n"
    done = helm(tools, "template", "swarm", str(CHART), "--set-string", f"locustfileContent={text}")
    assert done.returncode == 0, done.stderr
    objs = objects(done.stdout)
    assert objs[("ConfigMap", "swarm-pipeswarm")]["data"]["locustfile.py"] == text
    worker = container(objs, "worker")
    conf = objs[("ConfigMap", "swarm-pipeswarm")]["data"]["locust.conf"]
    opts = parse_locust(worker["command"][1:] + worker["args"], conf, tmp_path, monkeypatch)
    assert opts.locustfile == "/etc/pipeswarm/locustfile.py"
    assert {"name": "PYTHONPATH", "value": "/app"} in worker["env"]  # users/ from the image
