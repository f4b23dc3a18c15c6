"""Every pod in k8s/ and every pod the DAG launches passes the restricted Pod Security Standard.

The checker itself is tested first: a compliant pod passes, and each single change that the
restricted profile forbids is caught, by name.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
from manifests import NAMESPACE, load_documents, manifest_files, one, pod_templates
from pod_security_standard import restricted_violations


def compliant_pod() -> dict[str, Any]:
    return {
        "metadata": {"name": "step"},
        "spec": {
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 10001,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "base",
                    "image": "example/image:1",
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                    },
                    "ports": [{"name": "metrics", "containerPort": 9464}],
                }
            ],
            "volumes": [
                {"name": "tmp", "emptyDir": {}},
                {"name": "creds", "secret": {"secretName": "s"}},
                {"name": "data", "persistentVolumeClaim": {"claimName": "c"}},
            ],
        },
    }


def _container(pod: dict[str, Any]) -> dict[str, Any]:
    return pod["spec"]["containers"][0]


def _add_sidecar(pod: dict[str, Any]) -> None:
    # What KubernetesPodOperator's XCom sidecar looks like without a security context.
    pod["spec"]["containers"].append({"name": "airflow-xcom-sidecar", "image": "alpine"})


MUTATIONS: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "host network": (lambda p: p["spec"].update(hostNetwork=True), "hostNamespaces"),
    "host PID": (lambda p: p["spec"].update(hostPID=True), "hostNamespaces"),
    "host IPC": (lambda p: p["spec"].update(hostIPC=True), "hostNamespaces"),
    "privileged": (
        lambda p: _container(p)["securityContext"].update(privileged=True),
        "privileged",
    ),
    "SYS_ADMIN added": (
        lambda p: _container(p)["securityContext"]["capabilities"].update(add=["SYS_ADMIN"]),
        "capabilities",
    ),
    "CHOWN added (baseline allows it, restricted does not)": (
        lambda p: _container(p)["securityContext"]["capabilities"].update(add=["CHOWN"]),
        "capabilities",
    ),
    "capabilities not dropped": (
        lambda p: _container(p)["securityContext"].pop("capabilities"),
        "capabilities",
    ),
    "hostPath volume": (
        lambda p: p["spec"]["volumes"].append({"name": "h", "hostPath": {"path": "/"}}),
        "hostPathVolumes",
    ),
    "nfs volume": (
        lambda p: p["spec"]["volumes"].append({"name": "n", "nfs": {"server": "x", "path": "/"}}),
        "restrictedVolumes",
    ),
    "host port": (lambda p: _container(p)["ports"][0].update(hostPort=9464), "hostPorts"),
    "unmasked /proc": (
        lambda p: _container(p)["securityContext"].update(procMount="Unmasked"),
        "procMount",
    ),
    "custom SELinux user": (
        lambda p: p["spec"]["securityContext"].update(seLinuxOptions={"user": "system_u"}),
        "seLinuxOptions",
    ),
    "unconfined AppArmor annotation": (
        lambda p: p["metadata"].update(
            annotations={"container.apparmor.security.beta.kubernetes.io/base": "unconfined"}
        ),
        "appArmorProfile",
    ),
    "unsafe sysctl": (
        lambda p: p["spec"]["securityContext"].update(
            sysctls=[{"name": "kernel.msgmax", "value": "1"}]
        ),
        "sysctls",
    ),
    "probe on another host": (
        lambda p: _container(p).update(
            livenessProbe={"httpGet": {"host": "10.0.0.1", "path": "/", "port": 80}}
        ),
        "hostProbesAndLifecycleHooks",
    ),
    "privilege escalation allowed": (
        lambda p: _container(p)["securityContext"].update(allowPrivilegeEscalation=True),
        "allowPrivilegeEscalation",
    ),
    "privilege escalation unset": (
        lambda p: _container(p)["securityContext"].pop("allowPrivilegeEscalation"),
        "allowPrivilegeEscalation",
    ),
    "runAsNonRoot unset": (
        lambda p: p["spec"]["securityContext"].pop("runAsNonRoot"),
        "runAsNonRoot",
    ),
    "container overrides runAsNonRoot": (
        lambda p: _container(p)["securityContext"].update(runAsNonRoot=False),
        "runAsNonRoot",
    ),
    "runs as UID 0": (
        lambda p: _container(p)["securityContext"].update(runAsUser=0),
        "runAsUser",
    ),
    "no seccomp profile": (
        lambda p: p["spec"]["securityContext"].pop("seccompProfile"),
        "seccompProfile",
    ),
    "unconfined seccomp in a container": (
        lambda p: _container(p)["securityContext"].update(seccompProfile={"type": "Unconfined"}),
        "seccompProfile",
    ),
    "sidecar without a security context": (_add_sidecar, "allowPrivilegeEscalation"),
    "Windows host process": (
        lambda p: p["spec"]["securityContext"].update(windowsOptions={"hostProcess": True}),
        "windowsHostProcess",
    ),
}


def test_a_compliant_pod_passes() -> None:
    pod = compliant_pod()
    assert restricted_violations(pod["metadata"], pod["spec"]) == []


def test_net_bind_service_is_the_one_capability_a_restricted_pod_may_add() -> None:
    pod = compliant_pod()
    _container(pod)["securityContext"]["capabilities"]["add"] = ["NET_BIND_SERVICE"]
    assert restricted_violations(pod["metadata"], pod["spec"]) == []


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_each_forbidden_setting_is_caught(mutation: str) -> None:
    change, check = MUTATIONS[mutation]
    pod = copy.deepcopy(compliant_pod())
    change(pod)
    violations = restricted_violations(pod["metadata"], pod["spec"])
    assert any(v.startswith(f"{check}:") for v in violations), violations


def _pods_in_manifests() -> list[tuple[str, dict[str, Any]]]:
    pods = []
    for path in manifest_files():
        for obj in load_documents(path):
            for pod in pod_templates(obj):
                pods.append((f"{path.name}:{obj['kind']}/{obj['metadata']['name']}", pod))
    return pods


def test_k8s_has_pods_to_check() -> None:
    names = [name for name, _ in _pods_in_manifests()]
    assert any(name.startswith("pod-template.yaml:Pod/") for name in names), names
    assert any(":Deployment/pushgateway" in name for name in names), names


@pytest.mark.parametrize(("name", "pod"), _pods_in_manifests(), ids=lambda v: str(v)[:60])
def test_every_pod_in_k8s_is_restricted(name: str, pod: dict[str, Any]) -> None:
    violations = restricted_violations(pod.get("metadata"), pod["spec"])
    assert not violations, f"{name}:\n" + "\n".join(violations)


def test_every_built_pod_is_restricted(built: dict[str, list[dict[str, Any]]]) -> None:
    checked = 0
    for kustomization, objects in built.items():
        for obj in objects:
            for pod in pod_templates(obj):
                violations = restricted_violations(pod.get("metadata"), pod["spec"])
                assert not violations, f"{kustomization} {obj['kind']}: " + "\n".join(violations)
                checked += 1
    assert checked >= len(built)


def test_every_pod_the_dag_launches_is_restricted(dag_pods: dict[str, dict[str, Any]]) -> None:
    for task_id, launched in dag_pods.items():
        pod = launched["pod"]
        violations = restricted_violations(pod["metadata"], pod["spec"])
        assert not violations, f"task {task_id}:\n" + "\n".join(violations)


def test_the_namespace_enforces_the_restricted_standard(
    built: dict[str, list[dict[str, Any]]],
) -> None:
    for objects in built.values():
        namespace_labels = one(objects, "Namespace", NAMESPACE)["metadata"]["labels"]
        for mode in ("enforce", "audit", "warn"):
            assert namespace_labels[f"pod-security.kubernetes.io/{mode}"] == "restricted"
            assert namespace_labels[f"pod-security.kubernetes.io/{mode}-version"] == "latest"
