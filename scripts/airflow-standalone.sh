#!/usr/bin/env bash
# `make airflow`: a standalone Airflow for this checkout's DAG, for the UI and the REST API: the
# four components `airflow standalone` runs (api-server, scheduler with the LocalExecutor, DAG
# processor, triggerer), sharing .airflow/ with `make run`. Started one by one rather than through
# `airflow standalone` so that nothing listens beyond 127.0.0.1: the api-server binds loopback,
# and the log servers the scheduler and triggerer would open on every interface (fixed ports
# 8793/8794) are skipped; the UI reads the task logs from .airflow/logs directly. Ctrl-C stops all.
#   AIRFLOW_PORT=8080 make airflow     a fixed port (default: a free one, picked now)
# The user is `admin`; its password is generated once into
# .airflow/simple_auth_manager_passwords.json.generated.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/airflow-env.sh
source scripts/airflow-env.sh

port=${AIRFLOW_PORT:-$(python -c '
import socket
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    print(s.getsockname()[1])
')}
export AIRFLOW__API__HOST=127.0.0.1
export AIRFLOW__API__PORT="$port"
export AIRFLOW__API__BASE_URL="http://127.0.0.1:$port"
export AIRFLOW__CORE__EXECUTION_API_SERVER_URL="http://127.0.0.1:$port/execution/"
export AIRFLOW__CORE__EXECUTOR=LocalExecutor
# One run at a time, one task after another: a few worker processes are plenty (default 32).
export AIRFLOW__CORE__PARALLELISM=4
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=admin:admin

airflow_db_migrate

pids=()
stop_all() {
    trap - EXIT INT TERM
    echo "== stopping Airflow"
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait || true
}
trap stop_all EXIT INT TERM

# Each component's output, prefixed with its name, as `airflow standalone` shows it. The prefixer
# ignores Ctrl-C and ends with its component's output: a component must not lose its stdout while
# it shuts down (a broken pipe can hang the scheduler).
start() {
    local name=$1
    shift
    "$@" > >(trap '' INT TERM && exec sed -u "s/^/$name | /") 2>&1 &
    pids+=("$!")
}
start api-server airflow api-server --host 127.0.0.1 --port "$port"
start scheduler airflow scheduler --skip-serve-logs
start dag-processor airflow dag-processor
start triggerer airflow triggerer --skip-serve-logs

cat <<MSG
== Airflow for lstm_nightly_retrain (launcher $PLATEAU_LSTM_LAUNCHER, artifacts $PLATEAU_LSTM_ARTIFACT_ROOT)
   UI and REST API  http://127.0.0.1:$port   (ready in a minute or so)
   user             admin (password: $AIRFLOW_HOME/simple_auth_manager_passwords.json.generated)
   The DAG starts paused: trigger it by hand ("Trigger" in the UI, README.md shows the REST call)
   or unpause it to run nightly at 02:00 UTC. Ctrl-C stops Airflow.
MSG
# Until Ctrl-C, or until one component exits (then the rest are stopped too).
wait -n "${pids[@]}"
