"""Epoch time with every plateau-lstm callback / the same model with none (goal <= 1.03).

Two identical compiled models (same architecture, AdaptiveLoss, Triangular2Schedule, data)
are fitted in turn, A B A B ..., so both see the same machine load; the figure is the median
of the per-pair ratios of the fitted epochs' wall time.

    .venv/bin/python bench/callback_overhead.py --rounds 7 --epochs 3
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from harness import compiled_model, plateau_callbacks  # noqa: E402

from plateau_lstm.cli import sample_data_path  # noqa: E402
from plateau_lstm.config import PrepareConfig, TrainConfig  # noqa: E402
from plateau_lstm.prepare import prepare  # noqa: E402
from plateau_lstm.prepared import load_prepared  # noqa: E402
from plateau_lstm.storage import open_store  # noqa: E402
from plateau_lstm.windows import change_scales, make_dataset, window_count  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--epochs", type=int, default=3, help="epochs per timed fit")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    config = TrainConfig()
    with tempfile.TemporaryDirectory(prefix="bench-callbacks-") as scratch:
        prepared_uri = os.path.join(scratch, "prepared")
        prepare(sample_data_path(), prepared_uri, PrepareConfig(), config.window, config.horizon)
        prepared = load_prepared(open_store(prepared_uri))
        start, end = prepared.bounds["train"]
        steps = math.ceil(window_count(start, end, config.window, config.horizon) / 64)
        scale = float(change_scales(prepared.values, start, end, 1)[0])
        train = make_dataset(
            prepared.values,
            start,
            end,
            window=config.window,
            horizon=1,
            batch_size=config.batch_size,
            shuffle=True,
            seed=1,
            change_scale=scale,
        )
        val = make_dataset(
            prepared.values,
            *prepared.bounds["val"],
            window=config.window,
            horizon=1,
            batch_size=config.batch_size,
            change_scale=scale,
        )
        with_cb, schedule, loss = compiled_model(prepared, config, steps)
        without_cb, _, _ = compiled_model(prepared, config, steps)
        events = os.path.join(scratch, "events.jsonl")
        callbacks = list(plateau_callbacks(schedule, loss, events).values())
        for model, cbs in ((with_cb, callbacks), (without_cb, [])):  # warm-up: tracing
            model.fit(train, validation_data=val, epochs=1, verbose=0, callbacks=cbs)

        timings = {"with": [], "without": []}
        for _ in range(args.rounds):
            for name, model, cbs in (("with", with_cb, callbacks), ("without", without_cb, [])):
                started = time.perf_counter()
                model.fit(train, validation_data=val, epochs=args.epochs, verbose=0, callbacks=cbs)
                timings[name].append((time.perf_counter() - started) / args.epochs)
    ratios = [a / b for a, b in zip(timings["with"], timings["without"], strict=True)]
    print(
        f"epoch seconds, all callbacks: median {statistics.median(timings['with']):.3f} "
        f"(min {min(timings['with']):.3f}, max {max(timings['with']):.3f})"
    )
    print(
        f"epoch seconds, no callbacks:  median {statistics.median(timings['without']):.3f} "
        f"(min {min(timings['without']):.3f}, max {max(timings['without']):.3f})"
    )
    print(
        f"ratio with/without, per pair: median {statistics.median(ratios):.3f} "
        f"(min {min(ratios):.3f}, max {max(ratios):.3f}); goal <= 1.03"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
