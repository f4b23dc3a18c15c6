"""The TFJob a DAG run with workers=2 sends is a valid TFJob of restricted pods, each the single
training pod, and k8s/ lets its workers train together and nothing more.

Built by the task itself in a fresh interpreter (dag_pods.py, the `dag_tfjob` fixture), with
the kubernetes launcher's default settings; nothing is sent to a cluster.
"""

from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate
import pytest
from dag_pods import TFJOB_EXAMPLE, TFJOB_WORKERS, without_volatile_labels
from kubeflow_schemas import custom_resource_errors, pod_of
from kubernetes.utils import parse_quantity
from manifests import NAMESPACE, load_documents, matches, one
from pod_security_standard import restricted_violations

KUBERNETES_VERSIONS = ("1.35.0", "1.37.0")
GPU = "nvidia.com/gpu"


def worker(tfjob: dict[str, Any]) -> dict[str, Any]:
    return tfjob["spec"]["tfReplicaSpecs"]["Worker"]


def tensorflow_container(pod_spec: dict[str, Any]) -> dict[str, Any]:
    (container,) = pod_spec["containers"]
    assert container["name"] == "tensorflow"
    return container


def test_the_tfjob_is_a_valid_kubeflow_v1_tfjob(dag_tfjob) -> None:
    assert custom_resource_errors(dag_tfjob) == []
    assert list(dag_tfjob["spec"]["tfReplicaSpecs"]) == ["Worker"]  # worker 0 is the chief
    assert worker(dag_tfjob)["replicas"] == TFJOB_WORKERS
    assert worker(dag_tfjob)["restartPolicy"] == "Never"
    assert dag_tfjob["metadata"]["namespace"] == NAMESPACE
    # The controller names pods and Services `<name>-worker-<index>`: DNS labels, <= 63.
    assert len(f"{dag_tfjob['metadata']['name']}-worker-15") <= 63


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_each_worker_pod_is_a_valid_pod(dag_tfjob, version) -> None:
    kubernetes_validate.validate(pod_of(dag_tfjob, "Worker"), version, strict=True)


def test_each_worker_pod_is_restricted(dag_tfjob) -> None:
    template = worker(dag_tfjob)["template"]
    assert restricted_violations(template["metadata"], template["spec"]) == []


def test_the_workers_run_multi_worker_training_on_tensorflows_port(dag_tfjob) -> None:
    container = tensorflow_container(worker(dag_tfjob)["template"]["spec"])
    assert {"name": "tfjob-port", "containerPort": 2222, "protocol": "TCP"} in container["ports"]
    args = container["args"]
    assert args[0] == "train"
    assert args[args.index("--distribution") + 1] == "multi-worker"
    # Every worker gets the same --output; the CLI lets only the chief write to it.
    assert args[args.index("--output") + 1].endswith("/model")
    # No XCom sidecar, so no result file and no xcom volume.
    assert "--result-file" not in args
    assert [c["name"] for c in worker(dag_tfjob)["template"]["spec"]["containers"]] == [
        "tensorflow"
    ]
    assert "xcom" not in {v["name"] for v in worker(dag_tfjob)["template"]["spec"]["volumes"]}


def test_each_worker_is_the_single_training_pod(dag_tfjob, dag_pods) -> None:
    """Same pod template settings, security, resources, GPUs and placement as `train_model`'s
    own pod; only the container's name, TF's port, the arguments and the sidecar differ."""
    single = copy.deepcopy(dag_pods["train_model"]["pod"]["spec"])
    spec = copy.deepcopy(worker(dag_tfjob)["template"]["spec"])
    (base,) = [c for c in single["containers"] if c["name"] == "base"]
    container = tensorflow_container(spec)
    assert container["securityContext"] == base["securityContext"]
    assert container["resources"] == base["resources"]
    assert container["resources"]["limits"][GPU] == "1"  # the `gpus` param, per worker
    assert base["args"][2:] + ["--distribution", "multi-worker"] == container["args"]
    assert container["ports"] == [*base["ports"], container["ports"][-1]]
    assert [m for m in base["volumeMounts"] if m["name"] != "xcom"] == container["volumeMounts"]
    for key in ("image", "env", "envFrom", "imagePullPolicy"):
        assert container[key] == base[key], key
    single["volumes"] = [v for v in single["volumes"] if v["name"] != "xcom"]
    for key in set(single) | set(spec):
        if key != "containers":
            assert spec.get(key) == single.get(key), key
    assert spec["activeDeadlineSeconds"] == dag_tfjob["spec"]["runPolicy"]["activeDeadlineSeconds"]


def test_the_gpus_param_is_per_worker_and_places_every_worker_on_gpu_nodes(dag_tfjob) -> None:
    spec = worker(dag_tfjob)["template"]["spec"]
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": GPU, "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    limits = tensorflow_container(spec)["resources"]["limits"]
    assert int(limits[GPU]) * worker(dag_tfjob)["replicas"] == 2


