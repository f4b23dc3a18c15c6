"""The windowed input pipeline: how fast it feeds the default model, and its memory per row.

Goals (issue 3): `windows.make_dataset` feeds training batches at least 5x faster than the
default model (TrainConfig and ModelConfig defaults: window 48, batch 64, two LSTMs of 64)
trains on them, and its memory grows with rows, not rows x window.

Rate, one process, measured in turn so both see the same machine load:
- feed: batches per second of the training dataset alone (shuffled, change target, 5
  columns), pulled one by one from Python, which costs more per batch than Keras' own loop;
- consume: training steps per second of the compiled default model fed one fixed batch over
  and over, so no input pipeline is involved at all;
- fit: training steps per second of the same model fed by make_dataset, as `train` runs it.
  If the pipeline never makes the model wait this equals consume.

Memory, one fresh process per size: resident memory after building the dataset and pulling
300 shuffled batches, minus before (TensorFlow already started). Bytes per row are the slope
between sizes, next to what the data itself takes (rows x columns x 4) and what windows
copied out would take (rows x window x columns x 4). `--baseline REV` measures the
package of git revision REV the same way (unpacked with git archive; the tree is untouched).

    .venv/bin/python bench/window_pipeline.py
    .venv/bin/python bench/window_pipeline.py --rows 1000000,3000000 --baseline HEAD
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLUMNS = 5
RATE_ROWS = 1_000_000
GOAL_RATIO = 5.0


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _values(rows: int):
    import numpy as np

    return np.random.default_rng(0).standard_normal((rows, COLUMNS)).astype("float32")


def memory_child(rows: int) -> dict:
    """Run in a fresh process: the pipeline's resident memory at `rows` rows."""
    import numpy as np
    import tensorflow as tf

    from plateau_lstm.config import TrainConfig
    from plateau_lstm.windows import make_dataset

    config = TrainConfig()
    values = _values(rows)

    def dataset(data):
        return make_dataset(
            data,
            0,
            len(data),
            window=config.window,
            horizon=config.horizon,
            batch_size=config.batch_size,
            shuffle=True,
            seed=1,
            change_scale=1.0,
        )

    for _ in dataset(values[:10_000]).take(3):  # TensorFlow's one-time start-up, not counted
        pass
    tf.constant(np.zeros(1))
    before = _rss_mb()
    started = time.perf_counter()
    batches = iter(dataset(values))
    next(batches)
    first_batch = time.perf_counter() - started
    for _ in range(300):
        next(batches)
    return {
        "rows": rows,
        "grew_mb": _rss_mb() - before,
        "first_batch_s": first_batch,
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def rate_child(rounds: int, steps: int) -> dict:
    """Run in a fresh process: feed, consume and fit rates, alternating, `rounds` times."""
    import keras
    import tensorflow as tf

    from plateau_lstm.callbacks import AdaptiveLoss, Triangular2Schedule
    from plateau_lstm.config import ModelConfig, TrainConfig
    from plateau_lstm.model import build_model, build_optimizer
    from plateau_lstm.windows import make_dataset

    config = TrainConfig()
    values = _values(RATE_ROWS)
    train = make_dataset(
        values,
        0,
        RATE_ROWS,
        window=config.window,
        horizon=config.horizon,
        batch_size=config.batch_size,
        shuffle=True,
        seed=1,
        change_scale=1.0,
    )
    one_batch = next(iter(train))
    fixed = tf.data.Dataset.from_tensors(one_batch).repeat()
    keras.utils.set_random_seed(1)
    model = build_model(ModelConfig(), config.window, COLUMNS, change_scale=[1.0] * COLUMNS)
    model.compile(
        optimizer=build_optimizer(config, Triangular2Schedule(step_size=1000)),
        loss=AdaptiveLoss(),
        metrics=[keras.metrics.MeanSquaredError(name="mse")],
    )
    model.fit(fixed, steps_per_epoch=5, epochs=1, verbose=0)  # tracing, not timed
    model.fit(train, steps_per_epoch=5, epochs=1, verbose=0)

    feed_batches = steps * 20
    rates = {"feed": [], "consume": [], "fit": []}
    feed = iter(train.repeat())
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(feed_batches):
            next(feed)
        rates["feed"].append(feed_batches / (time.perf_counter() - started))
        for name, data in (("consume", fixed), ("fit", train.repeat())):
            started = time.perf_counter()
            model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0)
            rates[name].append(steps / (time.perf_counter() - started))
    return rates


