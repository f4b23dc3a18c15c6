"""`plateau-lstm evaluate`: test-set metrics against persistence and the mean, on the same windows.

All errors are in standardized target units (the scaler was fit on train), except
`test_mae_original`, which is in the target's own units.
"""

from __future__ import annotations

import logging
import os
import tempfile

import numpy as np

from plateau_lstm.errors import UserError
from plateau_lstm.prepared import load_prepared
from plateau_lstm.storage import open_store
from plateau_lstm.train import MODEL_FILE, SUMMARY
from plateau_lstm.uris import split_uri
from plateau_lstm.windows import last_inputs, make_dataset, window_count

log = logging.getLogger("plateau_lstm")

METRICS_FILE = "metrics.json"


def evaluate(prepared_uri: str, model_uri: str, output_uri: str) -> dict:
    prepared = load_prepared(open_store(prepared_uri), display=prepared_uri)
    model_dir, model_name = _model_location(model_uri)
    summary = model_dir.read_json(SUMMARY) if model_dir.exists(SUMMARY) else {}
    with tempfile.TemporaryDirectory(prefix="plateau-lstm-evaluate-") as scratch:
        model = load_model(model_dir, model_name, scratch)
    window = int(model.input_shape[1])
    horizon = int(summary.get("horizon", 1))
    if model.input_shape[2] != len(prepared.columns):
        raise UserError(
            f"{model_uri}: the model takes {model.input_shape[2]} input columns but "
            f"{prepared_uri} has {len(prepared.columns)} ({', '.join(prepared.columns)}). "
            "Evaluate on the data set the model was trained on."
        )
    start, end = prepared.bounds["test"]
    if window_count(start, end, window, horizon) < 1:
        raise UserError(f"{prepared_uri}: the test part has no complete window of {window} steps.")
    dataset = make_dataset(
        prepared.values, start, end, window=window, horizon=horizon, batch_size=1024
    )
    predicted = model.predict(dataset, verbose=0)[:, 0].astype("float64")
    truth = prepared.values[max(start, window + horizon - 1) : end, 0].astype("float64")
    persistence = last_inputs(prepared.values, start, end, window, horizon)
    metrics = forecast_metrics(truth, predicted, persistence, prepared.target_std)
    metrics.update(
        {
            "test_windows": len(truth),
            "window": window,
            "horizon": horizon,
            "target": prepared.target,
            "val_mse_best": summary.get("val_mse_best"),
            "epochs_run": summary.get("epochs_run"),
            "lr_restarts": summary.get("lr_restarts"),
            "loss_switches": summary.get("loss_switches"),
            "plateaus_detected": summary.get("plateaus_detected"),
            "nan_recoveries": summary.get("nan_recoveries"),
            "train_seconds": summary.get("train_seconds"),
            "model": model_uri,
            "prepared": prepared_uri,
        }
    )
    parent, name = split_uri(output_uri)
    open_store(parent).child(name).write_json(METRICS_FILE, metrics)
    log.info(
        "evaluate: test MSE %.5f, persistence %.5f, skill vs persistence %+.3f -> %s/%s",
        metrics["test_mse"],
        metrics["persistence_mse"],
        metrics["skill_vs_persistence"],
        output_uri.rstrip("/"),
        METRICS_FILE,
    )
    return metrics


def forecast_metrics(truth, predicted, persistence, target_std: float) -> dict:
    """Errors of the model, persistence (y[t+h] = y[t]) and the training mean (0 when scaled)."""
    error = predicted - truth
    test_mse = float(np.mean(error**2))
    test_mae = float(np.mean(np.abs(error)))
    persistence_mse = float(np.mean((persistence - truth) ** 2))
    return {
        "test_mse": test_mse,
        "test_mae": test_mae,
        "test_mae_original": test_mae * target_std,
        "test_rmse_original": float(np.sqrt(test_mse)) * target_std,
        "persistence_mse": persistence_mse,
        "persistence_mae": float(np.mean(np.abs(persistence - truth))),
        "mean_mse": float(np.mean(truth**2)),
        "skill_vs_persistence": 1.0 - test_mse / persistence_mse if persistence_mse > 0 else None,
    }


def load_model(model_dir, model_name: str, scratch: str):
    """Load `model.keras` with safe_mode=True (no arbitrary code) from a local copy."""
    import keras

    import plateau_lstm.callbacks  # noqa: F401  registers the custom loss and schedule
    import plateau_lstm.layers  # noqa: F401  registers the custom layers

    local = model_dir.local_path(model_name)
    if local is None:
        local = os.path.join(scratch, model_name)
        model_dir.download_file(model_name, local)
    return keras.saving.load_model(local, safe_mode=True, compile=False)


def _model_location(model_uri: str):
    """`--model` may name the train output folder or the model.keras file in it."""
    if model_uri.rstrip("/").endswith(".keras"):
        parent, name = split_uri(model_uri.rstrip("/"))
        store = open_store(parent)
    else:
        store, name = open_store(model_uri), MODEL_FILE
    if not store.exists(name):
        raise UserError(
            f"{model_uri}: no {name} there. "
            "Pass the folder that `plateau-lstm train --output` wrote."
        )
    return store, name
