"""Every manifest under k8s/, and everything its kustomizations build, is a valid object.

Built-in kinds are validated strictly (unknown fields fail) against the Kubernetes JSON schemas
that kubernetes-validate ships, for the oldest and the newest Kubernetes version we support;
Prometheus Operator resources against prometheus_operator_schemas; the Kubeflow TFJob example
against kubeflow_schemas, and each of its replicas' pod templates as a Pod, strictly.
"""

from __future__ import annotations

import copy
from typing import Any

import kubeflow_schemas
import kubernetes_validate
import prometheus_operator_schemas
import pytest
from manifests import (
    BASE,
    EXAMPLE_SECRET,
    K8S,
    NAMESPACE,
    POD_TEMPLATE,
    load_documents,
    manifest_files,
    one,
)

# Pinned: the oldest and the newest minor in upstream support when this was written.
KUBERNETES_VERSIONS = ("1.35.0", "1.37.0")
CLUSTER_SCOPED = {"Namespace", "PriorityClass", "ClusterRole", "ClusterRoleBinding"}
# The one object that lives outside plateau-lstm: Airflow's identity, in Airflow's namespace.
OUTSIDE_NAMESPACE = {("ServiceAccount", "plateau-lstm-launcher")}


def custom_resource_errors(obj: dict[str, Any]) -> list[str]:
    kind = (obj.get("apiVersion"), obj.get("kind"))
    if kind in kubeflow_schemas.SCHEMAS:
        errors = kubeflow_schemas.custom_resource_errors(obj)
        if errors:
            return errors
        return [
            f"{replica} pod: {error}"
            for replica in kubeflow_schemas.replica_templates(obj)
            for error in schema_errors(kubeflow_schemas.pod_of(obj, replica))
        ]
    return prometheus_operator_schemas.custom_resource_errors(obj)


CUSTOM_KINDS = {*prometheus_operator_schemas.SCHEMAS, *kubeflow_schemas.SCHEMAS}


def schema_errors(obj: dict[str, Any]) -> list[str]:
    if (obj.get("apiVersion"), obj.get("kind")) in CUSTOM_KINDS:
        return custom_resource_errors(obj)
    errors = []
    for version in KUBERNETES_VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            errors.append(f"Kubernetes {version}: {error.message} at {list(error.path)}")
        except kubernetes_validate.SchemaNotFoundError:
            errors.append(
                f"Kubernetes {version} has no schema for {obj['apiVersion']} {obj['kind']}"
            )
    return errors


def _file_objects() -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{path.relative_to(K8S)}:{obj['kind']}/{obj['metadata']['name']}", obj)
        for path in manifest_files()
        for obj in load_documents(path)
    ]


@pytest.mark.parametrize(("name", "obj"), _file_objects(), ids=lambda v: str(v)[:70])
def test_every_manifest_file_is_valid(name: str, obj: dict[str, Any]) -> None:
    errors = schema_errors(obj)
    assert not errors, f"{name}:\n" + "\n".join(errors)


def test_every_built_object_is_valid(built: dict[str, list[dict[str, Any]]]) -> None:
    for kustomization, objects in built.items():
        for obj in objects:
            errors = schema_errors(obj)
            assert not errors, f"{kustomization} {obj['kind']}/{obj['metadata']['name']}:\n" + (
                "\n".join(errors)
            )


def test_strict_validation_rejects_an_unknown_field(pod_template: dict[str, Any]) -> None:
    pod = copy.deepcopy(pod_template)
    pod["spec"]["containers"][0]["securityContext"]["readOnlyRootFileSystem"] = True  # typo
    assert any("readOnlyRootFileSystem" in error for error in schema_errors(pod))


