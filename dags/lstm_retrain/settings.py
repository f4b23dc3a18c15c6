"""Deployment settings of `lstm_nightly_retrain`, read from the environment once, at parse time.

Only `os.environ`: no Airflow Variables, connections or network at parse time, so the DAG
processor pays nothing for them. Set the same variables for the DAG processor, the scheduler
and the workers (e.g. in the Helm chart's `env`), since the workers parse the file again.

Variables (README.md, "Configuration", has the same list):

- PLATEAU_LSTM_LAUNCHER: `local` (default; each step is a subprocess of the `plateau-lstm` CLI
  on the worker) or `kubernetes` (each step is a pod, KubernetesPodOperator).
- PLATEAU_LSTM_ARTIFACT_ROOT: root of runs/ and champion.json: a local path, file:// or s3://
  URI. Defaults to `<project>/artifacts` with `local`; required, and s3://, with `kubernetes`.
- PLATEAU_LSTM_IMAGE, PLATEAU_LSTM_NAMESPACE, PLATEAU_LSTM_SERVICE_ACCOUNT: the pods' training
  image, namespace and service account (defaults: the pod template's).
- PLATEAU_LSTM_POD_TEMPLATE: the pod_template_file, read on the worker when a step starts.
  Defaults to `<project>/k8s/base/pod-template.yaml`.
- PLATEAU_LSTM_GPU_NODE_SELECTOR: `key=value[,key=value]` for training pods that ask for GPUs.
  Defaults to `nvidia.com/gpu.present=true`; empty for none.
- PLATEAU_LSTM_S3_SECRET: a Secret of AWS_* variables to add to every pod as environment.
  Unset by default: the template's credentials file (Secret `plateau-lstm-s3-credentials`) or
  the service account's workload identity serves.
- PLATEAU_LSTM_KUBERNETES_CONN_ID: Airflow connection to the cluster. Defaults to
  `kubernetes_default`; when that connection does not exist, the in-cluster config is used.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

LAUNCHERS = ("local", "kubernetes")
PROJECT_DIR = Path(__file__).resolve().parents[2]

# Airflow run ids end in an ISO timestamp ("scheduled__2026-12-03T02:00:00+00:00"); ':' and '+'
# are awkward in paths and URLs, so that tail becomes a compact UTC stamp ("...T020000Z").
_AIRFLOW_STAMP = re.compile(r"T(\d{2}):(\d{2}):(\d{2})(\.\d+)?\+00:00")
_SAFE_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_UNSAFE_RUN = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class RetrainSettings:
    """Where the steps run and where their artifacts go; see the module docstring."""

    launcher: str = "local"
    artifact_root: str = str(PROJECT_DIR / "artifacts")
    image: str = "ghcr.io/example/plateau-lstm:0.1.0"
    namespace: str = "plateau-lstm"
    service_account: str = "plateau-lstm-training"
    s3_secret: str | None = None
    pod_template_file: str = str(PROJECT_DIR / "k8s" / "base" / "pod-template.yaml")
    gpu_node_selector: Mapping[str, str] = field(
        default_factory=lambda: {"nvidia.com/gpu.present": "true"}
    )
    kubernetes_conn_id: str = "kubernetes_default"


def load_settings(environ: Mapping[str, str] = os.environ) -> RetrainSettings:
    """Read the PLATEAU_LSTM_* variables; a bad value raises ValueError naming the variable."""
    defaults = RetrainSettings()
    launcher = environ.get("PLATEAU_LSTM_LAUNCHER", "").strip().lower() or defaults.launcher
    if launcher not in LAUNCHERS:
        raise ValueError(
            f"PLATEAU_LSTM_LAUNCHER must be one of {', '.join(LAUNCHERS)}. Received: {launcher!r}"
        )
    root = environ.get("PLATEAU_LSTM_ARTIFACT_ROOT", "").strip()
    if launcher == "kubernetes" and not root.startswith("s3://"):
        raise ValueError(
            "PLATEAU_LSTM_ARTIFACT_ROOT must be an s3://bucket/prefix URI with the kubernetes "
            f"launcher: pods share no disk with each other. Received: {root!r}"
        )
    if root and "://" not in root and not os.path.isabs(root):
        root = os.path.abspath(root)  # a worker's working directory is nobody's business
    return RetrainSettings(
        launcher=launcher,
        artifact_root=(root or defaults.artifact_root).rstrip("/"),
        image=_get(environ, "PLATEAU_LSTM_IMAGE", defaults.image),
        namespace=_get(environ, "PLATEAU_LSTM_NAMESPACE", defaults.namespace),
        service_account=_get(environ, "PLATEAU_LSTM_SERVICE_ACCOUNT", defaults.service_account),
        s3_secret=environ.get("PLATEAU_LSTM_S3_SECRET", "").strip() or None,
        pod_template_file=_get(environ, "PLATEAU_LSTM_POD_TEMPLATE", defaults.pod_template_file),
        gpu_node_selector=_node_selector(environ.get("PLATEAU_LSTM_GPU_NODE_SELECTOR")),
        kubernetes_conn_id=_get(
            environ, "PLATEAU_LSTM_KUBERNETES_CONN_ID", defaults.kubernetes_conn_id
        ),
    )


def run_key(run_id: str) -> str:
    """The folder name of a DAG run under `<root>/runs/`: safe in paths and S3 keys, one per run.

    Example: `scheduled__2026-12-03T02:00:00+00:00` -> `scheduled__2026-12-03T020000Z`. Any
    other character outside `[A-Za-z0-9._-]` is replaced and a hash of the original run id is
    appended, so two different run ids never share a folder.
    """
    if not run_id:
        raise ValueError("run_key needs a non-empty run id")
    key = _AIRFLOW_STAMP.sub(lambda m: f"T{m[1]}{m[2]}{m[3]}{m[4] or ''}Z", run_id)
    if _SAFE_KEY.fullmatch(key):
        return key
    cleaned = _UNSAFE_RUN.sub("-", key).strip(".-_")[:96] or "run"
    digest = hashlib.sha256(run_id.encode()).hexdigest()[:12]
    return f"{cleaned}-{digest}"


def run_uris(artifact_root: str, run_id: str) -> dict[str, str]:
    """Every URI a run reads or writes: its own prepared/model/eval folders and the registry."""
    run = f"{artifact_root.rstrip('/')}/runs/{run_key(run_id)}"
    return {
        "run": run,
        "prepared": f"{run}/prepared",
        "model": f"{run}/model",
        "eval": f"{run}/eval",
        "registry": artifact_root.rstrip("/"),
    }


def _get(environ: Mapping[str, str], name: str, default: str) -> str:
    return environ.get(name, "").strip() or default


def _node_selector(text: str | None) -> dict[str, str]:
    if text is None:
        return dict(RetrainSettings().gpu_node_selector)
    selector = {}
    for pair in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(
                "PLATEAU_LSTM_GPU_NODE_SELECTOR takes key=value pairs separated by commas. "
                f"Received: {text!r}"
            )
        selector[key.strip()] = value.strip()
    return selector
