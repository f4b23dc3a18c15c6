#!/usr/bin/env bash
# `make bench`: every benchmark with the settings bench/RESULTS.md quotes, one after another.
# Each prints its own table of medians and side-by-side ratios; nothing here asserts a time.
# BENCH_QUICK=1 runs each with fewer rounds and rows (minutes instead of an hour), for a look.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
export TF_CPP_MIN_LOG_LEVEL=2

if [[ "${BENCH_QUICK:-0}" == 1 ]]; then
  rounds=2; rows=1000000; wrows=1000000; seeds="1"; epochs=10
else
  rounds=5; rows=10000000; wrows=1000000,3000000,10000000; seeds="1 2 3"; epochs=30
fi

step() { printf '\n=== %s\n' "$*"; "$@"; }

step $PY bench/prepare_scale.py --rows "$rows" --runs 3
step $PY bench/window_pipeline.py --rows "$wrows" --rounds "$rounds"
step $PY bench/callback_overhead.py --rounds "$rounds" --epochs 3
step $PY bench/metrics_overhead.py --rounds "$rounds" --epochs 3
step $PY bench/checkpoint_overhead.py --rounds "$rounds" --epochs 5 --upload-mib 64
step $PY bench/dag_parse.py --samples 7
step $PY bench/scaling.py --replicas 1,2,4 --rounds 3 --epochs 4
# shellcheck disable=SC2086 # seeds is a list
step $PY bench/stock_vs_plateau.py --epochs "$epochs" --seeds $seeds