def run_child(args: list[str], env: dict | None) -> dict:
    result = subprocess.run(
        [sys.executable, __file__, *args], env=env, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise SystemExit(f"child {args} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def baseline_env(rev: str, folder: str) -> dict:
    target = os.path.join(folder, "baseline")
    os.makedirs(target)
    archive = subprocess.run(
        ["git", "-C", REPO, "archive", rev, "training_image"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", target], input=archive, check=True)
    return {**os.environ, "PYTHONPATH": os.path.join(target, "training_image")}


def report_memory(label: str, runs: list[dict]) -> None:
    from plateau_lstm.config import TrainConfig

    window = TrainConfig().window
    print(f"\n{label}: memory (shuffled training pipeline, {COLUMNS} float32 columns)")
    print("| rows | grew MB | bytes / row | data MB | windows copied out MB | first batch s |")
    print("|---|---|---|---|---|---|")
    for run in runs:
        rows = run["rows"]
        print(
            f"| {rows:,} | {run['grew_mb']:.0f} | {run['grew_mb'] * 2**20 / rows:.0f} | "
            f"{rows * COLUMNS * 4 / 2**20:.0f} | {rows * window * COLUMNS * 4 / 2**20:,.0f} | "
            f"{run['first_batch_s']:.2f} |"
        )
    if len(runs) > 1:
        first, last = runs[0], runs[-1]
        slope = (last["grew_mb"] - first["grew_mb"]) * 2**20 / (last["rows"] - first["rows"])
        print(
            f"slope {slope:.0f} bytes per extra row = {slope / (COLUMNS * 4):.1f}x the data "
            f"itself, {slope / (window * COLUMNS * 4):.3f}x a row's windows copied out"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="1000000,3000000,10000000")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=40, help="training steps per timed fit")
    parser.add_argument("--baseline", default=None, help="git revision to compare with")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        result = (
            memory_child(int(rest[0]))
            if kind == "memory"
            else rate_child(int(rest[0]), int(rest[1]))
        )
        print(json.dumps(result))
        return

    rates = run_child(["--child", "rate", str(args.rounds), str(args.steps)], None)
    print(
        f"# {os.cpu_count()} CPUs; rates over {args.rounds} alternating rounds "
        f"(batch 64 x window 48 x {COLUMNS} columns, {RATE_ROWS:,} rows)"
    )
    print(
        "| round | feed batches/s | model steps/s (fixed batch) | fit steps/s (make_dataset) "
        "| feed / consume |"
    )
    print("|---|---|---|---|---|")
    for i in range(args.rounds):
        feed, consume, fit = (rates[k][i] for k in ("feed", "consume", "fit"))
        print(f"| {i + 1} | {feed:.0f} | {consume:.1f} | {fit:.1f} | {feed / consume:.0f} |")
    ratios = [f / c for f, c in zip(rates["feed"], rates["consume"], strict=True)]
    fit_share = [f / c for f, c in zip(rates["fit"], rates["consume"], strict=True)]
    median = statistics.median(ratios)
    print(
        f"feed / consume: median {median:.0f}x (min {min(ratios):.0f}x; goal >= "
        f"{GOAL_RATIO:.0f}x: {'met' if min(ratios) >= GOAL_RATIO else 'MISSED'}); "
        f"fit with make_dataset runs at {statistics.median(fit_share):.2f}x the fixed-batch "
        "speed"
    )

    sizes = [int(r) for r in args.rows.split(",")]
    report_memory("this tree", [run_child(["--child", "memory", str(n)], None) for n in sizes])
    if args.baseline:
        with tempfile.TemporaryDirectory(prefix="plateau-bench-windows-") as folder:
            env = baseline_env(args.baseline, folder)
            report_memory(
                args.baseline, [run_child(["--child", "memory", str(n)], env) for n in sizes]
            )


if __name__ == "__main__":
    main()
