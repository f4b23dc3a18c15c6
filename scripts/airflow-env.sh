# Sourced by scripts/run-local.sh and scripts/airflow-standalone.sh: an Airflow of this checkout,
# with its home, airflow.cfg and SQLite metadata DB in .airflow/ (ignored by git), the project's
# dags/ as its only DAGs, and the DAG's settings (see README.md, "Configuration").
# shellcheck shell=bash
project_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PATH="$project_dir/.venv/bin:$PATH"
export AIRFLOW_HOME="$project_dir/.airflow"
export AIRFLOW__CORE__DAGS_FOLDER="$project_dir/dags"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="sqlite:///$AIRFLOW_HOME/airflow.db"
export PLATEAU_LSTM_LAUNCHER="${PLATEAU_LSTM_LAUNCHER:-local}"
export PLATEAU_LSTM_ARTIFACT_ROOT="${PLATEAU_LSTM_ARTIFACT_ROOT:-$project_dir/artifacts}"
mkdir -p "$AIRFLOW_HOME"

# Create or upgrade the metadata DB; quiet unless it fails.
airflow_db_migrate() {
    if ! airflow db migrate >"$AIRFLOW_HOME/db-migrate.log" 2>&1; then
        tail -n 30 "$AIRFLOW_HOME/db-migrate.log" >&2
        echo "airflow db migrate failed; full log: $AIRFLOW_HOME/db-migrate.log" >&2
        return 1
    fi
}
