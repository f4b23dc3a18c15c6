"""Writes, as JSON, every pod and the TFJob the nightly DAG would launch with the `kubernetes`
launcher.

Run as a script in a fresh interpreter, since the DAG reads its settings from the environment
when it is parsed: `python tests/k8s/dag_pods.py OUT.json` writes {"pods": {task_id: {...}},
"tfjob": {...}}. Each pod is what KubernetesPodOperator itself builds (`build_pod_request_obj`):
the pod template file merged with the task's own parts and the XCom sidecar, with the DAG's
default params. The TFJob is what `train_model` sends for the same run with `workers` = 2
(`build_tfjob`). No cluster is contacted (dry_run).

`python tests/k8s/dag_pods.py --write-example` rewrites k8s/examples/tfjob-train.yaml from the
same TFJob; tests/k8s checks that the two agree.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DAG_FILE = REPO / "dags" / "lstm_nightly_retrain.py"
RUN_ID = "scheduled__2026-12-03T02:00:00+00:00"
ARTIFACT_ROOT = "s3://plateau-lstm-artifacts/nightly"
TFJOB_WORKERS = 2
TFJOB_EXAMPLE = REPO / "k8s" / "examples" / "tfjob-train.yaml"
# Labels that change with the Airflow release, not with the DAG: left out of the example.
VOLATILE_LABELS = ("airflow_version",)
EXAMPLE_HEADER = """\
# EXAMPLE ONLY: the TFJob that `train_model` creates for a run with workers=2 and otherwise
# default params (run scheduled__2026-12-03T02:00:00+00:00, artifact root
# s3://plateau-lstm-artifacts/nightly), for reading and for trying by hand:
#   kubectl create -f k8s/examples/tfjob-train.yaml
# Not part of the kustomization: it needs the Kubeflow training operator's CRD, and the DAG
# creates one per run itself (dags/lstm_retrain/tfjob.py). Generated, never edited by hand:
#   .venv/bin/python tests/k8s/dag_pods.py --write-example
# tests/k8s checks that it is what the DAG sends. Each worker's pod is the single training pod
# (k8s/base/pod-template.yaml and the DAG's parts), with the container named `tensorflow` and
# the port `tfjob-port` 2222 the training operator expects.
"""


def main(output: Path) -> None:
    dag = _parse_dag()

    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from kubernetes.client import ApiClient

    params = dag.params.dump()
    pods = {}
    for task in dag.tasks:
        if not isinstance(task, KubernetesPodOperator):
            continue
        context = _context(dag, task, params)
        task.render_template_fields(context)
        pod = task.build_pod_request_obj(context, dry_run=True)
        pods[task.task_id] = {
            "pod_template_file": task.pod_template_file,
            "pod": ApiClient().sanitize_for_serialization(pod),
        }
    launched = {"pods": pods, "tfjob": build_tfjob(dag)}
    output.write_text(json.dumps(launched), encoding="utf-8")


def build_tfjob(dag) -> dict[str, Any]:
    """The TFJob of `train_model` for RUN_ID with TFJOB_WORKERS workers, as the task builds it."""
    task = dag.get_task("train_model")
    params = copy.deepcopy(dag.params)
    params["workers"] = TFJOB_WORKERS  # checked against the param's schema, as a trigger is
    params = params.validate()
    context = _context(dag, task, params)
    task.render_template_fields(context)
    return task.build_tfjob(context)


def without_volatile_labels(tfjob: dict[str, Any]) -> dict[str, Any]:
    """The TFJob less the labels that follow the Airflow release (see VOLATILE_LABELS)."""
    tfjob = json.loads(json.dumps(tfjob))
    metadatas = [tfjob["metadata"]]
    metadatas += [r["template"]["metadata"] for r in tfjob["spec"]["tfReplicaSpecs"].values()]
    for metadata in metadatas:
        for label in VOLATILE_LABELS:
            metadata.get("labels", {}).pop(label, None)
    return tfjob


def write_example() -> None:
    import yaml

    os.environ.update(PLATEAU_LSTM_LAUNCHER="kubernetes", PLATEAU_LSTM_ARTIFACT_ROOT=ARTIFACT_ROOT)
    for name in [n for n in os.environ if n.startswith("PLATEAU_LSTM_")]:
        if name not in ("PLATEAU_LSTM_LAUNCHER", "PLATEAU_LSTM_ARTIFACT_ROOT"):
            del os.environ[name]
    tfjob = without_volatile_labels(build_tfjob(_parse_dag()))
    text = yaml.safe_dump(tfjob, sort_keys=False, default_flow_style=False, width=100)
    TFJOB_EXAMPLE.write_text(EXAMPLE_HEADER + text, encoding="utf-8")


def _parse_dag():
    sys.path.insert(0, str(DAG_FILE.parent))
    spec = importlib.util.spec_from_file_location("lstm_nightly_retrain_dag", DAG_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.lstm_nightly_retrain()


def _context(dag, task, params) -> dict[str, Any]:
    ti = SimpleNamespace(
        dag_id=dag.dag_id, task_id=task.task_id, run_id=RUN_ID, try_number=1, map_index=-1
    )
    return {"params": params, "run_id": RUN_ID, "ti": ti, "dag": dag, "task": task}


if __name__ == "__main__":
    if sys.argv[1:] == ["--write-example"]:
        write_example()
    else:
        main(Path(sys.argv[1]))
