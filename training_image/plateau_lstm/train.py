"""`plateau-lstm train`: fit the residual LSTM with the plateau-breaking callbacks.

Everything the run produces is written to a local scratch folder first and published to
`--output` at the end (model.keras, history.csv, events.jsonl, learning_rate.csv,
report.png, and train_summary.json strictly last), so a reader that waits for the summary
never sees half a model.

Every epoch also leaves a checkpoint in `<output>/checkpoints/` (uploaded in the background;
see checkpoints.py). A run whose `--output` holds a committed checkpoint of the same options
and data continues from it: same weights, optimizer slots, epoch, learning-rate cycle, loss,
detector counters, NaN-guard count, history, events and random state.

Under `--distribution multi-worker` every worker runs this same function; only the chief
writes to `--output` (checkpoints, model, metrics pushes). The other workers take every step
the chief takes, collectives included, and keep what they write in their own scratch folder.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass

import numpy as np

from plateau_lstm.background_uploader import BackgroundUploader, UploadJob
from plateau_lstm.checkpoints import CheckpointStore, CorruptCheckpoint, LoadedCheckpoint
from plateau_lstm.config import CheckpointConfig, MetricsConfig, TrainConfig
from plateau_lstm.distribution import (
    Distribution,
    broadcast_from_chief,
    choose,
    scaled_learning_rates,
)
from plateau_lstm.errors import TrainingFailed, UserError
from plateau_lstm.metrics_export import MetricsExporter
from plateau_lstm.prepared import PreparedData, load_prepared, sha256_bytes
from plateau_lstm.storage import ArtifactStore, open_store
from plateau_lstm.training_history import HISTORY_COLUMNS
from plateau_lstm.training_state import read_state
from plateau_lstm.windows import change_scales, make_dataset, window_count

log = logging.getLogger("plateau_lstm")

SUMMARY = "train_summary.json"
MODEL_FILE = "model.keras"
LR_TRACE_POINTS = 4000


@dataclass(frozen=True)
class _Checkpointing:
    """What `_fit` needs to checkpoint the run and, when `resume` is set, to continue one."""

    checkpoints: CheckpointStore
    uploader: BackgroundUploader
    staging_dir: str
    identity: dict  # the options and data a checkpoint must share to be resumed from
    resume: LoadedCheckpoint | None
    distribution: Distribution


def train(
    prepared_uri: str,
    output_uri: str,
    config: TrainConfig,
    verbose: int | None = None,
    checkpointing: CheckpointConfig | None = None,
    metrics: MetricsConfig | None = None,
    distribution: str = "auto",
) -> dict:
    """Train on a prepared set and publish the model to `output_uri`; returns the summary.

    Continues from the newest committed checkpoint in `<output_uri>/checkpoints/` when there
    is one (made with the same options, data and number of replicas); otherwise starts at
    epoch 0. `distribution` is one of distribution.CHOICES.
    """
    checkpointing = checkpointing or CheckpointConfig()
    output = open_store(output_uri)
    if output.exists(SUMMARY):
        done = output.read_json(SUMMARY)
        if _with_defaults(done.get("config")) == _jsonable(config.to_dict()):
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
    placement = choose(distribution)
    if placement.kind != "none":
        log.info(
            "train: %s over %d replica(s)%s",
            placement.kind,
            placement.replicas,
            f", this process is {placement.worker}" if placement.worker else "",
        )
    if not placement.is_chief and metrics is not None:
        # The chief's metrics stand for the run: a worker's pushes would overwrite them, and
        # its /metrics (the same numbers, FollowChief) would count the run twice on dashboards.
        metrics = dataclasses.replace(metrics, pushgateway=None, port=0)
    checkpoints = CheckpointStore(output, keep_last=checkpointing.keep_last)
    identity = {
        "config": _jsonable(config.to_dict()),
        "data": _data_fingerprint(prepared),
        # The global batch and the rates depend on it: another count is another run.
        "replicas": placement.replicas,
    }

    with (
        tempfile.TemporaryDirectory(prefix="plateau-lstm-train-") as scratch,
        MetricsExporter(metrics) as exporter,
    ):
        resume = _resume_point(
            checkpoints, identity, output_uri, os.path.join(scratch, "resume"), placement
        )
        model_dir = os.path.join(scratch, "model")
        os.mkdir(model_dir)
        with BackgroundUploader(
            max_pending=checkpointing.max_pending_uploads, on_uploaded=_upload_timer(exporter)
        ) as uploader:
            session = _Checkpointing(
                checkpoints, uploader, os.path.join(scratch, "staging"), identity, resume, placement
            )
            summary = _fit(prepared, config, model_dir, verbose, session, exporter)
            summary["prepared"] = prepared_uri
            if not placement.is_chief:
                log.info("train: %s done; the chief publishes the model", placement.worker)
                return summary
            _write_json(os.path.join(model_dir, SUMMARY), summary)
            # The final upload is the one a run waits for; pending checkpoints go first.
            uploader.submit(
                UploadJob("the model", lambda: _publish(model_dir, output), droppable=False)
            )
            uploader.wait(checkpointing.storage_wait_seconds)
        log.info("train: published the model to %s", output_uri)
        # Only now: the nightly-retrain alert trusts this timestamp to mean "a model landed".
        exporter.mark_success()
    return summary


def _upload_timer(exporter: MetricsExporter):
    """Feeds plateau_lstm_checkpoint_upload_seconds from the uploader (checkpoints only)."""

    def observe(job: UploadJob) -> None:
        if job.name.startswith("checkpoint "):
            exporter.metrics.observe_checkpoint_upload(job.seconds)

    return observe


def _resume_point(
    checkpoints: CheckpointStore,
    identity: dict,
    output_uri: str,
    destination: str,
    placement: Distribution,
) -> LoadedCheckpoint | None:
    """The verified checkpoint to continue from, or None; refuses one of other options/data.

    Every worker reads the chief's checkpoints and continues from the epoch the chief chose;
    only the chief tidies them up.
    """
    found, damaged = checkpoints.load_latest(destination)
    # Workers that continued from different epochs would wait for each other's collectives
    # forever (a checkpoint can land between two workers' looks at the store): the chief's
    # choice counts for everyone.
    mine = found.epoch if found is not None else 0
    chief = int(broadcast_from_chief(placement, [float(mine)])[0])
    if chief != mine:
        log.warning(
            "train: %s: the chief resumes from epoch %d, this worker found %d; following the chief",
            placement.worker,
            chief,
            mine,
        )
        try:
            found = checkpoints.load(chief, destination) if chief else None
        except CorruptCheckpoint as err:
            raise TrainingFailed(
                f"{placement.worker} cannot read the checkpoint of epoch {chief} that the chief "
                f"resumes from ({err}). Start the job again."
            ) from err
    if found is not None:
        saved = read_state(found.directory)
        saved = {
            **saved,
            "config": _with_defaults(saved.get("config")),
            "replicas": saved.get("replicas", 1),  # checkpoints from before scale-out
        }
        differences = _differences({k: saved.get(k) for k in identity}, identity)
        if differences:
            raise UserError(
                f"{output_uri}: holds checkpoints of a run with other options or data "
                f"({'; '.join(differences)}). Nothing was changed; give another --output, or "
                f"delete {checkpoints.uri} to start over."
            )
    # Nothing was written before this point. A damaged checkpoint is trusted no more (this run
    # writes its epoch again), and multipart uploads a killed run left are aborted: no upload
    # of this run has started yet, so none of them can be ours.
    if not placement.is_chief:
        return found
    for epoch in damaged:
        checkpoints.withdraw(epoch)
    checkpoints.abort_incomplete_uploads()
    return found


def _fit(
    prepared: PreparedData,
    config: TrainConfig,
    scratch: str,
    verbose: int | None,
    checkpointing: _Checkpointing,
    exporter: MetricsExporter | None = None,
) -> dict:
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
    from plateau_lstm.callbacks.checkpointer import Checkpointer
    from plateau_lstm.callbacks.follow_chief import FollowChief
    from plateau_lstm.callbacks.prometheus_metrics import PrometheusMetrics
    from plateau_lstm.model import build_optimizer
    from plateau_lstm.report import write_report
    from plateau_lstm.training_history import TrainingHistory
    from plateau_lstm.training_state import EventLogState

    keras.utils.set_random_seed(config.seed)
    placement = checkpointing.distribution
    # Each replica takes batch_size windows of every step.
    global_batch = config.batch_size * placement.replicas
    scales = change_scales(prepared.values, *prepared.bounds["train"], config.horizon)
    target_scale = float(scales[0]) if config.model.forecast_change else None
    train_ds = _dataset(prepared, "train", config, target_scale, True, global_batch, placement)
    val_ds = _dataset(prepared, "val", config, target_scale, False, global_batch, placement)
    train_windows = window_count(*prepared.bounds["train"], config.window, config.horizon)
    steps_per_epoch = math.ceil(train_windows / global_batch)

    sched = config.schedule
    base_lr, max_lr = scaled_learning_rates(
        sched.base_lr, sched.max_lr, placement.replicas, config.lr_scaling
    )
    with placement.scope():
        # Variables made here (weights, optimizer slots, the rate cycle, the loss index) are
        # mirrored on every replica.
        schedule = Triangular2Schedule(
            base_lr=base_lr,
            max_lr=max_lr,
            step_size=max(1, round(sched.half_cycle_epochs * steps_per_epoch)),
        )
        loss = AdaptiveLoss(order=config.loss_order)
        model = _build_model(config, len(prepared.columns), scales, placement.replicas > 1)
        # Under mixed_float16 compile wraps the optimizer in Keras' LossScaleOptimizer.
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
    metrics = PrometheusMetrics(
        exporter or MetricsExporter(),
        detector=detector,
        lr_callback=restarts,
        loss_switcher=switcher,
        nan_guard=guard,
    )
    best_path = os.path.join(scratch, "best.weights.h5")
    keep_best = keras.callbacks.ModelCheckpoint(
        best_path, monitor="val_mse", mode="min", save_best_only=True, save_weights_only=True
    )
    # Everything whose state a resumed run needs besides weights, optimizer and random state.
    stateful = {
        "nan_guard": guard,
        "plateau_detector": detector,
        "cyclical_learning_rate": restarts,
        "adaptive_loss_switcher": switcher,
        "training_history": history,
        "events": EventLogState(events),
    }
    checkpointer = Checkpointer(
        checkpointing.checkpoints,
        checkpointing.uploader,
        checkpointing.staging_dir,
        stateful=stateful,
        extra_state=checkpointing.identity,
        publish=placement.is_chief,
    )
    if placement.kind == "multi-worker":
        from plateau_lstm.keras_multi_worker import prepare_for_fit

        prepare_for_fit(model, placement.strategy, val_ds)
    initial_epoch = 0
    if checkpointing.resume is not None:
        initial_epoch = _restore(
            checkpointing, model, checkpointer, keep_best, train_ds, config, scratch
        )

    log.info(
        "train: %d train / %d val windows of %d steps, %d batches of %d per epoch, %d epochs, "
        "%s params, learning rate %.3g-%.3g%s",
        train_windows,
        window_count(*prepared.bounds["val"], config.window, config.horizon),
        config.window,
        steps_per_epoch,
        global_batch,
        config.epochs,
        f"{model.count_params():,}",
        base_lr,
        max_lr,
        ", mixed float16" if config.mixed_precision else "",
    )
    started = time.perf_counter()
    model.fit(
        # One endless iterator: each pass reshuffles, so epoch e gets the dataset's e-th order
        # whatever Keras does with iterators between epochs, and a resume can skip to it.
        train_ds.repeat(),
        steps_per_epoch=steps_per_epoch,
        validation_data=val_ds,
        epochs=config.epochs,
        initial_epoch=initial_epoch,
        verbose=_keras_verbosity(verbose),
        shuffle=False,  # the dataset reshuffles its windows every epoch itself
        # The checkpointer goes last: it records what the others decided at each epoch end.
        # (Only the metrics come after it: they decide nothing, and so time its work too.)
        # FollowChief goes first: under multi-worker the others must see the chief's numbers.
        callbacks=[
            FollowChief(placement, schedule, loss),
            guard,
            detector,
            restarts,
            switcher,
            history,
            keep_best,
            checkpointer,
            metrics,
        ],
    )
    train_seconds = time.perf_counter() - started
    # read before loading the best epoch's weights, which bring back that epoch's step count
    steps = int(model.optimizer.iterations.numpy())
    if guard.abort_message:
        raise TrainingFailed(guard.abort_message)

    val_mse = [row["val_mse"] for row in history.rows if math.isfinite(row["val_mse"])]
    counts = events.counts()
    summary = {
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
        "resumed_from_epoch": initial_epoch if checkpointing.resume is not None else None,
        "distribution": placement.kind,
        "replicas": placement.replicas,
        "global_batch_size": global_batch,
        "learning_rate_bounds": [base_lr, max_lr],
        "optimizer": type(model.optimizer).__name__,  # LossScaleOptimizer under mixed precision
    }
    if not placement.is_chief:
        # The chief saves, reports and publishes; a worker that failed at it would fail the job.
        return summary

    if os.path.exists(best_path):
        model.load_weights(best_path)
        os.remove(best_path)
    _serving_model(model, config, len(prepared.columns), scales, placement.replicas > 1).save(
        os.path.join(scratch, MODEL_FILE)
    )
    _write_csv(os.path.join(scratch, "history.csv"), HISTORY_COLUMNS, history.rows)
    _write_csv(
        os.path.join(scratch, "learning_rate.csv"),
        ("step", "learning_rate"),
        _lr_trace(restarts, steps),
    )
    write_report(scratch, events.events)
    return summary


def _serving_model(model, config: TrainConfig, n_features: int, scales, replicated: bool):
    """The forecaster to save: the plain float32 model, however it was trained.

    Under --mixed-precision the trained layers compute in float16, and on several replicas the
    batch norms synchronize across them; evaluation or a server on one device should inherit
    neither, so the weights (float32, the same layout in every case) move into the plain model.
    """
    from plateau_lstm.model import forecasting_model

    if config.mixed_precision or replicated:
        plain = _build_model(dataclasses.replace(config, mixed_precision=False), n_features, scales)
        plain.set_weights(model.get_weights())
        model = plain
    return forecasting_model(model, config.model, scales)


def _with_defaults(saved_config):
    """A stored run's options with the defaults of options it predates (mixed_precision, ...)."""
    if not isinstance(saved_config, dict):
        return saved_config
    return {**_jsonable(TrainConfig().to_dict()), **saved_config}


