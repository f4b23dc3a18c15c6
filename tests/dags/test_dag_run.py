"""The DAG end to end: `dag.test()` with the local launcher, artifacts in a real SeaweedFS bucket.

Three nights in one test, since each builds on the one before: a first run makes a champion; the
same run again (every task retried) rewrites only its own outputs and changes nothing; a worse
model the next night leaves the champion as it was. Training is tiny (a few epochs, a short
window, narrow layers) through the DAG's own params, so a run takes about a minute on two cores.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from dag_test_env import DAG_ID

TINY = {
    "epochs": 3,
    "window": 16,
    "lstm_layers": 1,
    "lstm_units": 8,
    "dense_units": 8,
    "batch_size": 128,
}
# One epoch at a learning rate too small to move the weights: the model stays about where it
# starts (near persistence), clearly worse than the first night's.
WORSE = {**TINY, "epochs": 1, "base_lr": 1e-7, "max_lr": 2e-7}
TASKS = ["prepare_data", "train_model", "evaluate_model", "promote_model"]
FIRST_NIGHT = datetime(2026, 1, 5, 2, 0, tzinfo=UTC)
SECOND_NIGHT = datetime(2026, 1, 6, 2, 0, tzinfo=UTC)


def run_dag(dag, night: datetime, conf: dict):
    """One DAG run through dag.test(); the run id is fixed by the night, as a scheduled run's is."""
    return dag.test(logical_date=night, run_after=night, run_conf=conf)


def outcome(dag_run) -> dict[str, tuple[str, object]]:
    """{task_id: (state, returned value)} of a finished run, read back from the metadata DB."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        tis = session.scalars(
            select(TaskInstance).where(
                TaskInstance.dag_id == DAG_ID, TaskInstance.run_id == dag_run.run_id
            )
        ).all()
        xcoms = session.scalars(
            select(XComModel).where(
                XComModel.dag_id == DAG_ID,
                XComModel.run_id == dag_run.run_id,
                XComModel.key == "return_value",
            )
        ).all()
        values = {x.task_id: XComModel.deserialize_value(x) for x in xcoms}
        return {ti.task_id: (str(ti.state), values.get(ti.task_id)) for ti in tis}


def bucket_objects(client, bucket: str) -> dict[str, str]:
    """{key: ETag} of every object in the bucket."""
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return {o["Key"]: o["ETag"] for page in pages for o in page.get("Contents", [])}


def test_three_nights_end_to_end_on_s3(parse_dag, airflow_db, s3_env, seaweedfs):
    from lstm_retrain.settings import run_key

    root = f"{s3_env}/nightly"
    bucket = s3_env.removeprefix("s3://")
    client = seaweedfs.client()
    dag = parse_dag(artifact_root=root)  # the local launcher: the embedded default

    def read(key: str) -> bytes:
        return client.get_object(Bucket=bucket, Key=f"nightly/{key}")["Body"].read()

    # --- Night 1: the first good model becomes the champion ---------------------------------
    first = run_dag(dag, FIRST_NIGHT, TINY)

    assert str(first.state) == "success"
    results = outcome(first)
    assert {task: state for task, (state, _) in results.items()} == dict.fromkeys(TASKS, "success")
    run = f"runs/{run_key(first.run_id)}"
    assert run == "runs/manual__2026-01-05T020000Z"
    after_first = bucket_objects(client, bucket)
    for artifact in [
        "prepared/manifest.json",
        "prepared/train.parquet",
        "model/model.keras",
        "model/report.png",
        "model/history.csv",
        "model/events.jsonl",
        "eval/metrics.json",
    ]:
        assert f"nightly/{run}/{artifact}" in after_first, artifact
    assert all(key.startswith(f"nightly/{run}/") for key in after_first if "/runs/" in key)
    metrics = json.loads(read(f"{run}/eval/metrics.json"))
    assert metrics["test_mse"] < metrics["persistence_mse"]
    champion = json.loads(read("champion.json"))
    assert champion["metrics_uri"] == f"{root}/{run}/eval/metrics.json"
    assert champion["metrics"]["test_mse"] == metrics["test_mse"]
    assert results["promote_model"][1]["promoted"] is True
    assert results["evaluate_model"][1]["test_mse"] == metrics["test_mse"]
    champion_bytes = read("champion.json")
    model_bytes = read(f"{run}/model/model.keras")

    # --- Night 1 again: every task retried in the same run rewrites only that run's files ----
    again = run_dag(dag, FIRST_NIGHT, TINY)

    assert again.run_id == first.run_id
    assert str(again.state) == "success"
    results = outcome(again)
    assert {task: state for task, (state, _) in results.items()} == dict.fromkeys(TASKS, "success")
    after_again = bucket_objects(client, bucket)
    assert set(after_again) == set(after_first)
    changed = {key for key in after_first if after_first[key] != after_again[key]}
    assert changed <= {f"nightly/{run}/eval/metrics.json"}  # rewritten, with the same numbers
    assert read(f"{run}/model/model.keras") == model_bytes  # the finished model was kept
    assert read("champion.json") == champion_bytes
    assert results["promote_model"][1] == {
        "promoted": False,
        "reason": f"candidate {root}/{run}/eval/metrics.json is already the champion",
    }

    # --- Night 2: a worse model leaves the champion unchanged --------------------------------
    worse = run_dag(dag, SECOND_NIGHT, WORSE)

    assert str(worse.state) == "success"
    results = outcome(worse)
    assert {task: state for task, (state, _) in results.items()} == dict.fromkeys(TASKS, "success")
    worse_run = f"runs/{run_key(worse.run_id)}"
    worse_metrics = json.loads(read(f"{worse_run}/eval/metrics.json"))
    assert worse_metrics["test_mse"] > metrics["test_mse"]
    promoted = results["promote_model"][1]
    assert promoted["promoted"] is False
    assert "does not beat" in promoted["reason"]
    assert read("champion.json") == champion_bytes
    assert (
        bucket_objects(client, bucket).items()
        >= {k: v for k, v in after_again.items() if k != f"nightly/{run}/eval/metrics.json"}.items()
    )  # the first night's files are untouched