def test_the_run_policy_leaves_retries_to_airflow_and_cleans_up(dag_tfjob) -> None:
    policy = dag_tfjob["spec"]["runPolicy"]
    assert policy["backoffLimit"] == 0
    assert policy["cleanPodPolicy"] == "Running"
    assert policy["activeDeadlineSeconds"] == 6 * 3600  # train_model's execution timeout
    assert 0 < policy["ttlSecondsAfterFinished"] <= 86400


def test_the_workers_are_watched_and_may_talk_to_each_other(dag_tfjob, base_objects) -> None:
    pod_labels = worker(dag_tfjob)["template"]["metadata"]["labels"]
    monitor = one(base_objects, "PodMonitor", "plateau-lstm-training")
    training = one(base_objects, "NetworkPolicy", "training")
    workers = one(base_objects, "NetworkPolicy", "training-workers")
    assert matches(monitor["spec"]["selector"], pod_labels)
    assert matches(training["spec"]["podSelector"], pod_labels)
    assert matches(workers["spec"]["podSelector"], pod_labels)
    (ingress,) = workers["spec"]["ingress"]
    (egress,) = workers["spec"]["egress"]
    for rule, peers in ((ingress, "from"), (egress, "to")):
        (peer,) = rule[peers]
        assert matches(peer["podSelector"], pod_labels)
        assert rule["ports"] == [{"port": 2222, "protocol": "TCP"}]


def test_the_tfjob_fits_the_production_quota_and_limit_range(dag_tfjob, built) -> None:
    """workers x gpus GPUs must fit the namespace's quota (the base allows 1 GPU in all, so a
    multi-worker run needs an overlay that raises it, as the production example does)."""
    objects = built["production"]
    quota = one(objects, "ResourceQuota", "plateau-lstm")["spec"]["hard"]
    (rule,) = [
        r
        for r in one(objects, "LimitRange", "plateau-lstm")["spec"]["limits"]
        if r["type"] == "Container"
    ]
    resources = tensorflow_container(worker(dag_tfjob)["template"]["spec"])["resources"]
    replicas = worker(dag_tfjob)["replicas"]
    for name, ceiling in rule["max"].items():
        assert parse_quantity(resources["limits"][name]) <= parse_quantity(ceiling), name
    totals = {
        f"requests.{GPU}": resources["limits"][GPU],
        "requests.cpu": resources["requests"]["cpu"],
        "requests.memory": resources["requests"]["memory"],
        "limits.memory": resources["limits"]["memory"],
    }
    for name, value in totals.items():
        assert parse_quantity(value) * replicas <= parse_quantity(quota[name]), name


def test_the_example_is_what_the_dag_sends(dag_tfjob) -> None:
    (example,) = load_documents(TFJOB_EXAMPLE)
    assert example == without_volatile_labels(dag_tfjob), (
        "k8s/examples/tfjob-train.yaml is stale: .venv/bin/python tests/k8s/dag_pods.py "
        "--write-example"
    )


def _replicas(tfjob: dict[str, Any]) -> dict[str, Any]:
    return tfjob["spec"]["tfReplicaSpecs"]


MISTAKES = {
    "spec field typo": (
        lambda j: j["spec"].update(tfReplicaSpec=j["spec"].pop("tfReplicaSpecs")),
        "tfReplicaSpec",
    ),
    "replica type in lower case": (
        lambda j: _replicas(j).update(worker=_replicas(j).pop("Worker")),
        "worker",
    ),
    "container not named tensorflow": (
        lambda j: worker(j)["template"]["spec"]["containers"][0].update(name="base"),
        "does not contain items",
    ),
    "unknown restart policy": (lambda j: worker(j).update(restartPolicy="Sometimes"), "Sometimes"),
    "unknown clean-pod policy": (
        lambda j: j["spec"]["runPolicy"].update(cleanPodPolicy="Finished"),
        "Finished",
    ),
    "run policy field typo": (
        lambda j: j["spec"]["runPolicy"].update(backoffLimits=0),
        "backoffLimits",
    ),
    "name not a DNS-1035 label": (lambda j: j["metadata"].update(name="9-lives"), "9-lives"),
    "both Chief and Master": (
        lambda j: _replicas(j).update(Chief=worker(j), Master=worker(j)),
        "should not be valid",
    ),
}


@pytest.mark.parametrize("mistake", sorted(MISTAKES))
def test_the_schema_rejects_mistakes(dag_tfjob, mistake) -> None:
    change, expected = MISTAKES[mistake]
    broken = copy.deepcopy(dag_tfjob)
    change(broken)
    errors = custom_resource_errors(broken)
    assert any(expected in error for error in errors), errors
