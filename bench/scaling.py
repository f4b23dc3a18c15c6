"""Training throughput for 1, 2, ... replicas: samples per second and scaling efficiency.

Each replica count trains in a fresh process (`plateau-lstm train --distribution mirrored`,
over that many GPUs, or, without GPUs, that many logical CPU devices), with the same per-replica
batch (weak scaling: the global batch grows with the replicas). Throughput is training windows
per second over the epochs after the first (which traces the graph), from history.csv's
epoch_seconds. Counts are run in turn, round after round, so all of them see the same machine
load; the figures are medians over the rounds.

    efficiency(n) = throughput(n) / (n * throughput(1))

    .venv/bin/python bench/scaling.py --replicas 1,2,4 --rounds 3 --epochs 4
    .venv/bin/python bench/scaling.py --device gpu --replicas 1,2,4,8   # on a GPU machine

On a CPU, logical devices share the same cores, so efficiency measures what the strategy costs
(all-reduce, splitting batches) rather than a speed-up: expect it to fall below 1 as replicas grow.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

SPLIT_CPU_THEN_CLI = (
    "import sys; from plateau_lstm.distribution import split_cpu; split_cpu(int(sys.argv[1])); "
    "from plateau_lstm.cli import main; sys.exit(main(sys.argv[2:]))"
)
ONLY_N_GPUS = (
    "import os, sys; "
    "os.environ['CUDA_VISIBLE_DEVICES'] = ','.join(map(str, range(int(sys.argv[1])))); "
    "from plateau_lstm.cli import main; sys.exit(main(sys.argv[2:]))"
)


def train_once(replicas: int, args, prepared: str, scratch: str) -> dict:
    output = tempfile.mkdtemp(prefix=f"scaling-{replicas}-", dir=scratch)
    launcher = SPLIT_CPU_THEN_CLI if args.device == "cpu" else ONLY_N_GPUS
    command = [
        sys.executable, "-c", launcher, str(replicas), "-q", "train",
        "--prepared", prepared, "--output", output, "--distribution", "mirrored",
        "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
        "--window", str(args.window), "--lstm-units", str(args.lstm_units),
        "--dense-units", str(args.lstm_units), "--verbose", "0", "--metrics-port", "0",
    ]  # fmt: skip
    if args.mixed_precision:
        command.append("--mixed-precision")
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{replicas} replica(s) failed:\n{done.stderr[-3000:]}")
    summary = json.loads(Path(output, "train_summary.json").read_text())
    with open(Path(output, "history.csv")) as handle:
        seconds = [float(row["epoch_seconds"]) for row in csv.DictReader(handle)][1:]
    windows = summary["steps"] / summary["epochs_run"] * summary["global_batch_size"]
    return {
        "samples_per_second": windows / statistics.median(seconds),
        "global_batch": summary["global_batch_size"],
        "replicas": summary["replicas"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", default="1,2,4", help="replica counts, comma separated")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=4, help="per run; the first is not timed")
    parser.add_argument("--batch-size", type=int, default=64, help="per replica")
    parser.add_argument("--window", type=int, default=48)
    parser.add_argument("--lstm-units", type=int, default=64)
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--mixed-precision", action="store_true")
    args = parser.parse_args()
    counts = [int(n) for n in args.replicas.split(",")]

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with tempfile.TemporaryDirectory(prefix="plateau-lstm-scaling-") as scratch:
        prepared = os.path.join(scratch, "prepared")
        from plateau_lstm.cli import main as cli

        with contextlib.redirect_stdout(sys.stderr):  # stdout is the table
            status = cli(["-q", "prepare", "--output", prepared, "--window", str(args.window)])
        if status != 0:
            sys.exit("prepare failed")
        runs: dict[int, list[dict]] = {n: [] for n in counts}
        for round_ in range(args.rounds):
            for n in counts:
                runs[n].append(train_once(n, args, prepared, scratch))
                print(
                    f"round {round_ + 1}/{args.rounds}: {n} replica(s): "
                    f"{runs[n][-1]['samples_per_second']:.0f} samples/s",
                    file=sys.stderr,
                    flush=True,
                )

    base = statistics.median(r["samples_per_second"] for r in runs[counts[0]]) / counts[0]
    print(f"| replicas | global batch | samples/s (median of {args.rounds}) | min | max "
          "| speed-up | efficiency |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for n in counts:
        rates = [r["samples_per_second"] for r in runs[n]]
        median = statistics.median(rates)
        print(
            f"| {n} | {runs[n][0]['global_batch']} | {median:.0f} | {min(rates):.0f} | "
            f"{max(rates):.0f} | {median / base:.2f} | **{median / (n * base):.2f}** |"
        )


if __name__ == "__main__":
    main()
