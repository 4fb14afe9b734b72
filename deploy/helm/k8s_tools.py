"""Helm, kubeconform and the Kubernetes JSON schemas, for checking the chart offline.

    python deploy/helm/k8s_tools.py install    # make setup runs it; skipped when there
    python deploy/helm/k8s_tools.py installed  # exit 0 when all three are there
    python deploy/helm/k8s_tools.py env        # HELM=..., KUBECONFORM=..., SCHEMA_LOCATION=...

Helm and kubeconform are built with ``go install`` through the Go module proxy into
``~/.cache/pipeswarm/<tool>-<version>/`` (as Toxiproxy is, ``pipeline/_toxiproxy.py``);
a ``helm``/``kubeconform`` on PATH, or ``$PIPESWARM_HELM``/``$PIPESWARM_KUBECONFORM``,
is used instead when present.

kubeconform fetches its schemas from GitHub by default, which a machine that only
reaches package registries cannot. The schemas come from the ``kubernetes-validate``
wheel on PyPI instead (``pip download``; it bundles the schemas of Kubernetes 1.25 and
later). Its files ``$ref`` one shared ``/api/_definitions.json`` by an absolute URL, so
each kind is rewritten here into a standalone schema, the layout kubeconform reads
(``v1.34.0-standalone-strict/deployment-apps-v1.json``): the definitions it uses are
copied into its own ``$defs``. Only kinds (schemas with a group-version-kind) are kept.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

__all__ = [
    "KUBERNETES_VERSION",
    "TOOLS",
    "binary",
    "install",
    "installed",
    "kubeconform_args",
    "schema_dir",
]

#: the Kubernetes release the chart is validated against (kubeconform -kubernetes-version)
KUBERNETES_VERSION = "1.34.0"
#: PyPI wheel that bundles the schemas (kubernetes-validate's own version, not Kubernetes')
SCHEMAS_WHEEL = ("kubernetes-validate", "1.37.0")
#: name -> (go package, pinned version)
TOOLS = {
    "helm": ("helm.sh/helm/v3/cmd/helm", "3.22.0"),
    "kubeconform": ("github.com/yannh/kubeconform/cmd/kubeconform", "0.7.0"),
}
_REF_PREFIX = "/api/_definitions.json#/$defs/"
_FLAVOURS = {"local": "standalone", "local-strict": "standalone-strict"}


def cache_root() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "pipeswarm"


def _candidates(name: str) -> list[str | None]:
    version = TOOLS[name][1]
    return [
        os.environ.get(f"PIPESWARM_{name.upper()}"),
        shutil.which(name),
        str(cache_root() / f"{name}-{version}" / name),
    ]


def binary(name: str) -> str | None:
    """The usable ``helm`` or ``kubeconform``, or None."""
    return next((c for c in _candidates(name) if c and os.access(c, os.X_OK)), None)


def schema_dir() -> Path:
    """Holds ``v<KUBERNETES_VERSION>-standalone[-strict]/<kind>-<group>-<version>.json``."""
    return cache_root() / f"k8s-schemas-{SCHEMAS_WHEEL[1]}"


def _schemas_done() -> Path:
    return schema_dir() / f"v{KUBERNETES_VERSION}.done"


def installed() -> bool:
    return all(binary(n) for n in TOOLS) and _schemas_done().exists()


def kubeconform_args() -> list[str]:
    """The flags that make kubeconform read only the local schemas."""
    location = (
        f"{schema_dir()}/{{{{ .NormalizedKubernetesVersion }}}}-standalone{{{{ .StrictSuffix }}}}"
        "/{{ .ResourceKind }}{{ .KindSuffix }}.json"
    )
    return ["-kubernetes-version", KUBERNETES_VERSION, "-schema-location", location]


def _go() -> str:
    # the Go toolchain's own install puts go in /usr/local/go/bin, often not on PATH
    local = Path("/usr/local/go/bin/go")
    found = str(local) if os.access(local, os.X_OK) else shutil.which("go")
    if not found:
        sys.exit("k8s_tools: `go` is not installed; run `make setup` (it installs golang-go).")
    return found


def _go_install(name: str) -> None:
    package, version = TOOLS[name]
    target = cache_root() / f"{name}-{version}"
    target.mkdir(parents=True, exist_ok=True)
    print(f"k8s_tools: go install {package}@v{version}", flush=True)
    done = subprocess.run(
        [_go(), "install", f"{package}@v{version}"],
        env={**os.environ, "GOBIN": str(target)},
        check=False,
    )
    if done.returncode != 0:
        sys.exit(f"k8s_tools: go install of {name} {version} failed (exit {done.returncode}).")


def _standalone(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with every definition it reaches (transitively) in its own ``$defs``."""
    text = json.dumps(schema).replace(_REF_PREFIX, "#/$defs/")
    used: dict[str, Any] = {}
    todo = _refs(text)
    while todo:
        name = todo.pop()
        if name in used:
            continue
        used[name] = defs[name]
        todo |= _refs(json.dumps(defs[name])) - used.keys()
    out: dict[str, Any] = json.loads(text)
    out.pop("$id", None)  # the refs are local now; the id would send them to kubernetes.io
    out["$defs"] = used
    return out


def _refs(text: str) -> set[str]:
    marker = '"$ref": "#/$defs/'
    names = set()
    at = text.find(marker)
    while at >= 0:
        start = at + len(marker)
        names.add(text[start : text.index('"', start)])
        at = text.find(marker, start)
    return names


def _install_schemas() -> None:
    name, version = SCHEMAS_WHEEL
    print(f"k8s_tools: Kubernetes {KUBERNETES_VERSION} schemas from {name} {version}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check",
             "--no-deps", "-d", tmp, f"{name}=={version}"],
            check=True,
        )  # fmt: skip
        wheel = zipfile.ZipFile(next(Path(tmp).glob("*.whl")))
        base = f"kubernetes_validate/kubernetes-json-schema/v{KUBERNETES_VERSION}"
        for flavour, layout in _FLAVOURS.items():
            folder = f"{base}-{flavour}/"
            defs = json.loads(wheel.read(folder + "_definitions.json"))["$defs"]
            out = schema_dir() / f"v{KUBERNETES_VERSION}-{layout}"
            out.mkdir(parents=True, exist_ok=True)
            for member in wheel.namelist():
                if not member.startswith(folder) or member.endswith("_definitions.json"):
                    continue
                schema = json.loads(wheel.read(member))
                if "x-kubernetes-group-version-kind" in schema:
                    target = out / member.rsplit("/", 1)[1]
                    target.write_text(json.dumps(_standalone(schema, defs)))
    _schemas_done().touch()


def install() -> None:
    """Build what is missing; each part is skipped when it is there."""
    for name in TOOLS:
        if not binary(name):
            _go_install(name)
    if not _schemas_done().exists():
        _install_schemas()


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "install"
    if command == "installed":
        return 0 if installed() else 1
    if command == "install":
        install()
        return 0
    if command == "env":
        # shell assignments, for eval "$(python deploy/helm/k8s_tools.py env)"
        print(f"HELM={shlex.quote(binary('helm') or '')}")
        print(f"KUBECONFORM={shlex.quote(binary('kubeconform') or '')}")
        print(f"KUBECONFORM_ARGS={shlex.quote(shlex.join(kubeconform_args()))}")
        return 0
    print(f"k8s_tools: unknown command {command!r}; use install, installed or env.")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
