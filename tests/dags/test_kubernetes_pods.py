"""The pods the `kubernetes` launcher would start: valid Kubernetes, restricted, and complete.

There is no cluster here, so nothing is submitted. Each pod is built the way
KubernetesPodOperator.execute builds it before it calls the API server: render the task's
templates with the run's context, then `build_pod_request_obj(context)` (pod template file +
the task's parts + XCom sidecar + the run's labels). The only stand-in is the context itself,
which holds the parts the operator reads (the run id, the validated params, the task instance's
identity). The Kubernetes connection is a real kubeconfig pointing at a loopback port nothing
listens on: building a pod reads it but never connects.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from dag_test_env import DAGS_DIR

# Pinned: the oldest minor still in upstream support when this was written (1.35 - 1.37).
KUBERNETES_VERSION = "1.35.0"
RUN_ID = "scheduled__2026-12-03T02:00:00+00:00"
RUN_KEY = "scheduled__2026-12-03T020000Z"
ROOT = "s3://models/nightly"
RUN = f"{ROOT}/runs/{RUN_KEY}"
TASKS = ["prepare_data", "train_model", "evaluate_model", "promote_model"]
POD_TEMPLATE = DAGS_DIR.parent / "k8s" / "base" / "pod-template.yaml"


def _restricted_violations():
    # The restricted-PSS checker that tests/k8s keeps (and tests) for every manifest.
    path = DAGS_DIR.parent / "tests" / "k8s" / "pod_security_standard.py"
    spec = importlib.util.spec_from_file_location("pod_security_standard_for_dags", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.restricted_violations


restricted_violations = _restricted_violations()


@pytest.fixture
def kube_connection(tmp_path, monkeypatch) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:9"}}],
        "users": [{"name": "u", "user": {"token": "not-used"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "c",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(config))
    connection = {"conn_type": "kubernetes", "extra": {"kube_config_path": str(path)}}
    monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT", json.dumps(connection))


@pytest.fixture
def kubernetes_dag(parse_dag, kube_connection):
    return parse_dag(launcher="kubernetes", artifact_root=ROOT)


def render_pod(dag, task_id: str, conf: dict[str, Any] | None = None) -> dict[str, Any]:
    """The pod KubernetesPodOperator.execute would create for this task of the run RUN_ID."""
    from airflow.serialization.serialized_objects import DagSerialization
    from kubernetes.client import ApiClient

    task = dag.get_task(task_id)
    scheduler_dag = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag))
    params = scheduler_dag.params.deep_merge(conf or {}).validate()
    ti = SimpleNamespace(
        dag_id=dag.dag_id, task_id=task_id, run_id=RUN_ID, try_number=1, map_index=-1
    )
    context = {"params": params, "run_id": RUN_ID, "ti": ti, "dag": dag, "task": task}
    task.render_template_fields(context)
    pod = task.build_pod_request_obj(context)
    return ApiClient().sanitize_for_serialization(pod)


def containers(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in pod["spec"]["containers"]}


@pytest.mark.parametrize("task_id", TASKS)
def test_pod_is_valid_kubernetes_and_restricted(kubernetes_dag, task_id):
    import kubernetes_validate

    pod = render_pod(kubernetes_dag, task_id)

    kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)
    assert restricted_violations(pod["metadata"], pod["spec"]) == []
    # The fields the restricted profile turns on, spelled out for this pod.
    spec = pod["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] != 0
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC")
    for name, container in containers(pod).items():
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False, name
        assert context["capabilities"]["drop"] == ["ALL"], name
        assert not context.get("privileged"), name
        assert context["readOnlyRootFilesystem"] is True, name


@pytest.mark.parametrize("task_id", TASKS)
def test_pod_carries_the_contract(kubernetes_dag, task_id):
    pod = render_pod(kubernetes_dag, task_id)

    meta, spec = pod["metadata"], pod["spec"]
    base = containers(pod)["base"]
    assert meta["namespace"] == "plateau-lstm"
    assert meta["name"].startswith(f"plateau-lstm-{task_id.split('_')[0]}-")
    # reattach_on_restart finds a running pod again by these labels.
    assert {k: meta["labels"][k] for k in ("dag_id", "task_id", "try_number")} == {
        "dag_id": "lstm_nightly_retrain",
        "task_id": task_id,
        "try_number": "1",
    }
    assert meta["labels"]["app.kubernetes.io/name"] == "plateau-lstm"  # from the template
    assert spec["serviceAccountName"] == "plateau-lstm-training"
    assert spec["automountServiceAccountToken"] is False
    assert spec["restartPolicy"] == "Never"
    assert spec["activeDeadlineSeconds"] > 0
    assert base["image"] == "ghcr.io/example/plateau-lstm:0.1.0"
    # The result goes where the sidecar reads it; the sidecar shares that volume.
    assert base["args"][:2] == ["--result-file", "/airflow/xcom/return.json"]
    assert {"name": "xcom", "mountPath": "/airflow/xcom"} in base["volumeMounts"]
    assert "airflow-xcom-sidecar" in containers(pod)
    # S3: endpoint and region from the ConfigMap, credentials from the Secret-backed file.
    assert {"configMapRef": {"name": "plateau-lstm-s3"}} in base["envFrom"]
    credentials = next(v for v in spec["volumes"] if v["name"] == "s3-credentials")
    assert credentials["secret"]["secretName"] == "plateau-lstm-s3-credentials"
    env = {e["name"]: e.get("value") for e in base["env"]}
    assert env["AWS_SHARED_CREDENTIALS_FILE"].startswith("/var/run/secrets/plateau-lstm/s3/")
    assert env["PYTHONUNBUFFERED"] == "1"


def test_step_arguments_address_only_this_runs_folders(kubernetes_dag):
    args = {
        task_id: render_pod(kubernetes_dag, task_id)["spec"]["containers"][0]["args"][2:]
        for task_id in TASKS
    }

    assert args["prepare_data"] == [
        "prepare", "--output", f"{RUN}/prepared", "--window", "48", "--horizon", "1"
    ]  # fmt: skip
    assert args["train_model"][:5] == [
        "train", "--prepared", f"{RUN}/prepared", "--output", f"{RUN}/model"
    ]  # fmt: skip
    assert args["evaluate_model"] == [
        "evaluate", "--prepared", f"{RUN}/prepared", "--model", f"{RUN}/model",
        "--output", f"{RUN}/eval",
    ]  # fmt: skip
    assert args["promote_model"] == [
        "promote", "--candidate", f"{RUN}/eval", "--registry", ROOT, "--margin", "0.01"
    ]  # fmt: skip


def test_training_pod_asks_for_the_gpus_of_the_run(kubernetes_dag):
    pod = render_pod(kubernetes_dag, "train_model", {"gpus": 2, "epochs": 7, "seed": 3})

    base = containers(pod)["base"]
    assert base["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert pod["spec"]["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["spec"][
        "tolerations"
    ]
    args = base["args"]
    assert args[args.index("--epochs") + 1] == "7"
    assert args[args.index("--seed") + 1] == "3"


def test_cpu_only_training_and_other_steps_ask_for_no_gpu(kubernetes_dag):
    cpu_training = render_pod(kubernetes_dag, "train_model", {"gpus": 0})
    others = [render_pod(kubernetes_dag, t) for t in ("prepare_data", "promote_model")]

    for pod in [cpu_training, *others]:
        assert "nvidia.com/gpu" not in containers(pod)["base"]["resources"]["limits"]
        assert not pod["spec"].get("nodeSelector")
        assert not pod["spec"].get("tolerations")


def test_deployment_settings_reach_the_pod(parse_dag, kube_connection):
    dag = parse_dag(
        launcher="kubernetes",
        artifact_root="s3://other-bucket/retrain",
        image="registry.example/plateau-lstm@sha256:" + "a" * 64,
        namespace="ml-nightly",
        service_account="trainer",
        s3_secret="aws-keys",
        gpu_node_selector="cloud.google.com/gke-accelerator=nvidia-h100-80gb",
        pod_template=str(POD_TEMPLATE),
    )

    pod = render_pod(dag, "train_model")

    base = containers(pod)["base"]
    assert pod["metadata"]["namespace"] == "ml-nightly"
    assert pod["spec"]["serviceAccountName"] == "trainer"
    assert base["image"].startswith("registry.example/plateau-lstm@sha256:")
    assert {"secretRef": {"name": "aws-keys"}} in base["envFrom"]
    assert pod["spec"]["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}
    assert "s3://other-bucket/retrain/runs/" in " ".join(base["args"])


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"LAUNCHER": "kubernetes", "ARTIFACT_ROOT": "/srv/artifacts"}, "must be an s3://"),
        ({"LAUNCHER": "docker"}, "PLATEAU_LSTM_LAUNCHER must be one of local, kubernetes"),
        ({"GPU_NODE_SELECTOR": "gpu"}, "PLATEAU_LSTM_GPU_NODE_SELECTOR takes key=value pairs"),
    ],
)
def test_bad_settings_are_an_import_error_that_names_the_variable(monkeypatch, settings, message):
    from airflow.dag_processing.dagbag import BundleDagBag
    from dag_test_env import DAG_FILE

    for name, value in settings.items():
        monkeypatch.setenv(f"PLATEAU_LSTM_{name}", value)

    bag = BundleDagBag(dag_folder=str(DAG_FILE), bundle_path=DAGS_DIR)

    assert bag.dags == {}
    (error,) = bag.import_errors.values()
    assert message in error


def test_pod_template_path_is_the_contract_file():
    from lstm_retrain.settings import RetrainSettings

    assert Path(RetrainSettings().pod_template_file) == POD_TEMPLATE
    assert POD_TEMPLATE.is_file()
