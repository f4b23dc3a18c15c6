"""Writes, as JSON, every pod the nightly DAG would launch with the `kubernetes` launcher.

Run as a script in a fresh interpreter, since the DAG reads its settings from the environment
when it is parsed: `python tests/k8s/dag_pods.py OUT.json`. Each pod is what
KubernetesPodOperator itself builds (`build_pod_request_obj`): the pod template file merged with
the task's own parts and the XCom sidecar, with the DAG's default params. No cluster is contacted
(dry_run).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[2]
DAG_FILE = REPO / "dags" / "lstm_nightly_retrain.py"
RUN_ID = "scheduled__2026-12-03T02:00:00+00:00"


def main(output: Path) -> None:
    sys.path.insert(0, str(DAG_FILE.parent))
    spec = importlib.util.spec_from_file_location("lstm_nightly_retrain_dag", DAG_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    dag = module.lstm_nightly_retrain()

    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from kubernetes.client import ApiClient

    params = dag.params.dump()
    pods = {}
    for task in dag.tasks:
        if not isinstance(task, KubernetesPodOperator):
            continue
        ti = SimpleNamespace(
            dag_id=dag.dag_id, task_id=task.task_id, run_id=RUN_ID, try_number=1, map_index=-1
        )
        context = {"params": params, "run_id": RUN_ID, "ti": ti, "dag": dag, "task": task}
        task.render_template_fields(context)
        pod = task.build_pod_request_obj(context, dry_run=True)
        pods[task.task_id] = {
            "pod_template_file": task.pod_template_file,
            "pod": ApiClient().sanitize_for_serialization(pod),
        }
    output.write_text(json.dumps(pods), encoding="utf-8")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
