"""Airflow for the DAG tests: a real Airflow with its own home and SQLite metadata DB in a temp dir.

Importing `dag_test_env` first points Airflow at a temp home before anything imports it. Nothing
here mocks Airflow: DAGs are parsed by Airflow's own BundleDagBag, runs go through `dag.test()`
against the SQLite DB, and the REST API is the real api-server on a loopback port.

- `airflow_db` (session): the metadata DB, migrated once (`airflow db migrate`).
- `parse_dag(**env)`: parse dags/lstm_nightly_retrain.py with PLATEAU_LSTM_* variables set,
  as the DAG processor and the workers would; returns the DAG.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from dag_test_env import AIRFLOW_ENV, AIRFLOW_HOME, DAG_FILE, DAG_ID, DAGS_DIR


@pytest.fixture(scope="session", autouse=True)
def _remove_airflow_home() -> Iterator[None]:
    yield
    shutil.rmtree(AIRFLOW_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """The migrated SQLite metadata DB of this session's Airflow home."""
    airflow = Path(sys.executable).with_name("airflow")
    done = subprocess.run(
        [str(airflow), "db", "migrate"],
        env={**os.environ, **AIRFLOW_ENV},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"airflow db migrate failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return AIRFLOW_HOME / "airflow.db"


@pytest.fixture
def parse_dag(monkeypatch: pytest.MonkeyPatch) -> Callable[..., object]:
    """Parse the DAG file with these PLATEAU_LSTM_* settings (others removed) and return it."""

    def parse(**settings: str):
        from airflow.dag_processing.dagbag import BundleDagBag

        for name in [n for n in os.environ if n.startswith("PLATEAU_LSTM_")]:
            monkeypatch.delenv(name)
        for name, value in settings.items():
            monkeypatch.setenv(f"PLATEAU_LSTM_{name.upper()}", value)
        bag = BundleDagBag(dag_folder=str(DAG_FILE), bundle_path=DAGS_DIR)
        assert bag.import_errors == {}, bag.import_errors
        return bag.dags[DAG_ID]

    return parse
