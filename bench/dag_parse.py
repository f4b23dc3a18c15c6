"""Parse cost of dags/lstm_nightly_retrain.py: its own time beyond Airflow's (goal <= 50 ms), and
no TensorFlow, Keras, pandas, NumPy, boto3 or plateau_lstm imported.

Each sample is a fresh interpreter that executes the DAG file the way the DAG processor does (a
module from its path, the DAGs folder on sys.path) and times only that. What runs before it is
"Airflow's":

- warm (the goal's measure): `airflow.sdk`, then a one-task reference DAG of the same kind (a
  cron schedule, a Param, a TaskFlow task; for the kubernetes launcher a KubernetesPodOperator
  task instead), which loads the parts of Airflow that any such DAG loads lazily (timetables,
  the TaskFlow decorator, the provider's pod operator). The DAG processor has most of them
  loaded already. What remains is this DAG's own: its settings, helper modules, sixteen Params
  and four tasks.
- cold (for reference): only `airflow.sdk`, so Airflow's lazy imports count against the DAG.

A warm-up sample compiles the bytecode first; the figures are medians over the samples.

    .venv/bin/python bench/dag_parse.py --samples 7 --markdown /tmp/dag.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DAGS_DIR = REPO / "dags"
DAG_FILE = DAGS_DIR / "lstm_nightly_retrain.py"
HEAVY = ("tensorflow", "keras", "pandas", "numpy", "boto3", "plateau_lstm")
GOAL_MS = 50.0
LAUNCHERS = {
    "local": {},
    "kubernetes": {"PLATEAU_LSTM_LAUNCHER": "kubernetes", "PLATEAU_LSTM_ARTIFACT_ROOT": "s3://b/n"},
}
REFERENCE_DAGS = {
    "local": """
from datetime import UTC, datetime
from airflow.sdk import Param, dag, task

@dag(schedule="0 2 * * *", start_date=datetime(2026, 1, 1, tzinfo=UTC), catchup=False,
     params={"n": Param(1, type="integer", minimum=0)}, tags=["bench"])
def reference():
    @task
    def step():
        return {}
    step()

reference()
""",
    "kubernetes": """
from datetime import UTC, datetime
from airflow.sdk import Param, dag
from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

@dag(schedule="0 2 * * *", start_date=datetime(2026, 1, 1, tzinfo=UTC), catchup=False,
     params={"n": Param(1, type="integer", minimum=0)}, tags=["bench"])
def reference():
    KubernetesPodOperator(task_id="step", image="example/image:1", pod_template_file="t.yaml")

reference()
""",
}

CHILD = r"""
import importlib, importlib.util, json, sys, time

def run_file(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)

reference, dags_dir, dag_file, heavy = json.loads(sys.argv[1])
t0 = time.perf_counter()
import airflow.sdk
if reference:
    run_file("unusual_prefix_bench_reference", reference)
t1 = time.perf_counter()
before = set(sys.modules)
sys.path.append(dags_dir)
name = "unusual_prefix_bench_lstm_nightly_retrain"
run_file(name, dag_file)
t2 = time.perf_counter()
print(json.dumps({
    "airflow_s": t1 - t0,
    "dag_s": t2 - t1,
    "new_modules": sorted(set(sys.modules) - before - {name}),
    "heavy": [m for m in heavy if m in sys.modules],
}))
"""


def sample(launcher: str, reference: Path | None, home: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLATEAU_LSTM_")}
    env.update(LAUNCHERS[launcher])
    env.update({"AIRFLOW_HOME": home, "AIRFLOW__CORE__LOAD_EXAMPLES": "False"})
    argument = json.dumps([str(reference or ""), str(DAGS_DIR), str(DAG_FILE), list(HEAVY)])
    done = subprocess.run(
        [sys.executable, "-c", CHILD, argument],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    if done.returncode != 0:
        raise SystemExit(f"{launcher}: the parse failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(launcher: str, samples: int, home: str) -> dict:
    reference = Path(home) / f"reference_{launcher}.py"
    reference.write_text(REFERENCE_DAGS[launcher])
    sample(launcher, reference, home)  # warm-up: bytecode compiled, file cache warm
    warm = [sample(launcher, reference, home) for _ in range(samples)]
    cold = [sample(launcher, None, home) for _ in range(samples)]
    return {
        "launcher": launcher,
        "airflow_ms": 1000 * statistics.median(r["airflow_s"] for r in warm),
        "dag_ms": 1000 * statistics.median(r["dag_s"] for r in warm),
        "dag_ms_max": 1000 * max(r["dag_s"] for r in warm),
        "cold_ms": 1000 * statistics.median(r["dag_s"] for r in cold),
        "heavy": sorted({m for r in warm + cold for m in r["heavy"]}),
        "new_modules": warm[-1]["new_modules"],
    }


def met(result: dict) -> bool:
    return result["dag_ms"] <= GOAL_MS and not result["heavy"]


def markdown(results: list[dict], samples: int) -> str:
    lines = [
        "# DAG parse cost: dags/lstm_nightly_retrain.py",
        "",
        f"`.venv/bin/python bench/dag_parse.py --samples {samples}` on {platform.node()} "
        f"({os.cpu_count()} CPUs, shared with other work), Python {platform.python_version()}. "
        'Each sample is a fresh interpreter; medians. "Airflow\'s" is `airflow.sdk` plus a '
        "one-task reference DAG of the same kind (see the bench's docstring); \"the DAG's own\" "
        'is executing dags/lstm_nightly_retrain.py after that. "Cold" counts Airflow\'s lazy '
        f"imports against the DAG. Goal: the DAG's own <= {GOAL_MS:.0f} ms, and none of "
        f"{', '.join(HEAVY)} imported.",
        "",
        "| launcher | Airflow's (ms) | the DAG's own (ms) | max (ms) | cold (ms) "
        "| heavy modules imported | goal |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['launcher']} | {r['airflow_ms']:.0f} | {r['dag_ms']:.1f} "
            f"| {r['dag_ms_max']:.1f} | {r['cold_ms']:.0f} | {', '.join(r['heavy']) or 'none'} "
            f"| {'met' if met(r) else 'MISSED'} |"
        )
    lines += ["", "Modules the DAG file added beyond Airflow's (warm):", ""]
    for r in results:
        lines.append(f"- {r['launcher']}: {', '.join(r['new_modules']) or 'none'}")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--samples", type=int, default=7, help="fresh interpreters per launcher and measure"
    )
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-dag-parse-") as home:
        results = [measure(launcher, args.samples, home) for launcher in LAUNCHERS]
    text = markdown(results, args.samples)
    print(text)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(text)
    return 0 if all(met(r) for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
