"""Multi-worker training: the `workers` param, the TFJob `train_model` builds from the deployment's
settings, and the TFJob's life as the task drives it.

The cluster is a stand-in for the Kubernetes API server with the Kubeflow training operator in
it (`FakeCluster`: TFJobs that move through the phases a test gives them, worker pods with logs
and exit codes), plugged in where the task reaches the API: its KubernetesHook. Everything of
ours (building the TFJob, following it, reading the result, failing, cleaning up) runs for real.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from types import SimpleNamespace
from typing import Any

import pytest
from dag_test_env import DAGS_DIR

RUN_ID = "manual__2026-12-05T10:00:00+00:00"
ROOT = "s3://models/nightly"
KUBERNETES = {"launcher": "kubernetes", "artifact_root": ROOT}


def _tests_k8s(module: str):
    # Helpers that tests/k8s keeps (and tests) for every manifest.
    path = DAGS_DIR.parent / "tests" / "k8s" / f"{module}.py"
    spec = importlib.util.spec_from_file_location(f"{module}_for_dags", path)
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return loaded


def trigger_params(dag, conf: dict[str, Any]) -> dict[str, Any]:
    """What the scheduler side does with a trigger's conf before it creates a run."""
    from airflow.serialization.serialized_objects import DagSerialization

    scheduler_dag = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag))
    return scheduler_dag.params.deep_merge(conf).validate()


def train_context(dag, conf: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """`train_model` and its context for RUN_ID, templates rendered, as a worker has them."""
    task = dag.get_task("train_model")
    ti = SimpleNamespace(
        dag_id=dag.dag_id, task_id=task.task_id, run_id=RUN_ID, try_number=1, map_index=-1
    )
    context = {
        "params": trigger_params(dag, conf),
        "run_id": RUN_ID,
        "ti": ti,
        "dag": dag,
        "task": task,
    }
    task.render_template_fields(context)
    return task, context


# ------------------------------------------------------------------------------------------------
# The `workers` param


def test_workers_defaults_to_one_everywhere(parse_dag):
    assert parse_dag().params.validate()["workers"] == 1
    assert parse_dag(**KUBERNETES).params.validate()["workers"] == 1


@pytest.mark.parametrize(("workers", "valid"), [(0, False), (1, True), (16, True), (17, False)])
def test_the_kubernetes_launcher_takes_1_to_16_workers(parse_dag, workers, valid):
    from airflow.sdk.exceptions import ParamValidationError

    dag = parse_dag(**KUBERNETES)
    if valid:
        assert trigger_params(dag, {"workers": workers})["workers"] == workers
    else:
        with pytest.raises(ParamValidationError):
            trigger_params(dag, {"workers": workers})


def test_the_local_launcher_refuses_several_workers_before_a_run_exists(parse_dag):
    from airflow.sdk.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError, match="PLATEAU_LSTM_LAUNCHER=kubernetes"):
        trigger_params(parse_dag(), {"workers": 2})


def test_the_local_launcher_fails_a_multi_worker_run_at_once_without_retries():
    """A run created before the deployment switched to the local launcher still asks for 2."""
    from airflow.sdk.exceptions import AirflowFailException
    from lstm_retrain.local import refuse_multi_worker

    refuse_multi_worker({"workers": 1})
    refuse_multi_worker({})  # runs from before the param existed
    with pytest.raises(AirflowFailException, match=r"workers=2 needs the kubernetes launcher"):
        refuse_multi_worker({"workers": 2})


# ------------------------------------------------------------------------------------------------
# What train_model launches


def test_one_worker_is_the_single_pod_and_more_are_a_tfjob(parse_dag):
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

    dag = parse_dag(**KUBERNETES)
    task, _ = train_context(dag, {})
    assert isinstance(task, KubernetesPodOperator)  # the same task either way
    assert task.launch == "pod"
    assert task.arguments[:2] == ["--result-file", "/airflow/xcom/return.json"]
    assert "--distribution" not in task.arguments

    task, _ = train_context(dag, {"workers": 3, "gpus": 2})
    assert task.launch.startswith("TFJob plateau-lstm/plateau-lstm-train-")
    assert task.launch.endswith("(kubeflow.org/v1): 3 workers, 2 nvidia.com/gpu each")
    assert task.arguments[0] == "train"  # no result file: no sidecar in a TFJob
    assert task.arguments[-2:] == ["--distribution", "multi-worker"]


