"""Fixtures for the k8s/ checks: the built kustomizations and the pods the DAG would launch.

- `built` (session): {kustomization name: objects}, from `kubectl kustomize`, for the base and
  every overlay under k8s/overlays/.
- `base_objects` (session): the base's objects.
- `pod_template` (session): k8s/base/pod-template.yaml as a dict.
- `dag_pods` (session): {task_id: {"pod_template_file", "pod"}} for every KubernetesPodOperator
  task of the nightly DAG with the `kubernetes` launcher, built by the operator itself.
- `dag_tfjob` (session): the TFJob `train_model` sends for a run with workers=2, built by the
  task itself (dag_pods.py builds both, in one fresh interpreter).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from dag_pods import ARTIFACT_ROOT
from manifests import BASE, KUSTOMIZATIONS, POD_TEMPLATE, build, load_documents


@pytest.fixture(scope="session")
def built() -> dict[str, list[dict[str, Any]]]:
    return {path.name: build(path) for path in KUSTOMIZATIONS}


@pytest.fixture(scope="session")
def base_objects(built: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return built[BASE.name]


@pytest.fixture(scope="session")
def pod_template() -> dict[str, Any]:
    (template,) = load_documents(POD_TEMPLATE)
    return template


@pytest.fixture(scope="session")
def dag_launches(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    airflow_home = tmp_path_factory.mktemp("airflow-home")
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(airflow_home),
        "PLATEAU_LSTM_LAUNCHER": "kubernetes",
        "PLATEAU_LSTM_ARTIFACT_ROOT": ARTIFACT_ROOT,
    }
    # Only the defaults of the pod settings are under test: drop any the caller has set.
    for name in list(env):
        if name.startswith("PLATEAU_LSTM_") and name not in (
            "PLATEAU_LSTM_LAUNCHER",
            "PLATEAU_LSTM_ARTIFACT_ROOT",
        ):
            del env[name]
    output = airflow_home / "pods.json"
    result = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("dag_pods.py")), str(output)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"building the DAG's pods failed:\n{result.stderr[-4000:]}"
    return json.loads(output.read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def dag_pods(dag_launches: dict[str, Any]) -> dict[str, dict[str, Any]]:
    pods = dag_launches["pods"]
    assert pods, "the DAG launched no KubernetesPodOperator task with the kubernetes launcher"
    return pods


@pytest.fixture(scope="session")
def dag_tfjob(dag_launches: dict[str, Any]) -> dict[str, Any]:
    return dag_launches["tfjob"]