def _build_model(config: TrainConfig, n_features: int, scales, synchronized: bool = False):
    """The residual LSTM, its layers in float16 compute under --mixed-precision.

    The policy is global in Keras, so it is set only while the layers are made: they keep it,
    and nothing built later (the forecasting wrapper, another run in this process) inherits it.
    The output layer stays float32 (model.py), so losses and their scaling see float32.
    """
    import keras

    from plateau_lstm.model import build_model

    previous = keras.config.dtype_policy()
    if config.mixed_precision:
        keras.config.set_dtype_policy("mixed_float16")
    try:
        return build_model(
            config.model,
            config.window,
            n_features,
            change_scale=scales,
            synchronized_batch_norm=synchronized,
        )
    finally:
        keras.config.set_dtype_policy(previous)


def _restore(checkpointing, model, checkpointer, keep_best, train_ds, config, scratch) -> int:
    """Put the resume checkpoint back into the freshly built run; returns the epoch to start at."""
    from plateau_lstm.training_state import restore_training_state

    resume = checkpointing.resume
    restore_training_state(
        resume.directory, model, {**checkpointer.stateful, "checkpointer": checkpointer}
    )
    # Each pass over the training windows draws the next shuffle order from the dataset's seed
    # generator (fit repeats the dataset, one pass per epoch); opening as many iterators as
    # epochs are done makes the resumed epochs draw the orders an uninterrupted run would.
    for _ in range(resume.epoch):
        iter(train_ds)
    _restore_best_weights(checkpointing, model, checkpointer, keep_best, scratch)
    restarts = checkpointer.stateful["cyclical_learning_rate"].restarts
    best = (
        f"best val_mse {checkpointer.best_value:.4g} at epoch {checkpointer.best_epoch}"
        if checkpointer.best_epoch is not None
        else "no finite val_mse yet"
    )
    log.info(
        "train: resuming from epoch %d of %d, checkpoint %s (loss %s, %d LR restart(s), %s)",
        resume.epoch,
        config.epochs,
        resume.uri,
        checkpointer.stateful["adaptive_loss_switcher"].loss.active_name,
        restarts,
        best,
    )
    return resume.epoch


