"""Every DAG file parses in Airflow's own DagBag, follows the house rules, and has the shape and
parameters the users rely on (see STYLE.md, "Airflow project tests")."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta

import pytest
from dag_test_env import DAG_FILE, DAG_ID, DAGS_DIR

APPROVED_TAGS = {"plateau-lstm", "training", "nightly"}
DAG_FILES = sorted(DAGS_DIR.glob("*.py"))
CHAIN = ["prepare_data", "train_model", "evaluate_model", "promote_model"]
LAUNCHERS = {
    "local": {},
    "kubernetes": {"launcher": "kubernetes", "artifact_root": "s3://models/nightly"},
}


@pytest.mark.parametrize("dag_file", DAG_FILES, ids=lambda path: path.name)
def test_dag_file_parses_with_approved_tags_and_retries(dag_file):
    from airflow.dag_processing.dagbag import BundleDagBag

    bag = BundleDagBag(dag_folder=str(dag_file), bundle_path=DAGS_DIR)

    assert bag.import_errors == {}
    assert bag.dags, f"{dag_file.name} defines no DAG"
    for dag in bag.dags.values():
        assert dag.tags, f"{dag.dag_id} has no tags"
        assert set(dag.tags) <= APPROVED_TAGS, f"{dag.dag_id}: unapproved tags"
        assert dag.catchup is False
        for task in dag.tasks:
            assert task.retries >= 2, f"{dag.dag_id}.{task.task_id}: retries {task.retries}"
            assert task.retry_exponential_backoff >= 2
            assert task.execution_timeout is not None


def test_dags_folder_holds_only_this_dag_and_ignores_its_helpers():
    from airflow.dag_processing.dagbag import BundleDagBag

    bag = BundleDagBag(dag_folder=str(DAGS_DIR), bundle_path=DAGS_DIR)

    assert bag.import_errors == {}
    assert sorted(bag.dags) == [DAG_ID]
    parsed = {path.rsplit("/", 1)[-1] for path in bag.file_last_changed}
    assert parsed == {DAG_FILE.name}  # .airflowignore keeps lstm_retrain/ out


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_chain_of_four_steps(parse_dag, launcher):
    dag = parse_dag(**LAUNCHERS[launcher])

    assert [task.task_id for task in dag.topological_sort()] == CHAIN
    for upstream, downstream in zip(CHAIN, CHAIN[1:], strict=False):
        assert dag.get_task(upstream).downstream_task_ids == {downstream}
    assert dag.get_task(CHAIN[-1]).downstream_task_ids == set()


def test_kubernetes_launcher_runs_every_step_as_a_pod(parse_dag):
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

    dag = parse_dag(**LAUNCHERS["kubernetes"])

    for task in dag.tasks:
        assert isinstance(task, KubernetesPodOperator)
        assert task.on_finish_action.value == "delete_pod"
        assert task.reattach_on_restart is True
        assert task.do_xcom_push is True
        assert task.get_logs is True
        assert task.active_deadline_seconds == int(task.execution_timeout.total_seconds())


def test_schedule_and_run_settings(parse_dag):
    dag = parse_dag()

    assert dag.timetable.expression == "0 2 * * *"
    assert dag.timetable.timezone.name == "UTC"
    assert dag.start_date.utcoffset() == timedelta(0)
    assert dag.catchup is False
    assert dag.max_active_runs == 1
    assert dag.dagrun_timeout is not None
    assert dag.doc_md and dag.doc_md.lstrip().startswith("### lstm_nightly_retrain")
    assert dag.default_args["owner"] == "ml-platform"
    assert {task.task_id: task.execution_timeout for task in dag.tasks} == {
        "prepare_data": timedelta(minutes=30),
        "train_model": timedelta(hours=6),
        "evaluate_model": timedelta(minutes=30),
        "promote_model": timedelta(minutes=10),
    }


# ------------------------------------------------------------------------------------------------
# Params: the trigger form's schema


def test_param_defaults_are_valid_and_match_the_cli(parse_dag):
    from plateau_lstm.cli import build_parser

    dag = parse_dag()
    values = dag.params.validate()
    commands = build_parser()._subparsers._group_actions[0].choices
    cli = {
        action.dest: action.default
        for name in ("prepare", "train", "promote")
        for action in commands[name]._actions
    }

    assert values["input_uri"] == ""  # the CLI's bundled series
    for param, option in [
        ("epochs", "epochs"),
        ("window", "window"),
        ("horizon", "horizon"),
        ("batch_size", "batch_size"),
        ("lstm_layers", "lstm_layers"),
        ("lstm_units", "lstm_units"),
        ("dense_units", "dense_units"),
        ("base_lr", "base_lr"),
        ("max_lr", "max_lr"),
        ("seed", "seed"),
        ("promotion_margin", "margin"),
    ]:
        assert values[param] == cli[option], param


GOOD_CONF = {
    "input_uri": "s3://raw-data/weekly/co2.parquet",
    "timestamp_col": "date",
    "target_col": "co2",
    "epochs": 5,
    "window": 16,
    "horizon": 4,
    "base_lr": 1e-5,
    "max_lr": 1e-3,
    "seed": 7,
    "gpus": 2,
    "promotion_margin": 0.05,
}

BAD_CONFS = {
    "epochs zero": {"epochs": 0},
    "epochs as text": {"epochs": "10"},
    "epochs fractional": {"epochs": 2.5},
    "window of one step": {"window": 1},
    "horizon zero": {"horizon": 0},
    "base_lr zero": {"base_lr": 0},
    "max_lr above one": {"max_lr": 1.5},
    "negative seed": {"seed": -1},
    "too many gpus": {"gpus": 9},
    "no workers": {"workers": 0},
    "several workers on the local launcher": {"workers": 2},
    "relative input path": {"input_uri": "data/hourly.csv"},
    "http input": {"input_uri": "https://example.com/x.csv"},
    "margin of one": {"promotion_margin": 1},
}


def trigger_params(dag, conf):
    """What the scheduler side does with a trigger's conf before it creates a run."""
    from airflow.serialization.serialized_objects import DagSerialization

    scheduler_dag = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag))
    return scheduler_dag.params.deep_merge(conf).validate()


def test_good_conf_validates(parse_dag):
    assert trigger_params(parse_dag(), GOOD_CONF) == {**parse_dag().params.validate(), **GOOD_CONF}


@pytest.mark.parametrize("conf", BAD_CONFS.values(), ids=BAD_CONFS.keys())
def test_bad_conf_is_refused(parse_dag, conf):
    from airflow.sdk.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError):
        trigger_params(parse_dag(), conf)


# ------------------------------------------------------------------------------------------------
# Parse cost: the standing rule, checked in a fresh interpreter


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_dag_module_imports_nothing_heavy(launcher):
    env_lines = "".join(
        f"os.environ['PLATEAU_LSTM_{k.upper()}'] = {v!r};" for k, v in LAUNCHERS[launcher].items()
    )
    code = (
        f"import os, sys, runpy; {env_lines}"
        f"sys.path.insert(0, {str(DAGS_DIR)!r});"
        f"runpy.run_path({str(DAG_FILE)!r});"
        "heavy = ('tensorflow', 'keras', 'pandas', 'numpy', 'boto3', 'plateau_lstm');"
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
