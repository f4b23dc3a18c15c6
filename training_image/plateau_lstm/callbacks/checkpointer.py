"""Checkpoints the complete training state at every epoch end, without waiting on storage."""

import itertools
import logging
import math
import shutil
from pathlib import Path

import keras

from plateau_lstm.background_uploader import UploadJob
from plateau_lstm.checkpoints import CheckpointStore, checkpoint_name, write_manifest
from plateau_lstm.training_state import capture_training_state

_logger = logging.getLogger("plateau_lstm")


class Checkpointer(keras.callbacks.Callback):
    """Writes a checkpoint of everything a resumed fit needs, and uploads it in the background.

    At each epoch end it copies the weights, the optimizer's variables, the random state and the
    `get_state()` of every object in `stateful` into memory (a few milliseconds) and hands the
    copy to `uploader`, whose thread writes it to a local staging folder with its manifest,
    publishes it to `checkpoints` with `COMMITTED` last, and prunes old checkpoints. Training
    goes on at once; at most the uploader's queue of copies is held in memory.

    Put it last in the callback list: it records what the other callbacks decided at the end of
    the epoch (a NaN guard's rollback, a learning-rate restart, a loss switch).

    It also tracks the best epoch of `monitor` (the lowest finite value, the earliest on ties:
    the same rule as `ModelCheckpoint(mode="min", save_best_only=True)`), so a resumed run knows
    which checkpoint holds its best weights.

    Example:

    ```python
    with BackgroundUploader() as uploader:
        checkpointer = Checkpointer(
            CheckpointStore(open_store(output)), uploader, "/tmp/staging",
            stateful={"plateau_detector": detector, "cyclical_learning_rate": restarts},
        )
        model.fit(..., callbacks=[detector, restarts, checkpointer])
        uploader.wait(timeout=300)
    ```

    Args:
        checkpoints: the `CheckpointStore` of the run's output. Required.
        uploader: the `BackgroundUploader` that publishes the folders. Required.
        staging_dir: a local folder for the folders waiting to be uploaded. Required.
        stateful: name -> object with `get_state()`/`set_state()` whose state is saved.
            Defaults to `None` (weights, optimizer and random state only).
        extra_state: JSON-able facts stored with every checkpoint (configuration, data
            fingerprint). Defaults to `None`.
        monitor: the epoch log value whose lowest epoch is the best. Defaults to `"val_mse"`.
        publish: False on a worker that is not the chief of a multi-worker run: it captures
            the state like the chief (reading mirrored variables may be a collective every
            worker must join) and keeps it nowhere. Defaults to `True`.
    """

    def __init__(
        self,
        checkpoints,
        uploader,
        staging_dir,
        stateful=None,
        extra_state=None,
        monitor="val_mse",
        publish=True,
    ):
        super().__init__()
        if not isinstance(checkpoints, CheckpointStore):
            raise ValueError(
                f"`checkpoints` must be a CheckpointStore. Received: checkpoints={checkpoints!r}"
            )
        if not isinstance(monitor, str) or not monitor:
            raise ValueError(f"`monitor` must be a metric name. Received: monitor={monitor!r}")
        stateful = dict(stateful or {})
        for name, obj in stateful.items():
            if not (
                callable(getattr(obj, "get_state", None))
                and callable(getattr(obj, "set_state", None))
            ):
                raise ValueError(
                    f"`stateful[{name!r}]` must have get_state() and set_state(). Received: {obj!r}"
                )
        self.checkpoints = checkpoints
        self.uploader = uploader
        self.staging_dir = Path(staging_dir)
        self.stateful = stateful
        self.extra_state = dict(extra_state or {})
        self.monitor = monitor
        self.publish = bool(publish)
        self._serial = itertools.count()
        self._restored = False
        self._reset()

    def _reset(self):
        self.best_value = None
        self.best_epoch = None
        self.last_epoch = 0

    def on_train_begin(self, logs=None):
        if self._restored:
            self._restored = False
        else:
            self._reset()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        completed = epoch + 1
        value = _finite_or_none(logs.get(self.monitor))
        if value is not None and (self.best_value is None or value < self.best_value):
            self.best_value, self.best_epoch = value, completed
        self.last_epoch = completed
        snapshot = capture_training_state(
            self.model,
            {**self.stateful, "checkpointer": self},
            epoch=completed,
            extra=self.extra_state,
        )
        if not self.publish:
            return
        # A fresh folder per capture: one still waiting for upload is never written over.
        folder = self.staging_dir / f"{next(self._serial):06d}-{checkpoint_name(completed)}"

        def publish():
            # Files are written on the first attempt only; a retry uploads the same bytes.
            if not folder.is_dir():
                staging = folder.with_name(folder.name + ".writing")
                shutil.rmtree(staging, ignore_errors=True)
                staging.mkdir(parents=True)
                snapshot.write(staging)
                write_manifest(staging, epoch=completed, monitor=self.monitor, value=value)
                staging.rename(folder)
            self.checkpoints.publish(folder)

        self.uploader.submit(
            UploadJob(
                name=f"checkpoint {checkpoint_name(completed)}",
                run=publish,
                on_done=self.checkpoints.prune,
                on_discard=lambda: shutil.rmtree(folder, ignore_errors=True),
            )
        )

    def get_state(self):
        """Returns the best epoch and value of `monitor` so far, JSON-able."""
        return {
            "best_value": self.best_value,
            "best_epoch": self.best_epoch,
            "last_epoch": self.last_epoch,
        }

    def set_state(self, state):
        """Restores `get_state()` output; the next `fit` continues from it.

        Args:
            state: A dict returned by `get_state`, possibly through JSON.
        """
        keys = {"best_value", "best_epoch", "last_epoch"}
        if not isinstance(state, dict) or not keys <= state.keys():
            raise ValueError(
                f"`state` must be a dict with keys {sorted(keys)}. Received: state={state!r}"
            )
        self.best_value = _finite_or_none(state["best_value"])
        self.best_epoch = None if state["best_epoch"] is None else int(state["best_epoch"])
        self.last_epoch = int(state["last_epoch"])
        self._restored = True


def _finite_or_none(value):
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None