def _restore_best_weights(checkpointing, model, checkpointer, keep_best, scratch) -> None:
    """Give ModelCheckpoint the best epoch's weights and value, as if it had run all along.

    The final model is the best validation epoch's; after a resume that epoch may lie before
    it, and its checkpoint (retention always keeps the best) holds its weights. Called after
    the resume state is restored; leaves the model with the resumed weights.
    """
    from plateau_lstm.training_state import restore_model_weights

    resume = checkpointing.resume
    best_epoch = checkpointer.best_epoch
    if best_epoch is not None and best_epoch != resume.epoch:
        try:
            best = checkpointing.checkpoints.load(best_epoch, os.path.join(scratch, "best"))
        except CorruptCheckpoint as err:
            log.warning(
                "train: the checkpoint of the best epoch %d is unusable (%s); the model will be "
                "the best of epoch %d and later",
                best_epoch,
                err,
                resume.epoch,
            )
            checkpointer.best_value = resume.monitor_value
            checkpointer.best_epoch = resume.epoch if resume.monitor_value is not None else None
        else:
            restore_model_weights(best.directory, model)
            model.save_weights(keep_best.filepath)
            restore_model_weights(resume.directory, model)
            keep_best.best = checkpointer.best_value
            return
    if checkpointer.best_epoch is not None:  # the resumed epoch is the best one
        model.save_weights(keep_best.filepath)
        keep_best.best = checkpointer.best_value


