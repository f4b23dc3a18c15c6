"""Multi-worker training: `train_model` as a Kubeflow TFJob when the run's `workers` is above 1.

Why a TFJob (kubeflow.org/v1, the Kubeflow training operator v1.7 or newer) and not Kubeflow
Trainer v2's TrainJob: Trainer v2's runtimes cover PyTorch, DeepSpeed, MLX and JAX but not
TensorFlow. The TFJob controller gives every replica the TF_CONFIG that TensorFlow's
MultiWorkerMirroredStrategy reads, and a headless Service per replica for the addresses in it.

Replicas: one `Worker` spec with `replicas: workers` and no `Chief`. Without a chief, TensorFlow
makes worker 0 the chief, the one worker that writes `--output` (the CLI's contract). Every
worker trains, so all pods are alike and the count the user asked for is the count that runs; a
separate Chief spec would be a second template to keep identical to the first.

Each worker's pod is the single training pod, built the same way (KubernetesPodOperator's own
`build_pod_request_obj`: the pod template file, resources, `gpus` GPUs, the GPU node selector
and tolerations, the S3 Secret, the deadline), with three changes: the container is named
`tensorflow` (the operator requires that name and puts TF_CONFIG there), it declares the port
`tfjob-port` 2222 (what TF_CONFIG's addresses point at; the NetworkPolicy `training-workers`
opens it between workers only), and there is no XCom sidecar: the task's result is the CLI's
JSON result, the last JSON line of the chief's log.

Lifecycle: one TFJob per DAG run, named from the run. The task creates it, follows it (its
conditions, and the chief's log into the task log), and deletes it when it ends or is killed,
like the pod launcher's `delete_pod`. A retry after a lost Airflow worker follows a TFJob that
is still running, instead of starting a second; one that failed is replaced (training resumes
from the last committed checkpoint). Airflow does the retrying: a worker that dies fails the
TFJob (restartPolicy Never, backoffLimit 0), since one restarted worker cannot rejoin the
others' collectives.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import deque
from typing import Any

from airflow.sdk.exceptions import AirflowFailException
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from lstm_retrain.local import EXIT_BAD_INPUT
from lstm_retrain.pods import GPU_RESOURCE, PlateauLstmStepOperator
from lstm_retrain.steps import workers

log = logging.getLogger(__name__)

GROUP, VERSION, PLURAL, KIND = "kubeflow.org", "v1", "tfjobs", "TFJob"
# The training operator's names: it looks for this container and this port name.
CONTAINER = "tensorflow"
PORT_NAME, PORT = "tfjob-port", 2222
# Our mark on the workers' pods; the NetworkPolicy `training-workers` selects it.
DISTRIBUTION_LABEL = ("plateau-lstm/distribution", "multi-worker")
# Labels by which KubernetesPodOperator recognises pods it started; a TFJob's pods are not.
_POD_OPERATOR_LABELS = ("kubernetes_pod_operator", "airflow_kpo_in_cluster")
# The launcher deletes its TFJob when done; this only clears one whose launcher died.
FINISHED_TTL_S = 3600
_GONE_TIMEOUT_S = 120
_LOG_OVERLAP_S = 30


class PlateauLstmTrainOperator(PlateauLstmStepOperator):
    """`train_model` on Kubernetes: one pod, or a TFJob of `workers` pods when `workers` > 1.

    One task either way, so the DAG's shape, trigger rules, retries and XCom do not depend on
    the run's params. The "Rendered Template" tab shows which one a try launched (`launch`)
    and the exact command line of the workers (`arguments`).
    """

    template_fields = (*PlateauLstmStepOperator.template_fields, "launch")
    poll_interval_s = 10.0

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.launch = "pod"
        self._tfjob: tuple[str, str] | None = None  # (namespace, name) while one runs

    def render_template_fields(self, context, jinja_env=None) -> None:
        super().render_template_fields(context, jinja_env)
        count = workers(context["params"])
        if count > 1:
            gpus = self.container_resources.limits.get(GPU_RESOURCE, "0")
            self.launch = (
                f"TFJob {self.namespace}/{tfjob_name(context['ti'].dag_id, context['run_id'])} "
                f"({GROUP}/{VERSION}): {count} workers, {gpus} {GPU_RESOURCE} each"
            )
        else:
            self.launch = "pod"

    def result_arguments(self, params: dict[str, Any]) -> list[str]:
        # A TFJob has no XCom sidecar: the result comes from the chief's log.
        return [] if workers(params) > 1 else super().result_arguments(params)

    def build_tfjob(self, context) -> dict[str, Any]:
        """The TFJob this task creates for the run in `context` (after render_template_fields).

        Contacts no cluster, like `build_pod_request_obj(context, dry_run=True)`, which builds
        the workers' pod.
        """
        # The pod launcher's pod less the XCom sidecar, which has no place in a TFJob.
        push, self.do_xcom_push = self.do_xcom_push, False
        try:
            pod = self.build_pod_request_obj(context, dry_run=True)
        finally:
            self.do_xcom_push = push
        pod = ApiClient().sanitize_for_serialization(pod)
        metadata, spec = pod["metadata"], pod["spec"]
        (container,) = spec["containers"]
        container["name"] = CONTAINER
        container["ports"] = [
            *container.get("ports", []),
            {"name": PORT_NAME, "containerPort": PORT, "protocol": "TCP"},
        ]
        labels = {k: v for k, v in metadata["labels"].items() if k not in _POD_OPERATOR_LABELS}
        labels[DISTRIBUTION_LABEL[0]] = DISTRIBUTION_LABEL[1]
        template_metadata: dict[str, Any] = {"labels": labels}
        if metadata.get("annotations"):
            template_metadata["annotations"] = metadata["annotations"]
        return {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "metadata": {
                "name": tfjob_name(context["ti"].dag_id, context["run_id"]),
                "namespace": metadata["namespace"],
                "labels": dict(labels),
            },
            "spec": {
                "runPolicy": {
                    # When the job ends, stop the workers still running (after one failed, the
                    # others wait in collectives, holding GPUs) but keep the finished ones,
                    # whose logs and exit codes the launcher reads before deleting the job.
                    "cleanPodPolicy": "Running",
                    "backoffLimit": 0,
                    "activeDeadlineSeconds": spec["activeDeadlineSeconds"],
                    "ttlSecondsAfterFinished": FINISHED_TTL_S,
                },
                "tfReplicaSpecs": {
                    "Worker": {
                        "replicas": workers(context["params"]),
                        "restartPolicy": "Never",
                        "template": {"metadata": template_metadata, "spec": spec},
                    }
                },
            },
        }

    def execute(self, context):
        if workers(context["params"]) <= 1:
            return super().execute(context)
        return self._run_tfjob(self.build_tfjob(context))

    def on_kill(self) -> None:
        if self._tfjob is None:
            super().on_kill()
            return
        self._delete(*self._tfjob)

    # --- the TFJob's life --------------------------------------------------------------------

    def _run_tfjob(self, body: dict[str, Any]) -> dict[str, Any]:
        namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
        count = body["spec"]["tfReplicaSpecs"]["Worker"]["replicas"]
        self._tfjob = (namespace, name)
        try:
            existing = self._get(namespace, name)
            if existing is not None and tfjob_phase(existing)[0] == "Failed":
                log.info("TFJob %s/%s failed in an earlier try: replacing it", namespace, name)
                self._delete(namespace, name)
                self._wait_gone(namespace, name)
                existing = None
            if existing is None:
                self._create(body)
            else:
                log.info("Following TFJob %s/%s, started by an earlier try", namespace, name)
            phase, message, chief_log = self._follow(namespace, name)
            if phase == "Failed":
                self._fail(namespace, name, count, message)
            result = cli_result(chief_log)
            if result is None:
                log.warning("No JSON result in the chief's log; returning the TFJob's name only")
            return {**(result or {}), "tfjob": name, "workers": count}
        finally:
            self._delete(namespace, name)
            self._tfjob = None

    def _create(self, body: dict[str, Any]) -> None:
        namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
        log.info("Creating TFJob %s/%s", namespace, name)
        try:
            self.hook.create_custom_object(
                group=GROUP, version=VERSION, plural=PLURAL, body=body, namespace=namespace
            )
        except ApiException as error:
            if error.status == 409:  # created meanwhile by another try: follow that one
                return
            if error.status in (403, 404, 422):  # the cluster's setup, not luck: no retry
                raise AirflowFailException(
                    f"Creating TFJob {namespace}/{name} was refused ({error.status}): "
                    f"{_api_message(error)}. {_SETUP_HINT[error.status]}"
                ) from None
            raise

    def _follow(self, namespace: str, name: str) -> tuple[str, str, list[str]]:
        """Wait for the TFJob to end; log its conditions and the chief's log on the way."""
        chief = PodLog(self.hook.core_v1_client, namespace, f"{name}-worker-0", "worker-0")
        started, seen_running, last = time.monotonic(), False, None
        while True:
            job = self._get(namespace, name)
            if job is None:
                raise RuntimeError(f"TFJob {namespace}/{name} was deleted while it ran")
            phase, message = tfjob_phase(job)
            if (phase, message) != last:
                log.info("TFJob %s/%s: %s %s", namespace, name, phase, message)
                last = (phase, message)
            chief.read()
            if phase in ("Succeeded", "Failed"):
                return phase, message, list(chief.lines)
            seen_running = seen_running or phase == "Running"
            if not seen_running and time.monotonic() - started > self.startup_timeout_seconds:
                raise RuntimeError(
                    f"TFJob {namespace}/{name} did not start within "
                    f"{self.startup_timeout_seconds} s ({phase}: {message or 'no message'}). "
                    "Are there GPU nodes for every worker, and does the namespace's ResourceQuota "
                    "allow workers x gpus GPUs?"
                )
            time.sleep(self.poll_interval_s)

    def _fail(self, namespace: str, name: str, count: int, message: str) -> None:
        """Raise the TFJob's failure: without retries when the CLI refused its input (exit 2)."""
        core = self.hook.core_v1_client
        exits = {}
        for index in range(count):
            pod = f"{name}-worker-{index}"
            code = _exit_code(core, namespace, pod)
            if code is None or code == 0:
                continue
            tail = PodLog(core, namespace, pod, f"worker-{index}").tail(20)
            for line in tail:
                log.info("[worker-%d] %s", index, line)
            exits[index] = (code, _last_message(tail))
        refused = [i for i, (code, _) in sorted(exits.items()) if code == EXIT_BAD_INPUT]
        if refused:
            raise AirflowFailException(
                f"plateau-lstm train refused its input (exit 2) on worker {refused[0]}, so no "
                f"retry: {exits[refused[0]][1]}"
            )
        codes = ", ".join(f"worker {i} exit {code}: {line}" for i, (code, line) in exits.items())
        raise RuntimeError(f"TFJob {namespace}/{name} failed: {message}. {codes}".strip())

    def _get(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.hook.get_custom_object(
                group=GROUP, version=VERSION, plural=PLURAL, name=name, namespace=namespace
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def _delete(self, namespace: str, name: str) -> None:
        try:
            self.hook.delete_custom_object(
                group=GROUP,
                version=VERSION,
                plural=PLURAL,
                name=name,
                namespace=namespace,
                # Foreground: the TFJob stays until its pods are gone, so a replacement never
                # starts while an old chief, in its grace period, still commits a checkpoint.
                propagation_policy="Foreground",
            )
            log.info("Deleted TFJob %s/%s", namespace, name)
        except ApiException as error:
            if error.status != 404:
                log.exception("Unable to delete TFJob %s/%s", namespace, name)

    def _wait_gone(self, namespace: str, name: str) -> None:
        deadline = time.monotonic() + _GONE_TIMEOUT_S
        while self._get(namespace, name) is not None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"TFJob {namespace}/{name} still exists after deletion")
            time.sleep(min(self.poll_interval_s, 2.0))


_SETUP_HINT = {
    403: "The launcher's Role (k8s/base/role-pod-launcher.yaml) must allow tfjobs.",
    404: "Is the Kubeflow training operator (v1.7 or newer) installed, and does the namespace "
    "exist? Without it, train with workers=1.",
    422: "The TFJob was not valid for this cluster.",
}


def tfjob_name(dag_id: str, run_id: str) -> str:
    """One name per DAG run, short enough for its pods and Services (`<name>-worker-15`)."""
    digest = hashlib.sha256(f"{dag_id}\n{run_id}".encode()).hexdigest()[:12]
    return f"plateau-lstm-train-{digest}"


def tfjob_phase(job: dict[str, Any]) -> tuple[str, str]:
    """Where a TFJob stands: Succeeded or Failed (final), else its newest true condition."""
    conditions = [c for c in (job.get("status") or {}).get("conditions") or [] if _true(c)]
    for final in ("Failed", "Succeeded"):
        for condition in conditions:
            if condition.get("type") == final:
                return final, condition.get("message", "")
    if conditions:
        return conditions[-1].get("type", "Unknown"), conditions[-1].get("message", "")
    return "Pending", ""


def cli_result(lines: list[str]) -> dict[str, Any] | None:
    """The CLI's JSON result: its last stdout line, the last JSON object in the log."""
    for line in reversed(lines):
        text = line.strip()
        if not text.startswith("{"):
            continue
        try:
            value = json.loads(text)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


class PodLog:
    """The new lines of a container's log at each `read()`, copied into the task log."""

    def __init__(self, core, namespace: str, pod: str, prefix: str) -> None:
        self._core, self._namespace, self._pod, self._prefix = core, namespace, pod, prefix
        self._last_stamp, self._seen_at_last_stamp = "", 0
        self._last_read: float | None = None
        self.lines: deque[str] = deque(maxlen=200)

    def read(self) -> None:
        kwargs: dict[str, Any] = {"timestamps": True}
        if self._last_read is not None:
            # Relative to the node's clock, so the overlap (deduplicated by timestamp below)
            # covers clock skew and lines still in flight at the last read.
            kwargs["since_seconds"] = int(time.monotonic() - self._last_read) + _LOG_OVERLAP_S
        now = time.monotonic()
        text = self._fetch(**kwargs)
        if text is None:
            return
        self._last_read = now
        # Lines written at once can share a timestamp: count them, so that an overlapping read
        # skips exactly the ones already copied.
        at_stamp: dict[str, int] = {}
        for raw in text.splitlines():
            stamp, _, line = raw.partition(" ")
            key = _stamp_key(stamp)
            at_stamp[key] = at_stamp.get(key, 0) + 1
            if key < self._last_stamp or (
                key == self._last_stamp and at_stamp[key] <= self._seen_at_last_stamp
            ):
                continue
            if key != self._last_stamp:
                self._last_stamp, self._seen_at_last_stamp = key, 0
            self._seen_at_last_stamp += 1
            self.lines.append(line)
            log.info("[%s] %s", self._prefix, line)

    def tail(self, lines: int) -> list[str]:
        text = self._fetch(tail_lines=lines)
        return text.splitlines() if text else []

    def _fetch(self, **kwargs: Any) -> str | None:
        try:
            response = self._core.read_namespaced_pod_log(
                self._pod, self._namespace, container=CONTAINER, _preload_content=False, **kwargs
            )
        except ApiException as error:
            if error.status in (400, 404):  # not started yet, or already gone
                return None
            raise
        # Raw bytes: the client's own decoding would turn a log that is one JSON document
        # into a Python repr.
        return response.data.decode("utf-8", "replace")


def _exit_code(core, namespace: str, pod: str) -> int | None:
    try:
        status = core.read_namespaced_pod(pod, namespace).status
    except ApiException as error:
        if error.status == 404:
            return None
        raise
    for container in status.container_statuses or []:
        if container.name == CONTAINER and container.state and container.state.terminated:
            return container.state.terminated.exit_code
    return None


def _last_message(lines: list[str]) -> str:
    """The CLI's one-line error ("plateau-lstm train: ..."), else the log's last line."""
    for line in reversed(lines):
        if line.startswith("plateau-lstm "):
            return line
    return lines[-1] if lines else "(no output)"


def _stamp_key(stamp: str) -> str:
    """An RFC 3339 timestamp of the kubelet, comparable as text (nanoseconds padded)."""
    seconds, _, fraction = stamp.rstrip("Z").partition(".")
    return f"{seconds}.{fraction.ljust(9, '0')}"


def _true(condition: dict[str, Any]) -> bool:
    return str(condition.get("status", "")).lower() == "true"


def _api_message(error: ApiException) -> str:
    try:
        return json.loads(error.body)["message"]
    except (TypeError, ValueError, KeyError):
        return str(error.reason)
