"""The `kubernetes` launcher: each step is a pod of the training image (KubernetesPodOperator).

The pod starts from `k8s/base/pod-template.yaml` (the contract with the manifests: restricted
security context, service account, S3 settings from a ConfigMap and credentials from a Secret,
/tmp volume), which KPO reads on the worker when the step starts. This module adds the per-step
parts: image, arguments, resources, GPU limit, node selector and tolerations for training, an
optional extra Secret of AWS_* variables, and the XCom sidecar's security context, so the
whole pod passes the restricted Pod Security Standard. With the run's `workers` above 1,
`train_model` runs a Kubeflow TFJob of such pods instead (lstm_retrain.tfjob).

Imported only when PLATEAU_LSTM_LAUNCHER=kubernetes: the provider is not free to import.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.providers.cncf.kubernetes.utils.xcom_sidecar import PodDefaults
from kubernetes.client import models as k8s

from lstm_retrain.settings import RetrainSettings
from lstm_retrain.steps import Step, step_arguments

# Where KPO's XCom sidecar reads the task's result; the CLI writes it there (--result-file).
XCOM_RETURN_FILE = f"{PodDefaults.XCOM_MOUNT_PATH}/return.json"
GPU_RESOURCE = "nvidia.com/gpu"

# The step pods' sizes; training gets the GPUs asked for in the run's `gpus` param on top.
STEP_RESOURCES = {
    "prepare": ({"cpu": "1", "memory": "2Gi"}, {"cpu": "2", "memory": "8Gi"}),
    "train": ({"cpu": "4", "memory": "16Gi"}, {"cpu": "8", "memory": "32Gi"}),
    "evaluate": ({"cpu": "1", "memory": "4Gi"}, {"cpu": "4", "memory": "16Gi"}),
    "promote": ({"cpu": "100m", "memory": "256Mi"}, {"cpu": "1", "memory": "1Gi"}),
}

# The restricted profile for a container of ours: the sidecar has no securityContext otherwise.
RESTRICTED_CONTAINER = k8s.V1SecurityContext(
    allow_privilege_escalation=False,
    privileged=False,
    read_only_root_filesystem=True,
    run_as_non_root=True,
    capabilities=k8s.V1Capabilities(drop=["ALL"]),
    seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"),
)


class PlateauLstmStepOperator(KubernetesPodOperator):
    """KubernetesPodOperator for one `plateau-lstm` step; arguments come from the run's params.

    The arguments, resources and GPU placement are filled in while rendering templates, from
    the same `step_arguments` the local launcher uses, so the UI's "Rendered Template" tab shows
    the exact command line of each try.
    """

    def __init__(self, *, step: Step, settings: RetrainSettings, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.step = step
        self.settings = settings

    def render_template_fields(self, context, jinja_env=None) -> None:
        super().render_template_fields(context, jinja_env)
        params = context["params"]
        self.arguments = [
            *self.result_arguments(params),
            *step_arguments(
                self.step.command, params, self.settings.artifact_root, context["run_id"]
            ),
        ]
        requests, limits = STEP_RESOURCES[self.step.command]
        gpus = int(params["gpus"]) if self.step.command == "train" else 0
        if gpus:
            limits = {**limits, GPU_RESOURCE: str(gpus)}
            self.node_selector = dict(self.settings.gpu_node_selector)
            self.tolerations = [
                k8s.V1Toleration(key=GPU_RESOURCE, operator="Exists", effect="NoSchedule")
            ]
        self.container_resources = k8s.V1ResourceRequirements(requests=requests, limits=limits)

    def result_arguments(self, params: dict[str, Any]) -> list[str]:
        """The CLI's global options that send its JSON result where the XCom sidecar reads it."""
        return ["--result-file", XCOM_RETURN_FILE]


def step_pod(step: Step, settings: RetrainSettings) -> PlateauLstmStepOperator:
    """The pod operator that runs `step`; pushes the CLI's JSON result to XCom.

    `train` gets the subclass that runs a TFJob instead of the pod when the run asks for more
    than one worker (lstm_retrain.tfjob), so the DAG keeps one `train_model` task either way.
    """
    operator_class = PlateauLstmStepOperator
    if step.command == "train":
        from lstm_retrain.tfjob import PlateauLstmTrainOperator

        operator_class = PlateauLstmTrainOperator
    deadline = int(step.timeout.total_seconds())
    return operator_class(
        task_id=step.task_id,
        doc_md=step.doc,
        step=step,
        settings=settings,
        execution_timeout=step.timeout,
        kubernetes_conn_id=settings.kubernetes_conn_id,
        pod_template_file=settings.pod_template_file,
        namespace=settings.namespace,
        service_account_name=settings.service_account,
        image=settings.image,
        name=f"plateau-lstm-{step.command}",
        labels={"app.kubernetes.io/instance": f"lstm-nightly-retrain-{step.command}"},
        env_vars=[k8s.V1EnvVar(name="PYTHONUNBUFFERED", value="1")],
        secrets=_secrets(settings.s3_secret),
        xcom_sidecar_container_security_context=RESTRICTED_CONTAINER,
        do_xcom_push=True,
        get_logs=True,
        log_events_on_failure=True,
        on_finish_action="delete_pod",
        on_kill_action="delete_pod",
        reattach_on_restart=True,
        # The pod stops on its own when the task's time is up, even if the worker died.
        active_deadline_seconds=deadline,
        # Room for a GPU node to scale up and pull the image.
        startup_timeout_seconds=900,
        termination_message_policy="FallbackToLogsOnError",
    )


def _secrets(s3_secret: str | None) -> list:
    if not s3_secret:
        return []
    from airflow.providers.cncf.kubernetes.secret import Secret

    # deploy_target None: every key of the Secret becomes a variable (envFrom).
    return [Secret("env", None, s3_secret)]