def _data_fingerprint(prepared: PreparedData) -> str:
    """The prepared set's identity: the sha256 of its manifest's file checksums."""
    return sha256_bytes(json.dumps(prepared.manifest["files"], sort_keys=True).encode())


def _differences(saved: dict, current: dict, prefix: str = "") -> list[str]:
    """'epochs: 6 -> 8' for each leaf that differs, for the refusal to resume."""
    found = []
    for key in sorted(set(saved) | set(current)):
        old, new = saved.get(key), current.get(key)
        name = f"{prefix}{key}"
        if isinstance(old, dict) and isinstance(new, dict):
            found.extend(_differences(old, new, f"{name}."))
        elif old != new:
            found.append(f"{name}: {_short(old)} -> {_short(new)}")
    return found


def _short(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 20 else text[:8] + "..."


def _dataset(
    prepared: PreparedData,
    split: str,
    config: TrainConfig,
    target_scale,
    shuffle: bool,
    global_batch: int,
    placement: Distribution,
):
    import tensorflow as tf

    start, end = prepared.bounds[split]
    dataset = make_dataset(
        prepared.values,
        start,
        end,
        window=config.window,
        horizon=config.horizon,
        batch_size=global_batch,
        shuffle=shuffle,
        seed=config.seed,
        change_scale=target_scale,
    )
    if placement.kind == "multi-worker":
        # The windows are made in memory, not read from files: each worker builds every
        # batch and keeps its share (DATA), instead of TF trying and failing to shard by file.
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.DATA
        )
        dataset = dataset.with_options(options)
    return dataset


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


def _write_json(path: str, obj: dict) -> None:
    with open(path, "w") as handle:
        json.dump(obj, handle, indent=2, sort_keys=True)
        handle.write("\n")


def _publish(model_dir: str, output: ArtifactStore) -> None:
    """Upload the model's files, train_summary.json strictly last.

    The output folder also holds checkpoints/, which must survive, so it cannot be swapped in
    whole; each file is written atomically instead, and the summary that readers wait for
    comes after all the others. Safe to repeat (the uploader retries it).
    """
    names = sorted(name for name in os.listdir(model_dir) if name != SUMMARY)
    for name in [*names, SUMMARY]:
        output.upload_file(os.path.join(model_dir, name), name)


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