@pytest.mark.parametrize(
    ("kind", "change", "expected"),
    [
        (
            "PodMonitor",
            lambda m: m["spec"].update(podMetricEndpoints=m["spec"].pop("podMetricsEndpoints")),
            "podMetricEndpoints",
        ),
        (
            "PodMonitor",
            lambda m: m["spec"]["podMetricsEndpoints"][0].update(interval="15 seconds"),
            "15 seconds",
        ),
        ("PodMonitor", lambda m: m["spec"].pop("selector"), "selector"),
        (
            "PrometheusRule",
            lambda r: r["spec"]["groups"][0]["rules"][0].pop("expr"),
            "expr",
        ),
        (
            "PrometheusRule",
            lambda r: r["spec"]["groups"][0]["rules"][0].update(record="x:y"),
            "valid under each of",
        ),
        (
            "PrometheusRule",
            lambda r: r["spec"]["groups"][0]["rules"][0].update(four="10m"),
            "four",
        ),
    ],
)
def test_custom_resource_schemas_reject_mistakes(kind: str, change, expected: str) -> None:
    samples = {
        "PodMonitor": {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "PodMonitor",
            "metadata": {"name": "m", "namespace": NAMESPACE},
            "spec": {
                "selector": {"matchLabels": {"a": "b"}},
                "podMetricsEndpoints": [{"port": "metrics", "interval": "15s"}],
            },
        },
        "PrometheusRule": {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "PrometheusRule",
            "metadata": {"name": "r", "namespace": NAMESPACE},
            "spec": {
                "groups": [
                    {
                        "name": "g",
                        "rules": [{"alert": "A", "expr": "up == 0", "for": "10m"}],
                    }
                ]
            },
        },
    }
    sample = samples[kind]
    assert custom_resource_errors(sample) == []
    broken = copy.deepcopy(sample)
    change(broken)
    errors = custom_resource_errors(broken)
    assert any(expected in error for error in errors), errors


def test_every_base_manifest_is_in_the_kustomization() -> None:
    (kustomization,) = load_documents(BASE / "kustomization.yaml")
    listed = set(kustomization["resources"])
    on_disk = {path.name for path in manifest_files() if path.parent == BASE}
    # The pod template is read by KubernetesPodOperator, never applied.
    assert on_disk - listed == {POD_TEMPLATE.name}
    assert listed <= {path.name for path in BASE.iterdir()}, "listed but missing"


def test_no_credentials_are_ever_applied(built: dict[str, list[dict[str, Any]]]) -> None:
    for kustomization, objects in built.items():
        assert not [obj for obj in objects if obj["kind"] == "Secret"], kustomization
    (example,) = load_documents(EXAMPLE_SECRET)
    assert "REPLACE_WITH_ACCESS_KEY_ID" in example["stringData"]["credentials"]
    assert "REPLACE_WITH_SECRET_ACCESS_KEY" in example["stringData"]["credentials"]


def test_objects_carry_the_recommended_labels(built: dict[str, list[dict[str, Any]]]) -> None:
    for kustomization, objects in built.items():
        for obj in objects:
            labels = obj["metadata"].get("labels", {})
            where = f"{kustomization} {obj['kind']}/{obj['metadata']['name']}"
            assert labels.get("app.kubernetes.io/part-of") == "plateau-lstm", where
            assert labels.get("app.kubernetes.io/managed-by") == "kustomize", where
            assert labels.get("app.kubernetes.io/name") in ("plateau-lstm", "pushgateway"), where


def test_the_production_overlay_names_its_instance(built: dict[str, list[dict[str, Any]]]) -> None:
    for obj in built["production"]:
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == "plateau-lstm-production", obj["kind"]
    deployment = one(built["production"], "Deployment", "pushgateway")
    # Selectors are immutable: the overlay's labels must not reach them.
    assert "app.kubernetes.io/instance" not in deployment["spec"]["selector"]["matchLabels"]


def test_objects_live_in_the_plateau_lstm_namespace(built: dict[str, list[dict]]) -> None:
    for kustomization, objects in built.items():
        for obj in objects:
            namespace = obj["metadata"].get("namespace")
            key = (obj["kind"], obj["metadata"]["name"])
            if obj["kind"] in CLUSTER_SCOPED:
                assert namespace is None, (kustomization, key)
            elif key in OUTSIDE_NAMESPACE:
                assert namespace not in (None, NAMESPACE), (kustomization, key)
            else:
                assert namespace == NAMESPACE, (kustomization, key)
