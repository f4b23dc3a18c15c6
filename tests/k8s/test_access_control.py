"""Least privilege: the launcher may do exactly what KubernetesPodOperator and the DAG's TFJob
launcher do, nobody else may do anything.

The operator's needs are read from the installed provider's own source (every Kubernetes API call
in the pod operator and its pod manager), so a provider upgrade that starts calling something new
fails here instead of in the first nightly run; the TFJob launcher's from its own source
(dags/lstm_retrain/tfjob.py).
"""

from __future__ import annotations

import re
from pathlib import Path

import airflow.providers.cncf.kubernetes as provider
from manifests import NAMESPACE, REPO, find, one

LAUNCHER_ROLE = "plateau-lstm-pod-launcher"
LAUNCHER_ACCOUNT = "plateau-lstm-launcher"

TFJOB_LAUNCHER = REPO / "dags" / "lstm_retrain" / "tfjob.py"

# What the Role grants, by (API group, resource), and why (the provider's "Kubernetes RBAC
# permissions" page; the role's comments for the TFJob).
EXPECTED_RULES = {
    ("", "pods"): {"create", "get", "list", "watch", "patch", "delete"},
    ("", "pods/log"): {"get"},
    ("", "pods/exec"): {"create", "get"},
    ("", "events"): {"list", "watch"},
    ("kubeflow.org", "tfjobs"): {"create", "get", "delete"},
}
# Granted although no call below maps to it: watching pods and events is how the deferrable
# trigger and reattaching follow a pod; an exec websocket is authorized as `create` from
# Kubernetes 1.35 on.
GRANTED_BEYOND_CALLS = {
    ("", "pods", "watch"),
    ("", "events", "watch"),
    ("", "pods/exec", "create"),
}

# CoreV1Api method -> (resource, verb) as the API server authorizes it.
_CALL = re.compile(
    r"\b(create|read|list|patch|delete|replace|connect_get|connect_post)_namespaced_(pod_log|pod_exec|pod|event)\b"
)
_VERBS = {
    "create": "create",
    "get": "get",
    "read": "get",
    "list": "list",
    "patch": "patch",
    "delete": "delete",
    "replace": "update",
    "connect_get": "get",
    "connect_post": "create",
}
_RESOURCES = {"pod": "pods", "pod_log": "pods/log", "pod_exec": "pods/exec", "event": "events"}
# KubernetesHook method for custom objects -> verb; the TFJob launcher calls them for tfjobs only.
_CUSTOM_CALL = re.compile(r"\b(create|get|list|patch|delete|replace)_custom_object\b")


def _core_calls(source: str) -> set[tuple[str, str, str]]:
    return {("", _RESOURCES[kind], _VERBS[action]) for action, kind in _CALL.findall(source)}


def calls_of_the_pod_operator() -> set[tuple[str, str, str]]:
    root = Path(provider.__file__).parent
    needed = set()
    for source in (root / "operators" / "pod.py", root / "utils" / "pod_manager.py"):
        needed |= _core_calls(source.read_text(encoding="utf-8"))
    return needed


def calls_of_the_tfjob_launcher() -> set[tuple[str, str, str]]:
    source = TFJOB_LAUNCHER.read_text(encoding="utf-8")
    # The one kind of custom object it handles.
    assert re.search(r'GROUP, VERSION, PLURAL, KIND = "kubeflow.org", "v1", "tfjobs"', source)
    actions = _CUSTOM_CALL.findall(source)
    return _core_calls(source) | {("kubeflow.org", "tfjobs", _VERBS[a]) for a in actions}


def granted(role: dict) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_the_role_grants_exactly_the_launch_permissions(base_objects) -> None:
    role = one(base_objects, "Role", LAUNCHER_ROLE)
    assert role["metadata"]["namespace"] == NAMESPACE
    assert granted(role) == {(g, r, v) for (g, r), verbs in EXPECTED_RULES.items() for v in verbs}


def test_every_call_the_pod_operator_and_the_tfjob_launcher_make_is_granted(base_objects) -> None:
    pod_calls, tfjob_calls = calls_of_the_pod_operator(), calls_of_the_tfjob_launcher()
    assert ("", "pods", "create") in pod_calls and ("", "pods/log", "get") in pod_calls
    assert ("kubeflow.org", "tfjobs", "create") in tfjob_calls  # the scans work
    assert ("", "pods/log", "get") in tfjob_calls
    calls = pod_calls | tfjob_calls
    role = one(base_objects, "Role", LAUNCHER_ROLE)
    assert calls <= granted(role), calls - granted(role)
    assert granted(role) - calls <= GRANTED_BEYOND_CALLS, granted(role) - calls


def test_nothing_is_granted_cluster_wide_or_by_wildcard(built) -> None:
    for kustomization, objects in built.items():
        assert not find(objects, "ClusterRole"), kustomization
        assert not find(objects, "ClusterRoleBinding"), kustomization
        for role in find(objects, "Role"):
            for rule in role["rules"]:
                for field in ("apiGroups", "resources", "verbs"):
                    assert "*" not in rule[field], (kustomization, role["metadata"]["name"])
                assert "secrets" not in rule["resources"]


def test_only_airflows_account_is_bound_to_the_launcher_role(built) -> None:
    for kustomization, objects in built.items():
        (binding,) = find(objects, "RoleBinding")
        assert binding["metadata"]["namespace"] == NAMESPACE
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": LAUNCHER_ROLE,
        }
        launcher = one(objects, "ServiceAccount", LAUNCHER_ACCOUNT)
        airflow_namespace = launcher["metadata"]["namespace"]
        assert airflow_namespace != NAMESPACE
        assert all(s["kind"] == "ServiceAccount" for s in binding["subjects"]), kustomization
        assert {s["namespace"] for s in binding["subjects"]} == {airflow_namespace}
        assert LAUNCHER_ACCOUNT in [s["name"] for s in binding["subjects"]]


def test_workload_accounts_have_no_token_and_no_rights(built) -> None:
    for kustomization, objects in built.items():
        bound = {s["name"] for b in find(objects, "RoleBinding") for s in b["subjects"]}
        for account in find(objects, "ServiceAccount"):
            if account["metadata"]["name"] == LAUNCHER_ACCOUNT:
                continue
            assert account["automountServiceAccountToken"] is False, kustomization
            assert account["metadata"]["name"] not in bound, kustomization
        for deployment in find(objects, "Deployment"):
            spec = deployment["spec"]["template"]["spec"]
            assert spec["automountServiceAccountToken"] is False
            assert spec["serviceAccountName"] in {
                a["metadata"]["name"] for a in find(objects, "ServiceAccount")
            }
