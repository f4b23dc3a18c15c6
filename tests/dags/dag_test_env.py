"""Where the DAG tests' Airflow lives; importing this points Airflow at it.

Airflow reads its configuration once, when `airflow` is first imported, so this runs from
tests/dags/conftest.py before any test module imports Airflow: a home and a SQLite metadata DB
in a fresh temp dir, the project's dags/ as the DAGs folder, no example DAGs.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

DAGS_DIR = Path(__file__).resolve().parents[2] / "dags"
DAG_FILE = DAGS_DIR / "lstm_nightly_retrain.py"
DAG_ID = "lstm_nightly_retrain"

if "airflow" in sys.modules:  # pragma: no cover - a guard for whoever reorders the suite
    raise RuntimeError(
        "airflow was imported before tests/dags could point it at a test home; "
        "import airflow lazily (inside tests) elsewhere"
    )

AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="plateau-lstm-airflow-"))
AIRFLOW_ENV = {
    "AIRFLOW_HOME": str(AIRFLOW_HOME),
    "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_DIR),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{AIRFLOW_HOME / 'airflow.db'}",
    # The provider's hook looks this connection up when it builds a pod; defined here, the lookup
    # goes through Airflow's real environment-variable secrets backend.
    "AIRFLOW_CONN_KUBERNETES_DEFAULT": '{"conn_type": "kubernetes", "extra": {}}',
}
os.environ.update(AIRFLOW_ENV)
# As the DAG processor and the workers have it (BundleDagBag adds the bundle's folder), so that
# tests can import the DAG's helper modules (`lstm_retrain`) directly.
if str(DAGS_DIR) not in sys.path:
    sys.path.append(str(DAGS_DIR))
