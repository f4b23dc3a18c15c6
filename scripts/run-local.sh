#!/usr/bin/env bash
# The nightly pipeline on this machine: prepare -> train -> evaluate -> promote on the bundled
# series, file:// artifacts under ./artifacts, each run under its own run id.
set -euo pipefail
cd "$(dirname "$0")/.."

root=${PLATEAU_LSTM_ROOT:-artifacts}
run_id=${RUN_ID:-manual__$(date -u +%Y%m%dT%H%M%SZ)}
epochs=${EPOCHS:-40}
run="$root/runs/$run_id"
cli=.venv/bin/plateau-lstm

echo "== run $run_id: artifacts under $run"
$cli prepare --output "$run/prepared"
$cli train --prepared "$run/prepared" --output "$run/model" --epochs "$epochs"
$cli evaluate --prepared "$run/prepared" --model "$run/model" --output "$run/eval"
$cli promote --candidate "$run/eval" --registry "$root"

cat <<MSG

Done. Look at:
  model        $run/model/model.keras
  report       $run/model/report.png
  history      $run/model/history.csv, events in $run/model/events.jsonl
  metrics      $run/eval/metrics.json
  champion     $root/champion.json
MSG
