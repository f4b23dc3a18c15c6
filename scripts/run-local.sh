#!/usr/bin/env bash
# `make run`: the nightly DAG, lstm_nightly_retrain, end to end on this machine through Airflow
# itself (`airflow dags test`): local launcher, the bundled series, SQLite metadata in .airflow/,
# artifacts under ./artifacts/runs/<run>/ and ./artifacts/champion.json.
#   EPOCHS=80 make run                 trains longer (default 40)
#   CONF='{"window": 24}' make run     passes any other DAG params (README.md, "The DAG")
#   PLATEAU_LSTM_ARTIFACT_ROOT=s3://bucket/prefix make run   writes to S3 (AWS_* variables)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/airflow-env.sh
source scripts/airflow-env.sh

dag_id=lstm_nightly_retrain
log="$AIRFLOW_HOME/last-run.log"
conf=$(python - "${EPOCHS:-40}" "${CONF:-}" <<'PY'
import json
import sys

conf = {"epochs": int(sys.argv[1])}
conf.update(json.loads(sys.argv[2] or "{}"))
print(json.dumps(conf))
PY
)

echo "== Airflow home $AIRFLOW_HOME (SQLite metadata), artifacts under $PLATEAU_LSTM_ARTIFACT_ROOT"
airflow_db_migrate
echo "== airflow dags test $dag_id -c '$conf'   (full log: $log)"
# The task logs are long; show each task's start and what the plateau-lstm CLI itself says.
status=0
airflow dags test "$dag_id" -c "$conf" 2>&1 | tee "$log" | sed -nE \
    -e 's/.*\[DAG TEST\] starting task_id=([a-z_]+).*/-- \1/p' \
    -e 's/^[^ ]+ +\[[a-z ]+\] (.*[^ ]) +\[lstm_retrain\.local\].*/   \1/p' || status=$?
if [[ $status -ne 0 ]]; then
    tail -n 40 "$log" >&2
    echo "The DAG run failed (exit $status); full log: $log" >&2
    exit "$status"
fi

runs=$(airflow dags list-runs "$dag_id" -o json 2>/dev/null | grep '^\[' | tail -n 1)
python - "$runs" "$log" "$PLATEAU_LSTM_ARTIFACT_ROOT" <<'PY'
import json
import os
import re
import sys

sys.path.insert(0, "dags")
from lstm_retrain.settings import run_uris

runs, log_path, root = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
run = max(runs, key=lambda r: r["run_after"])
uris = run_uris(root, run["run_id"])


def show(uri: str) -> str:
    return os.path.relpath(uri) if "://" not in uri and uri.startswith(os.getcwd()) else uri


with open(log_path, errors="replace") as log:
    decisions = re.findall(r"\] (promote: .*?)\s+\[lstm_retrain\.local\]", log.read())
print(f"""
Done: run {run["run_id"]} {run["state"]}.
{decisions[-1] if decisions else ""}
Look at:
  model        {show(uris["model"])}/model.keras
  report       {show(uris["model"])}/report.png
  history      {show(uris["model"])}/history.csv, events in .../model/events.jsonl
  metrics      {show(uris["eval"])}/metrics.json
  champion     {show(uris["registry"])}/champion.json
  Airflow      .airflow/ (make airflow shows this run in the UI)""")
PY
