"""`plateau-lstm prepare` on 10 million rows x 5 numeric columns, from CSV and from Parquet.

Goals (issue 3): CSV <= 20 s, Parquet <= 5 s on the 2-core dev machine, peak RSS <= 3x the
numeric data (10M x 5 x 8 bytes = 400 MB, so 1.2 GB).

The data (a per-minute sensor log, 19 years, random walks with three decimals) is generated
into a temporary folder at run time and deleted afterwards. Every prepare runs as its own
process, the way the pipeline runs it, so wall time includes start-up and imports and peak RSS
is the whole process's (from wait4). Runs alternate with a "floor": the same process reading
the same file with pyarrow and nothing else, so a busy machine shows in both and the ratio
prepare / floor stays meaningful. `--baseline REV` also runs the package as it was at git
revision REV (extracted with `git archive`, the working tree is untouched) for a side-by-side
before/after ratio.

    .venv/bin/python bench/prepare_scale.py                   # 10M rows, 3 runs per format
    .venv/bin/python bench/prepare_scale.py --rows 1000000 --runs 5 --baseline HEAD
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOAL_SECONDS = {"csv": 20.0, "parquet": 5.0}
GOAL_RSS_FACTOR = 3.0

FLOOR = """
import sys, pyarrow.csv as c, pyarrow.parquet as q
path = sys.argv[1]
table = q.read_table(path) if path.endswith(".parquet") else c.read_csv(path)
"""


def generate(folder: str, rows: int, columns: int) -> dict[str, str]:
    rng = np.random.default_rng(0)
    start = np.datetime64("2000-01-01T00:00:00", "s")
    data = {"timestamp": pa.array(start + np.arange(rows).astype("timedelta64[m]"))}
    for i in range(columns):
        data[f"sensor_{i}"] = pa.array(np.round(np.cumsum(rng.standard_normal(rows)), 3))
    table = pa.table(data)
    paths = {"csv": os.path.join(folder, "raw.csv"), "parquet": os.path.join(folder, "raw.parquet")}
    pa_csv.write_csv(table, paths["csv"], pa_csv.WriteOptions(quoting_style="needed"))
    pq.write_table(table, paths["parquet"])
    return paths


def measure(command: list[str], env: dict | None = None) -> tuple[float, float, float]:
    """(wall seconds, peak RSS in MB, CPU seconds) of one child process; fails loudly."""
    started = time.perf_counter()
    child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    stderr = child.stderr.read().decode()
    child.stderr.close()
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({child.returncode}):\n{stderr}")
    return wall, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime


def prepare_command(path: str, output: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "plateau_lstm.cli",
        "-q",
        "prepare",
        "--input",
        path,
        "--output",
        output,
        "--target-col",
        "sensor_0",
        "--feature-cols",
        "sensor_1,sensor_2,sensor_3,sensor_4",
    ]


def baseline_env(rev: str, folder: str) -> dict:
    """PYTHONPATH pointing at the package as of `rev`, unpacked with git archive."""
    target = os.path.join(folder, "baseline")
    os.makedirs(target)
    archive = subprocess.run(
        ["git", "-C", REPO, "archive", rev, "training_image"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", target], input=archive, check=True)
    return {**os.environ, "PYTHONPATH": os.path.join(target, "training_image")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--columns", type=int, default=5)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--formats", default="csv,parquet")
    parser.add_argument("--baseline", default=None, help="git revision to compare with")
    args = parser.parse_args()

    numeric_mb = args.rows * args.columns * 8 / 2**20
    with tempfile.TemporaryDirectory(prefix="plateau-bench-prepare-") as folder:
        started = time.perf_counter()
        paths = generate(folder, args.rows, args.columns)
        sizes = {f: os.path.getsize(p) / 2**20 for f, p in paths.items()}
        print(
            f"# {args.rows:,} rows x {args.columns} numeric columns ({numeric_mb:.0f} MiB as "
            f"float64); CSV {sizes['csv']:.0f} MiB, Parquet {sizes['parquet']:.0f} MiB; "
            f"generated in {time.perf_counter() - started:.0f} s; {os.cpu_count()} CPUs",
            flush=True,
        )
        env = baseline_env(args.baseline, folder) if args.baseline else None
        print(
            "| input | run | prepare s | CPU s | peak RSS MB | RSS / data | floor s | "
            "prepare / floor |" + (" baseline s | baseline RSS MB |" if env else "")
        )
        print("|---|---|---|---|---|---|---|---|" + ("---|---|" if env else ""))
        summary = []
        for fmt in args.formats.split(","):
            rows = []
            for run in range(args.runs):
                output = os.path.join(folder, f"out-{fmt}-{run}")
                wall, rss, cpu = measure(prepare_command(paths[fmt], output))
                floor = measure([sys.executable, "-c", FLOOR, paths[fmt]])[0]
                base = measure(prepare_command(paths[fmt], output + "-base"), env) if env else None
                rows.append((wall, rss, floor, base, cpu))
                line = (
                    f"| {fmt} | {run + 1} | {wall:.1f} | {cpu:.1f} | {rss:.0f} | "
                    f"{rss / numeric_mb:.2f} | {floor:.1f} | {wall / floor:.2f} |"
                )
                if base:
                    line += f" {base[0]:.1f} | {base[1]:.0f} |"
                print(line, flush=True)
                for name in os.listdir(folder):  # keep the disk use to one output at a time
                    if name.startswith("out-"):
                        subprocess.run(["rm", "-rf", os.path.join(folder, name)], check=True)
            wall = statistics.median(r[0] for r in rows)
            rss = statistics.median(r[1] for r in rows)
            ratio = statistics.median(r[0] / r[2] for r in rows)
            cpu = statistics.median(r[4] for r in rows)
            text = (
                f"{fmt}: median {wall:.1f} s wall, {cpu:.1f} s CPU "
                f"(goal {GOAL_SECONDS[fmt]:.0f} s: "
                f"{'met' if wall <= GOAL_SECONDS[fmt] else 'MISSED'}), peak RSS {rss:.0f} MB "
                f"= {rss / numeric_mb:.2f}x the data (goal {GOAL_RSS_FACTOR:.0f}x: "
                f"{'met' if rss <= GOAL_RSS_FACTOR * numeric_mb else 'MISSED'}), "
                f"{ratio:.2f}x a bare pyarrow read"
            )
            if env:
                base_ratio = statistics.median(r[3][0] / r[0] for r in rows)
                base_rss = statistics.median(r[3][1] / r[1] for r in rows)
                text += (
                    f"; {args.baseline} took {base_ratio:.2f}x the time and "
                    f"{base_rss:.2f}x the memory"
                )
            summary.append(text)
        print()
        for text in summary:
            print(text)


if __name__ == "__main__":
    main()
