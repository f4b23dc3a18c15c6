"""
### lstm_nightly_retrain

Retrains the plateau-breaking residual LSTM forecaster every night at 02:00 UTC and lets the
new model serve only when it is better than the one serving now.

`prepare_data` >> `train_model` >> `evaluate_model` >> `promote_model`: each task is one call of
the `plateau-lstm` CLI, as a subprocess on the worker (`local` launcher, the default) or as a pod
of the training image (`kubernetes` launcher, KubernetesPodOperator), chosen by the
`PLATEAU_LSTM_LAUNCHER` environment variable when the DAG is parsed.

**Artifacts.** Everything a run writes lies under `<root>/runs/<run>/` (`prepared/`, `model/`,
`eval/`), where `<root>` is `PLATEAU_LSTM_ARTIFACT_ROOT` and `<run>` the run id made safe for
paths (`scheduled__2026-12-03T02:00:00+00:00` -> `scheduled__2026-12-03T020000Z`). The only shared
file is `<root>/champion.json`, written atomically by the promotion gate.

**Retries.** Each task retries twice with exponential backoff; a retry rewrites only its own
run's outputs. A retried `train_model` keeps a finished model trained with the same options and
resumes an unfinished one from its last committed checkpoint. A step that refuses its input
(CLI exit 2: a bad column, a gap too long, `base_lr >= max_lr`) fails at once, without retries.

**Promotion.** `promote_model` moves `champion.json` to this run only when its test MSE beats
persistence and beats the champion's by `promotion_margin`; otherwise it succeeds, logs why in
one line and changes nothing.

**Multi-worker training.** With the `kubernetes` launcher and `workers` above 1, `train_model`
runs as a Kubeflow TFJob (kubeflow.org/v1) of `workers` pods instead of one pod; the task, its
retries and its result stay the same. The `local` launcher offers `workers` = 1 only.

**Triggering by hand.** "Trigger DAG" in the UI shows the parameters below as a form; the REST
API takes them as `conf`. Values are checked against their JSON schema before a run is created:
a bad value is refused (HTTP 400) and no run exists.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import Param, chain, dag
from lstm_retrain.settings import load_settings
from lstm_retrain.steps import STEPS

SETTINGS = load_settings()

# Where the input may come from: empty (the bundled series), s3://, file:/// or an absolute path.
# A relative path would depend on the worker's working directory, so it is refused.
_INPUT_URI = r"^$|^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$|^file:///.+$|^/.+$"


def _workers_param(launcher: str) -> Param:
    # The local launcher trains in one process, so it offers 1 only: a run that asks for more is
    # refused when it is triggered (HTTP 400, no run), not hours later at train_model. The
    # refusal quotes the schema, so the `$comment` tells what to do instead.
    if launcher != "kubernetes":
        why = "Multi-worker training needs PLATEAU_LSTM_LAUNCHER=kubernetes (a Kubeflow TFJob)."
        return Param(
            1,
            type="integer",
            minimum=1,
            maximum=1,
            title="Training workers",
            description=f"1 with the local launcher. {why}",
            section="Training",
            **{"$comment": why},
        )
    return Param(
        1,
        type="integer",
        minimum=1,
        maximum=16,
        title="Training workers",
        description="Applies to the kubernetes launcher. Above 1, train_model runs as a Kubeflow "
        "TFJob of this many pods (MultiWorkerMirroredStrategy), each with `gpus` GPUs; the "
        "cluster needs the Kubeflow training operator.",
        section="Training",
    )


PARAMS = {
    "input_uri": Param(
        "",
        type="string",
        pattern=_INPUT_URI,
        title="Input data",
        description="Raw CSV or Parquet: s3://bucket/key, file:///path or /path. "
        "Empty: the weekly CO2 series bundled with the image.",
        section="Data",
    ),
    "timestamp_col": Param(
        "",
        type="string",
        maxLength=256,
        title="Timestamp column",
        description="Empty: the first column named date, time, timestamp or ds.",
        section="Data",
    ),
    "target_col": Param(
        "",
        type="string",
        maxLength=256,
        title="Target column",
        description="Column to forecast. Empty: the first numeric column.",
        section="Data",
    ),
    "feature_cols": Param(
        "",
        type="string",
        maxLength=4096,
        title="Extra input columns",
        description="Comma separated. Empty: the target only.",
        section="Data",
    ),
    "epochs": Param(60, type="integer", minimum=1, maximum=2000, section="Training"),
    "window": Param(
        48,
        type="integer",
        minimum=2,
        maximum=4096,
        description="Input steps per window.",
        section="Training",
    ),
    "horizon": Param(
        1,
        type="integer",
        minimum=1,
        maximum=1024,
        description="Steps ahead to forecast.",
        section="Training",
    ),
    "batch_size": Param(
        64,
        type="integer",
        minimum=1,
        maximum=65536,
        description="Windows per step and per replica. With several GPUs or workers the global "
        "batch is this times the replicas, and both learning rates grow by sqrt(replicas).",
        section="Training",
    ),
    "lstm_layers": Param(2, type="integer", minimum=1, maximum=8, section="Training"),
    "lstm_units": Param(64, type="integer", minimum=1, maximum=2048, section="Training"),
    "dense_units": Param(64, type="integer", minimum=1, maximum=2048, section="Training"),
    "base_lr": Param(
        5e-05,
        type="number",
        exclusiveMinimum=0,
        maximum=1,
        title="Base learning rate",
        description="Lowest rate of the cycle; must be below the max learning rate.",
        section="Training",
    ),
    "max_lr": Param(
        0.002,
        type="number",
        exclusiveMinimum=0,
        maximum=1,
        title="Max learning rate",
        description="First peak of the cycle.",
        section="Training",
    ),
    "seed": Param(42, type="integer", minimum=0, maximum=2**31 - 1, section="Training"),
    "gpus": Param(
        1,
        type="integer",
        minimum=0,
        maximum=8,
        title="GPUs",
        description="nvidia.com/gpu limit of the training pod, of each one with several "
        "workers (kubernetes launcher only; 0 trains on CPU nodes). More than 1 trains on all "
        "of them (MirroredStrategy).",
        section="Training",
    ),
    "workers": _workers_param(SETTINGS.launcher),
    "promotion_margin": Param(
        0.01,
        type="number",
        minimum=0,
        exclusiveMaximum=1,
        description="Relative test-MSE improvement over the champion needed to replace it.",
        section="Promotion",
    ),
}


@dag(
    schedule="0 2 * * *",
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(hours=10),
    default_args={
        "owner": "ml-platform",
        "retries": 2,
        "retry_delay": timedelta(minutes=2),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": timedelta(minutes=30),
    },
    params=PARAMS,
    tags=["plateau-lstm", "training", "nightly"],
    doc_md=__doc__,
)
def lstm_nightly_retrain():
    if SETTINGS.launcher == "kubernetes":
        from lstm_retrain.pods import step_pod as launch
    else:
        from lstm_retrain.local import step_task as launch
    chain(*(launch(step, SETTINGS) for step in STEPS))


lstm_nightly_retrain()
