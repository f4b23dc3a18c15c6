"""The pod template, the objects in k8s/, the image and the DAG's pods agree with each other.

The pod template (k8s/base/pod-template.yaml) is the one place the training pods' settings are
written; KubernetesPodOperator reads it. These tests prove that what it names exists in the
kustomization, that the image is built for it, and that the pods the DAG builds from it keep
those settings and fit the namespace's LimitRange and ResourceQuota.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from dockerfile import final, final_env, pairs
from kubernetes.utils import parse_quantity
from manifests import EXAMPLE_SECRET, NAMESPACE, POD_TEMPLATE, REPO, load_documents, matches, one

GPU = "nvidia.com/gpu"


def base_container(pod: dict[str, Any]) -> dict[str, Any]:
    (container,) = [c for c in pod["spec"]["containers"] if c["name"] == "base"]
    return container


def env_value(container: dict[str, Any], name: str) -> str:
    (value,) = [e["value"] for e in container.get("env", []) if e["name"] == name]
    return value


def test_the_container_is_named_base_for_kubernetes_pod_operator(pod_template) -> None:
    assert [c["name"] for c in pod_template["spec"]["containers"]] == ["base"]


def test_the_namespace_exists(pod_template, base_objects) -> None:
    assert pod_template["metadata"]["namespace"] == NAMESPACE
    one(base_objects, "Namespace", NAMESPACE)


def test_the_training_service_account_exists_without_token_or_rights(
    pod_template, base_objects
) -> None:
    name = pod_template["spec"]["serviceAccountName"]
    account = one(base_objects, "ServiceAccount", name)
    assert account["metadata"]["namespace"] == NAMESPACE
    assert account["automountServiceAccountToken"] is False
    assert pod_template["spec"]["automountServiceAccountToken"] is False
    for binding in base_objects:
        if binding["kind"] in ("RoleBinding", "ClusterRoleBinding"):
            assert name not in [s["name"] for s in binding["subjects"]], binding["metadata"]


def test_the_priority_class_exists(pod_template, base_objects) -> None:
    priority = one(base_objects, "PriorityClass", pod_template["spec"]["priorityClassName"])
    assert priority["globalDefault"] is False


def test_s3_settings_come_from_the_config_map_and_credentials_from_a_file(
    pod_template, base_objects
) -> None:
    container = base_container(pod_template)
    (config_name,) = [ref["configMapRef"]["name"] for ref in container["envFrom"]]
    config = one(base_objects, "ConfigMap", config_name)
    assert set(config["data"]) == {"AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION"}

    (volume,) = [v for v in pod_template["spec"]["volumes"] if "secret" in v]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
    assert mount["readOnly"] is True
    (secret,) = load_documents(EXAMPLE_SECRET)
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]
    assert secret["metadata"]["namespace"] == NAMESPACE
    (key,) = secret["stringData"]
    assert env_value(container, "AWS_SHARED_CREDENTIALS_FILE") == f"{mount['mountPath']}/{key}"
    # Credentials never travel as environment variables.
    assert not any(k.startswith("AWS_SECRET") for k in config["data"])
    assert not any(e["name"].startswith("AWS_SECRET") for e in container.get("env", []))


def test_the_pushgateway_url_names_the_pushgateway_service(pod_template, base_objects) -> None:
    url = urlsplit(env_value(base_container(pod_template), "PUSHGATEWAY_URL"))
    service_name, namespace, _ = url.hostname.split(".", 2)
    service = one(base_objects, "Service", service_name)
    assert service["metadata"]["namespace"] == namespace == NAMESPACE
    (port,) = [p for p in service["spec"]["ports"] if p["port"] == url.port]
    deployment = one(base_objects, "Deployment", "pushgateway")
    pod = deployment["spec"]["template"]
    assert matches({"matchLabels": service["spec"]["selector"]}, pod["metadata"]["labels"])
    container_ports = {p["name"]: p["containerPort"] for p in pod["spec"]["containers"][0]["ports"]}
    assert container_ports[port["targetPort"]] == url.port


def test_prometheus_scrapes_the_metrics_port(pod_template, base_objects) -> None:
    ports = {p["name"]: p["containerPort"] for p in base_container(pod_template)["ports"]}
    assert ports["metrics"] == 9464
    monitor = one(base_objects, "PodMonitor", "plateau-lstm-training")
    assert matches(monitor["spec"]["selector"], pod_template["metadata"]["labels"])
    assert [e["port"] for e in monitor["spec"]["podMetricsEndpoints"]] == ["metrics"]


def test_the_image_runs_as_the_template_user_with_a_read_only_root(pod_template) -> None:
    (user,) = final("USER")
    uid, gid = (int(part) for part in user.split(":"))
    context = pod_template["spec"]["securityContext"]
    assert (context["runAsUser"], context["runAsGroup"]) == (uid, gid)
    assert base_container(pod_template)["securityContext"]["readOnlyRootFilesystem"] is True


def test_every_place_the_image_writes_is_a_writable_volume(pod_template) -> None:
    container = base_container(pod_template)
    volumes = {v["name"]: v for v in pod_template["spec"]["volumes"]}
    writable = [
        m["mountPath"]
        for m in container["volumeMounts"]
        if not m.get("readOnly") and "emptyDir" in volumes[m["name"]]
    ]
    env = final_env()
    write_dirs = [
        "HOME",
        "TMPDIR",
        "XDG_CACHE_HOME",
        "XDG_CONFIG_HOME",
        "MPLCONFIGDIR",
        "KERAS_HOME",
    ]
    workdir = final("WORKDIR")[-1]
    for path in [env[name] for name in write_dirs] + [workdir]:
        assert any(Path(path).is_relative_to(mount) for mount in writable), path


def test_the_template_image_is_this_release(pod_template) -> None:
    with (REPO / "pyproject.toml").open("rb") as handle:
        version = tomllib.load(handle)["project"]["version"]
    image = base_container(pod_template)["image"]
    assert image.rsplit(":", 1)[1] == version
    assert pairs("ARG")["VERSION"] == version


# --- the pods the DAG launches -------------------------------------------------------------


def test_the_dag_reads_this_pod_template(dag_pods) -> None:
    for task_id, launched in dag_pods.items():
        assert Path(launched["pod_template_file"]).resolve() == POD_TEMPLATE, task_id


@pytest.mark.parametrize(
    "path",
    [
        ("metadata", "namespace"),
        ("spec", "serviceAccountName"),
        ("spec", "automountServiceAccountToken"),
        ("spec", "priorityClassName"),
        ("spec", "securityContext"),
        ("spec", "enableServiceLinks"),
    ],
    ids=lambda p: ".".join(p),
)
def test_the_dag_pods_keep_the_template_settings(dag_pods, pod_template, path) -> None:
    expected: Any = pod_template
    for key in path:
        expected = expected[key]
    for task_id, launched in dag_pods.items():
        actual: Any = launched["pod"]
        for key in path:
            actual = actual[key]
        assert actual == expected, (task_id, path)


def test_the_dag_pods_keep_the_base_container_settings(dag_pods, pod_template) -> None:
    template = base_container(pod_template)
    for task_id, launched in dag_pods.items():
        container = base_container(launched["pod"])
        assert container["image"] == template["image"], task_id
        assert container["securityContext"] == template["securityContext"], task_id
        assert container["ports"] == template["ports"], task_id
        for mount in template["volumeMounts"]:
            assert mount in container["volumeMounts"], (task_id, mount)
        for ref in template["envFrom"]:
            assert ref in container["envFrom"], (task_id, ref)
        for var in template["env"]:
            assert var in container["env"], (task_id, var)


def test_the_dag_pods_are_watched_and_let_through(dag_pods, base_objects) -> None:
    monitor = one(base_objects, "PodMonitor", "plateau-lstm-training")
    policy = one(base_objects, "NetworkPolicy", "training")
    for task_id, launched in dag_pods.items():
        pod_labels = launched["pod"]["metadata"]["labels"]
        assert matches(monitor["spec"]["selector"], pod_labels), task_id
        assert matches(policy["spec"]["podSelector"], pod_labels), task_id


def _container_resources(container: dict[str, Any], limit_range: dict[str, Any]):
    """Requests and limits after the LimitRange's defaults, as the API server applies them."""
    (rule,) = [r for r in limit_range["spec"]["limits"] if r["type"] == "Container"]
    resources = container.get("resources") or {}
    limits = {**rule.get("default", {}), **(resources.get("limits") or {})}
    requests = {**rule.get("defaultRequest", {}), **(resources.get("requests") or {})}
    for name, value in limits.items():
        requests.setdefault(name, value)  # an unset request defaults to the limit
    return requests, limits


