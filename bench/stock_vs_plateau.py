"""plateau-lstm against the stock Keras recipe on real series, same split and epoch budget.

The stock recipe: 2 x LSTM(64), Adam 1e-3, ReduceLROnPlateau, EarlyStopping, z-scored inputs
and target (it predicts the level). plateau-lstm: the default `train` of this project.
Both see exactly the same windows; test MSE is in standardized target units for both.

Prints one row per (series, seed), the ratio of test MSEs, skill vs persistence of each, and
the longest stretch of epochs each spent at normalized validation MSE >= 0.95
(val MSE / variance of the validation targets: 1.0 = no better than the validation mean).

    .venv/bin/python bench/stock_vs_plateau.py --epochs 30 --seeds 1 2 3
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from plateau_lstm.cli import sample_data_path  # noqa: E402
from plateau_lstm.config import PrepareConfig, TrainConfig  # noqa: E402
from plateau_lstm.evaluate import evaluate, forecast_metrics  # noqa: E402
from plateau_lstm.prepare import prepare  # noqa: E402
from plateau_lstm.prepared import load_prepared  # noqa: E402
from plateau_lstm.storage import open_store  # noqa: E402
from plateau_lstm.train import train  # noqa: E402
from plateau_lstm.windows import last_inputs, make_dataset  # noqa: E402

STUCK_LEVEL = 0.95


def series_sources(scratch: str) -> dict[str, str]:
    """Real series: weekly CO2 (bundled, trending), hourly Seattle temperature normals (2010),
    daily Seattle wind speed (2012-2015), the last two from vega_datasets' bundled copies."""
    from vega_datasets import local_data

    seattle = os.path.join(scratch, "seattle_temps.csv")
    local_data.seattle_temps().to_csv(seattle, index=False)
    # daily wind speed: noisy and weakly autocorrelated, where models drift to the mean
    wind = os.path.join(scratch, "seattle_wind.csv")
    local_data.seattle_weather()[["date", "wind"]].to_csv(wind, index=False)
    return {
        "co2_weekly": sample_data_path(),
        "seattle_hourly_temp": seattle,
        "seattle_daily_wind": wind,
    }


def stock_recipe(prepared, config: TrainConfig) -> tuple[dict, list[float]]:
    """The recipe most tutorials give; returns its test metrics and val MSE per epoch."""
    import keras

    keras.utils.set_random_seed(config.seed)
    window, horizon = config.window, config.horizon
    n_features = prepared.values.shape[1]

    def data(split, shuffle):
        start, end = prepared.bounds[split]
        return make_dataset(
            prepared.values,
            start,
            end,
            window=window,
            horizon=horizon,
            batch_size=config.batch_size,
            shuffle=shuffle,
            seed=config.seed,
        )

    model = keras.Sequential(
        [
            keras.Input((window, n_features)),
            keras.layers.LSTM(64, return_sequences=True),
            keras.layers.LSTM(64),
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    history = model.fit(
        data("train", True),
        validation_data=data("val", False),
        epochs=config.epochs,
        verbose=0,
        shuffle=False,
        callbacks=[
            keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=3),
            keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=8, restore_best_weights=True
            ),
        ],
    )
    start, end = prepared.bounds["test"]
    predicted = model.predict(data("test", False), verbose=0)[:, 0].astype("float64")
    truth = prepared.values[max(start, window + horizon - 1) : end, 0].astype("float64")
    persistence = last_inputs(prepared.values, start, end, window, horizon)
    metrics = forecast_metrics(truth, predicted, persistence, prepared.target_std)
    return metrics, list(history.history["val_loss"])


def val_target_variance(prepared, config: TrainConfig) -> float:
    start, end = prepared.bounds["val"]
    first = max(start, config.window + config.horizon - 1)
    return float(np.var(prepared.values[first:end, 0]))


def longest_stuck(normalized: list[float]) -> int:
    longest = run = 0
    for value in normalized:
        run = run + 1 if value >= STUCK_LEVEL else 0
        longest = max(longest, run)
    return longest


def plateau_run(prepared_uri, scratch, config: TrainConfig, variance: float):
    model_dir = os.path.join(scratch, f"model-{config.seed}")
    eval_dir = os.path.join(scratch, f"eval-{config.seed}")
    summary = train(prepared_uri, model_dir, config, verbose=0)
    metrics = evaluate(prepared_uri, model_dir, eval_dir)
    import pandas as pd

    history = pd.read_csv(os.path.join(model_dir, "history.csv"))
    # the yardstick is in units of the typical change; back to standardized target units
    scale = summary["change_scale"] or 1.0
    val_mse = (history["val_mse"] * scale**2).tolist()
    return metrics, val_mse, summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--series", nargs="*", default=None, help="subset of series names")
    parser.add_argument("--json", default=None, help="also write every row to this file")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-stock-") as scratch:
        sources = series_sources(scratch)
        for name, source in sources.items():
            if args.series and name not in args.series:
                continue
            prepared_uri = os.path.join(scratch, name, "prepared")
            prepare(source, prepared_uri, PrepareConfig(), window=48, horizon=1)
            prepared = load_prepared(open_store(prepared_uri))
            for seed in args.seeds:
                config = TrainConfig(epochs=args.epochs, seed=seed)
                variance = val_target_variance(prepared, config)
                started = time.perf_counter()
                stock, stock_val = stock_recipe(prepared, config)
                stock_seconds = time.perf_counter() - started
                started = time.perf_counter()
                ours, our_val, summary = plateau_run(
                    prepared_uri, os.path.join(scratch, name), config, variance
                )
                our_seconds = time.perf_counter() - started
                row = {
                    "series": name,
                    "seed": seed,
                    "stock_test_mse": stock["test_mse"],
                    "plateau_test_mse": ours["test_mse"],
                    "ratio": ours["test_mse"] / stock["test_mse"],
                    "stock_skill": stock["skill_vs_persistence"],
                    "plateau_skill": ours["skill_vs_persistence"],
                    "stock_epochs_stuck": longest_stuck([v / variance for v in stock_val]),
                    "stock_best_normalized_val": min(stock_val) / variance,
                    "plateau_best_normalized_val": min(our_val) / variance,
                    "stock_epochs": len(stock_val),
                    "plateau_restarts": summary["lr_restarts"],
                    "plateau_loss_switches": summary["loss_switches"],
                    "stock_seconds": round(stock_seconds, 1),
                    "plateau_seconds": round(our_seconds, 1),
                }
                rows.append(row)
                print(json.dumps(row), flush=True)

    print(
        "\n| series | seed | test MSE plateau-lstm / stock | skill plateau-lstm | skill stock "
        "| stock epochs at norm. val MSE >= 0.95 | best norm. val MSE stock / plateau-lstm |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['series']} | {r['seed']} | {r['ratio']:.3f} | {r['plateau_skill']:+.3f} | "
            f"{r['stock_skill']:+.3f} | {r['stock_epochs_stuck']} of {r['stock_epochs']} | "
            f"{r['stock_best_normalized_val']:.3f} / {r['plateau_best_normalized_val']:.3f} |"
        )
    for name in sorted({r["series"] for r in rows}):
        ratios = [r["ratio"] for r in rows if r["series"] == name]
        print(f"median ratio {name}: {statistics.median(ratios):.3f} over {len(ratios)} seeds")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
