"""`plateau-lstm train`: fit the residual LSTM with the plateau-breaking callbacks.

Everything the run produces is written to a local scratch folder first and published to
`--output` at the end (model.keras, history.csv, events.jsonl, learning_rate.csv,
report.png, train_summary.json), so an `--output` never holds half a model.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import math
import os
import sys
import tempfile
import time

import numpy as np

from plateau_lstm.config import TrainConfig
from plateau_lstm.errors import TrainingFailed, UserError
from plateau_lstm.prepared import PreparedData, load_prepared
from plateau_lstm.storage import open_store
from plateau_lstm.training_history import HISTORY_COLUMNS
from plateau_lstm.uris import split_uri
from plateau_lstm.windows import change_scales, make_dataset, window_count

log = logging.getLogger("plateau_lstm")

SUMMARY = "train_summary.json"
MODEL_FILE = "model.keras"
LR_TRACE_POINTS = 4000


def train(
    prepared_uri: str, output_uri: str, config: TrainConfig, verbose: int | None = None
) -> dict:
    """Train on a prepared set and publish the model to `output_uri`; returns the summary."""
    output = open_store(output_uri)
    if output.exists(SUMMARY):
        done = output.read_json(SUMMARY)
        if done.get("config") == _jsonable(config.to_dict()):
            log.info(
                "train: %s already holds a model trained with these options; kept it", output_uri
            )
            return done
        raise UserError(
            f"{output_uri}: already holds a model trained with other options. Nothing was "
            "changed; give another --output, or delete that one first."
        )
    prepared = load_prepared(open_store(prepared_uri), display=prepared_uri)
    _check_windows(prepared, config, prepared_uri)

    with tempfile.TemporaryDirectory(prefix="plateau-lstm-train-") as scratch:
        summary = _fit(prepared, config, scratch, verbose)
        summary["prepared"] = prepared_uri
        _publish(scratch, output_uri, summary)
    return summary


def _fit(prepared: PreparedData, config: TrainConfig, scratch: str, verbose: int | None) -> dict:
    import keras

    from plateau_lstm.callbacks import (
        AdaptiveLoss,
        AdaptiveLossSwitcher,
        CyclicalLearningRate,
        EventLog,
        NanGuard,
        PlateauDetector,
        Triangular2Schedule,
    )
    from plateau_lstm.model import build_model, build_optimizer, forecasting_model
    from plateau_lstm.report import write_report
    from plateau_lstm.training_history import TrainingHistory

    keras.utils.set_random_seed(config.seed)
    scales = change_scales(prepared.values, *prepared.bounds["train"], config.horizon)
    target_scale = float(scales[0]) if config.model.forecast_change else None
    train_ds = _dataset(prepared, "train", config, target_scale, shuffle=True)
    val_ds = _dataset(prepared, "val", config, target_scale, shuffle=False)
    train_windows = window_count(*prepared.bounds["train"], config.window, config.horizon)
    steps_per_epoch = math.ceil(train_windows / config.batch_size)

    sched = config.schedule
    schedule = Triangular2Schedule(
        base_lr=sched.base_lr,
        max_lr=sched.max_lr,
        step_size=max(1, round(sched.half_cycle_epochs * steps_per_epoch)),
    )
    loss = AdaptiveLoss(order=config.loss_order)
    model = build_model(config.model, config.window, len(prepared.columns), change_scale=scales)
    model.compile(
        optimizer=build_optimizer(config, schedule),
        loss=loss,
        metrics=[keras.metrics.MeanSquaredError(name="mse")],
    )

    events_path = os.path.join(scratch, "events.jsonl")
    open(events_path, "a").close()  # present even for a run without a single adaptation
    events = EventLog(path=events_path)
    plateau = config.plateau
    detector = PlateauDetector(
        monitor="val_mse",
        min_delta=plateau.min_delta,
        patience=plateau.patience,
        trend_window=plateau.trend_window,
        event_log=events,
    )
    restarts = CyclicalLearningRate(
        schedule,
        detector,
        boost_factor=sched.boost_factor,
        boost_cap=sched.boost_cap,
        event_log=events,
    )
    switcher = AdaptiveLossSwitcher(loss, detector, event_log=events)
    guard = NanGuard(
        schedule, max_recoveries=plateau.max_nan_recoveries, event_log=events, lr_callback=restarts
    )
    history = TrainingHistory(schedule, loss, detector)
    best_path = os.path.join(scratch, "best.weights.h5")
    keep_best = keras.callbacks.ModelCheckpoint(
        best_path, monitor="val_mse", mode="min", save_best_only=True, save_weights_only=True
    )

    log.info(
        "train: %d train / %d val windows of %d steps, %d batches per epoch, %d epochs, %s params",
        train_windows,
        window_count(*prepared.bounds["val"], config.window, config.horizon),
        config.window,
        steps_per_epoch,
        config.epochs,
        f"{model.count_params():,}",
    )
    started = time.perf_counter()
    model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=config.epochs,
        verbose=_keras_verbosity(verbose),
        shuffle=False,  # the dataset reshuffles its windows every epoch itself
        callbacks=[guard, detector, restarts, switcher, history, keep_best],
    )
    train_seconds = time.perf_counter() - started
    if guard.abort_message:
        raise TrainingFailed(guard.abort_message)
    if os.path.exists(best_path):
        model.load_weights(best_path)
        os.remove(best_path)
    forecasting_model(model, config.model, scales).save(os.path.join(scratch, MODEL_FILE))
    _write_csv(os.path.join(scratch, "history.csv"), HISTORY_COLUMNS, history.rows)
    steps = int(model.optimizer.iterations.numpy())
    _write_csv(
        os.path.join(scratch, "learning_rate.csv"),
        ("step", "learning_rate"),
        _lr_trace(restarts, steps),
    )
    write_report(scratch, events.events)

    val_mse = [row["val_mse"] for row in history.rows if math.isfinite(row["val_mse"])]
    counts = events.counts()
    return {
        "config": _jsonable(config.to_dict()),
        "columns": prepared.columns,
        "window": config.window,
        "horizon": config.horizon,
        "epochs_run": len(history.rows),
        "steps": steps,
        "val_mse_best": min(val_mse) if val_mse else None,
        "training_target": "change / change_scale" if target_scale else "level",
        "change_scale": target_scale,
        "lr_restarts": restarts.restarts,
        "loss_switches": switcher.switches,
        "plateaus_detected": detector.plateaus_detected,
        "nan_recoveries": counts.get("nan_recovery", 0),
        "final_loss": loss.active_name,
        "train_seconds": round(train_seconds, 3),
    }


def _dataset(prepared: PreparedData, split: str, config: TrainConfig, target_scale, shuffle):
    start, end = prepared.bounds[split]
    return make_dataset(
        prepared.values,
        start,
        end,
        window=config.window,
        horizon=config.horizon,
        batch_size=config.batch_size,
        shuffle=shuffle,
        seed=config.seed,
        change_scale=target_scale,
    )


def _check_windows(prepared: PreparedData, config: TrainConfig, display: str) -> None:
    for split, (start, end) in prepared.bounds.items():
        if window_count(start, end, config.window, config.horizon) < 1:
            raise UserError(
                f"{display}: the {split} part ({end - start} rows) has no complete window for "
                f"--window {config.window} --horizon {config.horizon}. Use a smaller --window or "
                "prepare more data."
            )


def _lr_trace(restarts, steps: int) -> list[dict]:
    """The exact per-step rate, rebuilt from the schedule's segments (thinned to a few thousand)."""
    wanted = np.arange(0, steps, max(1, steps // LR_TRACE_POINTS))
    rates = restarts.learning_rate_at(wanted) if steps else []
    return [{"step": int(s), "learning_rate": float(r)} for s, r in zip(wanted, rates, strict=True)]


def _publish(scratch: str, output_uri: str, summary: dict) -> None:
    import json

    with open(os.path.join(scratch, SUMMARY), "w") as handle:
        json.dump(summary, handle, indent=2, sort_keys=True)
        handle.write("\n")
    parent, name = split_uri(output_uri)
    store = open_store(parent)
    store.publish_dir(scratch, name, last=SUMMARY, overwrite=store.child(name).list() != [])
    log.info("train: published the model to %s", output_uri)


def _write_csv(path: str, columns, rows) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def _keras_verbosity(verbose: int | None) -> int:
    """Keras' progress bar when a person watches, one line per epoch in logs."""
    if verbose is not None:
        return verbose
    return 1 if sys.stdout.isatty() else 2


def _jsonable(value):
    if dataclasses.is_dataclass(value):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value