def test_the_dag_pods_fit_the_limit_range_and_the_quota(dag_pods, base_objects) -> None:
    limit_range = one(base_objects, "LimitRange", "plateau-lstm")
    (rule,) = [r for r in limit_range["spec"]["limits"] if r["type"] == "Container"]
    quota = one(base_objects, "ResourceQuota", "plateau-lstm")["spec"]["hard"]
    for task_id, launched in dag_pods.items():
        totals: dict[str, Any] = {}
        for container in launched["pod"]["spec"]["containers"]:
            requests, limits = _container_resources(container, limit_range)
            for name, ceiling in rule["max"].items():
                used = limits.get(name, requests.get(name, "0"))
                assert parse_quantity(used) <= parse_quantity(ceiling), (task_id, name, used)
            for name, value in requests.items():
                totals[f"requests.{name}"] = totals.get(f"requests.{name}", 0) + parse_quantity(
                    value
                )
            for name, value in limits.items():
                totals[f"limits.{name}"] = totals.get(f"limits.{name}", 0) + parse_quantity(value)
            if GPU in limits:
                assert requests[GPU] == limits[GPU], task_id  # extended resources: equal
        for name, hard in quota.items():
            if name in totals:
                assert totals[name] <= parse_quantity(hard), (task_id, name, totals[name])


def test_only_gpu_pods_go_to_gpu_nodes(dag_pods) -> None:
    saw_gpu = False
    for task_id, launched in dag_pods.items():
        spec = launched["pod"]["spec"]
        limits = base_container(launched["pod"]).get("resources", {}).get("limits", {})
        tolerations = [t.get("key") for t in spec.get("tolerations") or []]
        if GPU in limits:
            saw_gpu = True
            assert GPU in tolerations and spec.get("nodeSelector"), task_id
        else:
            assert GPU not in tolerations, task_id
    assert saw_gpu, "no step of the DAG asks for a GPU with its default params"