def test_the_deployment_settings_reach_every_worker(parse_dag):
    import kubernetes_validate

    dag = parse_dag(
        **KUBERNETES,
        image="registry.example/plateau-lstm@sha256:" + "b" * 64,
        namespace="ml-nightly",
        service_account="trainer",
        s3_secret="aws-keys",
        gpu_node_selector="cloud.google.com/gke-accelerator=nvidia-h100-80gb",
    )
    task, context = train_context(dag, {"workers": 4, "gpus": 2, "epochs": 9})
    tfjob = task.build_tfjob(context)

    assert _tests_k8s("kubeflow_schemas").custom_resource_errors(tfjob) == []
    assert tfjob["metadata"]["namespace"] == "ml-nightly"
    replica = tfjob["spec"]["tfReplicaSpecs"]["Worker"]
    assert replica["replicas"] == 4
    spec = replica["template"]["spec"]
    (container,) = spec["containers"]
    assert container["name"] == "tensorflow"
    assert container["image"].startswith("registry.example/plateau-lstm@sha256:")
    assert {"secretRef": {"name": "aws-keys"}} in container["envFrom"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert container["args"][container["args"].index("--epochs") + 1] == "9"
    assert spec["serviceAccountName"] == "trainer"
    assert spec["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}
    pod = _tests_k8s("kubeflow_schemas").pod_of(tfjob, "Worker")
    kubernetes_validate.validate(pod, "1.35.0", strict=True)
    violations = _tests_k8s("pod_security_standard").restricted_violations
    assert violations(pod["metadata"], pod["spec"]) == []


def test_cpu_workers_ask_for_no_gpu_and_no_gpu_node(parse_dag):
    task, context = train_context(parse_dag(**KUBERNETES), {"workers": 2, "gpus": 0})
    spec = task.build_tfjob(context)["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]

    assert "nvidia.com/gpu" not in spec["containers"][0]["resources"]["limits"]
    assert not spec.get("nodeSelector") and not spec.get("tolerations")


def test_each_run_has_its_own_tfjob_and_every_try_of_it_the_same(parse_dag):
    from lstm_retrain.tfjob import tfjob_name

    assert tfjob_name("d", RUN_ID) == tfjob_name("d", RUN_ID)
    assert tfjob_name("d", RUN_ID) != tfjob_name("d", RUN_ID.replace("10:00", "11:00"))
    assert tfjob_name("d", RUN_ID) != tfjob_name("e", RUN_ID)


# ------------------------------------------------------------------------------------------------
# The TFJob's life


def _api_error(status: int, message: str = ""):
    from kubernetes.client.exceptions import ApiException

    error = ApiException(status=status, reason={404: "Not Found"}.get(status, "Error"))
    error.body = json.dumps({"message": message or f"status {status}"})
    return error


class FakeCluster:
    """The API server with the training operator, as far as the TFJob launcher reaches it.

    Each `get` of a TFJob moves it one phase along the `phases` the cluster had when the TFJob
    was created (the last one stays) and lets the chief print one more line of `chief_log`, all
    of it once the TFJob has finished. Worker pods exit with `exit_codes`.
    """

    def __init__(
        self,
        phases: list[tuple[str, str]],
        chief_log: list[str],
        *,
        exit_codes: dict[int, int] | None = None,
        worker_logs: dict[int, list[str]] | None = None,
        create_error: int | None = None,
    ) -> None:
        self.phases, self.chief_log = phases, chief_log
        self.exit_codes = exit_codes or {}
        self.worker_logs = worker_logs or {}
        self.create_error = create_error
        self.tfjobs: dict[str, dict[str, Any]] = {}
        self.steps: dict[str, int] = {}
        self.job_phases: dict[str, list[tuple[str, str]]] = {}  # `phases` when created
        self.calls: list[tuple[str, str]] = []
        self.created: list[dict[str, Any]] = []

    # KubernetesHook
    @property
    def core_v1_client(self) -> FakeCluster:
        return self

    def create_custom_object(self, *, group, version, plural, body, namespace):
        assert (group, version, plural) == ("kubeflow.org", "v1", "tfjobs")
        self.calls.append(("create", body["metadata"]["name"]))
        if self.create_error:
            raise _api_error(self.create_error, "the server could not find the requested resource")
        self.created.append(body)
        self.tfjobs[body["metadata"]["name"]] = json.loads(json.dumps(body))
        self.steps[body["metadata"]["name"]] = 0
        self.job_phases[body["metadata"]["name"]] = list(self.phases)
        return body

    def get_custom_object(self, *, group, version, plural, name, namespace):
        self.calls.append(("get", name))
        if name not in self.tfjobs:
            raise _api_error(404)
        job, step, phases = self.tfjobs[name], self.steps[name], self.job_phases[name]
        phase, message = phases[min(step, len(phases) - 1)]
        job["status"] = {
            "conditions": [
                {"type": "Created", "status": "True"},
                {"type": phase, "status": "True", "message": message},
            ]
        }
        self.steps[name] = step + 1
        return job

    def delete_custom_object(self, *, group, version, plural, name, namespace, **kwargs):
        self.calls.append(("delete", name))
        if self.tfjobs.pop(name, None) is None:
            raise _api_error(404)

    # CoreV1Api
    def read_namespaced_pod_log(self, name, namespace, *, container, _preload_content, **kw):
        assert container == "tensorflow" and _preload_content is False
        job_name, _, index = name.rpartition("-worker-")
        if index != "0":
            lines = self.worker_logs.get(int(index), [])[-kw.get("tail_lines", 10**6) :]
            return SimpleNamespace(data="".join(f"{line}\n" for line in lines).encode())
        phases = self.job_phases.get(job_name, self.phases)
        step = self.steps.get(job_name, len(phases))
        finished = phases[min(step, len(phases)) - 1][0] in ("Succeeded", "Failed")
        shown = self.chief_log if finished and step else self.chief_log[:step]
        if not shown:
            raise _api_error(400, 'container "tensorflow" is waiting to start')
        # The whole log every time (more than the follower asks for): it must deduplicate,
        # also lines written at once, which share a timestamp (here: every two lines).
        stamped = [f"2026-12-05T10:00:{i // 2:02d}.5Z {line}\n" for i, line in enumerate(shown)]
        if "tail_lines" in kw:
            stamped = [s.partition(" ")[2] for s in stamped][-kw["tail_lines"] :]
        return SimpleNamespace(data="".join(stamped).encode())

    def read_namespaced_pod(self, name, namespace):
        from kubernetes.client import models as k8s

        index = int(name.rpartition("-worker-")[2])
        if index not in self.exit_codes:
            raise _api_error(404)
        terminated = k8s.V1ContainerStateTerminated(exit_code=self.exit_codes[index])
        return k8s.V1Pod(
            status=k8s.V1PodStatus(
                container_statuses=[
                    k8s.V1ContainerStatus(
                        name="tensorflow",
                        state=k8s.V1ContainerState(terminated=terminated),
                        image="i",
                        image_id="i",
                        ready=False,
                        restart_count=0,
                    )
                ]
            )
        )


RESULT = {"output": f"{ROOT}/runs/x/model", "epochs_run": 3, "val_mse_best": 0.01}
CHIEF_LOG = [
    "train: TensorFlow on 1 GPU(s)",
    "Epoch 1/3 - loss: 0.5",
    "Epoch 2/3 - loss: 0.3",
    "Epoch 3/3 - loss: 0.2",
    json.dumps(RESULT, sort_keys=True),
    "I0000 00:00:1 some TensorFlow shutdown chatter",
]
ENDS_WELL = [("Created", ""), ("Running", ""), ("Running", ""), ("Succeeded", "completed")]


@pytest.fixture
def kubernetes_dag(parse_dag):
    return parse_dag(**KUBERNETES)


def launch(dag, cluster: FakeCluster, conf: dict[str, Any] | None = None):
    """Run train_model's execute against `cluster`, as a worker would."""
    task, context = train_context(dag, {"workers": 2, **(conf or {})})
    task.__dict__["hook"] = cluster  # KubernetesPodOperator.hook is a cached property
    task.poll_interval_s = 0
    return task, context, lambda: task.execute(context)


def test_a_tfjob_runs_to_its_end_and_returns_the_chiefs_result(kubernetes_dag, caplog):
    cluster = FakeCluster(ENDS_WELL, CHIEF_LOG)
    task, context, run = launch(kubernetes_dag, cluster)

    with caplog.at_level(logging.INFO, logger="lstm_retrain.tfjob"):
        result = run()

    name = task.build_tfjob(context)["metadata"]["name"]
    assert result == {**RESULT, "tfjob": name, "workers": 2}
    assert cluster.created == [task.build_tfjob(context)]
    assert cluster.calls[-1] == ("delete", name) and cluster.tfjobs == {}
    logged = [r.getMessage() for r in caplog.records]
    # The chief's log, each line once, in the task log.
    for line in CHIEF_LOG:
        assert logged.count(f"[worker-0] {line}") == 1, line
    assert any(m.startswith(f"TFJob plateau-lstm/{name}: Running") for m in logged)


def test_bad_input_fails_without_retries_and_cleans_up(kubernetes_dag):
    from airflow.sdk.exceptions import AirflowFailException

    cluster = FakeCluster(
        [("Created", ""), ("Failed", "TFJob plateau-lstm/x has failed: 1 Worker replica(s)")],
        ["train: TensorFlow on 1 GPU(s)"],
        exit_codes={0: 137, 1: 2},
        worker_logs={1: ["plateau-lstm train: error: base_lr must be below max_lr", "I0000 x"]},
    )
    _, _, run = launch(kubernetes_dag, cluster)

    with pytest.raises(AirflowFailException, match=r"refused its input \(exit 2\) on worker 1"):
        run()
    assert cluster.tfjobs == {}


def test_other_failures_are_retried_with_the_tfjobs_message(kubernetes_dag):
    cluster = FakeCluster(
        [("Running", ""), ("Failed", "1 Worker replica(s) failed")],
        ["Epoch 1/3"],
        exit_codes={0: 0, 1: 137},
        worker_logs={1: ["Killed"]},
    )
    _, _, run = launch(kubernetes_dag, cluster)

    with pytest.raises(
        RuntimeError, match=r"failed: 1 Worker replica\(s\) failed\. worker 1 exit 137: Killed"
    ):
        run()
    assert cluster.tfjobs == {}


def test_a_cluster_without_the_training_operator_is_a_clear_failure(kubernetes_dag):
    from airflow.sdk.exceptions import AirflowFailException

    cluster = FakeCluster(ENDS_WELL, CHIEF_LOG, create_error=404)
    _, _, run = launch(kubernetes_dag, cluster)

    with pytest.raises(AirflowFailException, match="Kubeflow training operator"):
        run()


def test_a_retry_follows_the_running_tfjob_of_a_lost_worker(kubernetes_dag):
    cluster = FakeCluster(ENDS_WELL, CHIEF_LOG)
    task, context, run = launch(kubernetes_dag, cluster)
    cluster.create_custom_object(
        group="kubeflow.org", version="v1", plural="tfjobs",
        body=task.build_tfjob(context), namespace="plateau-lstm",
    )  # fmt: skip
    cluster.steps[task.build_tfjob(context)["metadata"]["name"]] = 1  # it runs already
    cluster.calls.clear()

    assert run()["epochs_run"] == 3
    assert [c for c, _ in cluster.calls if c == "create"] == []


def test_a_retry_replaces_the_failed_tfjob_of_an_earlier_try(kubernetes_dag):
    cluster = FakeCluster([("Failed", "earlier try")], CHIEF_LOG)
    task, context, run = launch(kubernetes_dag, cluster)
    name = task.build_tfjob(context)["metadata"]["name"]
    cluster.create_custom_object(
        group="kubeflow.org", version="v1", plural="tfjobs",
        body=task.build_tfjob(context), namespace="plateau-lstm",
    )  # fmt: skip
    cluster.calls.clear()
    cluster.phases = ENDS_WELL  # the next one goes well

    assert run()["epochs_run"] == 3
    assert [c for c, _ in cluster.calls][:3] == ["get", "delete", "get"]
    assert ("create", name) in cluster.calls


def test_a_tfjob_that_never_starts_fails_after_the_startup_timeout(kubernetes_dag):
    cluster = FakeCluster([("Created", "")], [])
    task, _, run = launch(kubernetes_dag, cluster)
    task.startup_timeout_seconds = 0

    with pytest.raises(RuntimeError, match="did not start within 0 s.*ResourceQuota"):
        run()
    assert cluster.tfjobs == {}


def test_killing_the_task_deletes_its_tfjob(kubernetes_dag):
    cluster = FakeCluster(ENDS_WELL, CHIEF_LOG)
    task, context, _ = launch(kubernetes_dag, cluster)
    body = task.build_tfjob(context)
    cluster.create_custom_object(
        group="kubeflow.org", version="v1", plural="tfjobs", body=body, namespace="plateau-lstm"
    )
    task._tfjob = ("plateau-lstm", body["metadata"]["name"])  # as while execute follows it

    task.on_kill()

    assert cluster.tfjobs == {}


def test_the_result_is_the_last_json_line_of_the_log():
    from lstm_retrain.tfjob import cli_result, tfjob_phase

    assert cli_result(["{not json", '{"a": 1}', "noise", "[1]"]) == {"a": 1}
    assert cli_result(["no result"]) is None
    assert tfjob_phase({}) == ("Pending", "")
    created = {"type": "Created", "status": "True"}
    running = {"type": "Running", "status": "True"}
    failed = {"type": "Failed", "status": "True", "message": "m"}
    assert tfjob_phase({"status": {"conditions": [created, running]}}) == ("Running", "")
    was_running = {**running, "status": "False"}
    assert tfjob_phase({"status": {"conditions": [was_running, failed]}}) == ("Failed", "m")
