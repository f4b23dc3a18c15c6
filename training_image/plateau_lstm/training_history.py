"""Per-epoch record of what the plateau machinery did, for history.csv and the report."""

from __future__ import annotations

import time

import keras

HISTORY_COLUMNS = (
    "epoch",
    "loss",
    "val_loss",
    "mse",
    "val_mse",
    "learning_rate",
    "active_loss",
    "plateau_level",
    "epochs_since_improvement",
    "epoch_seconds",
)


class TrainingHistory(keras.callbacks.Callback):
    """Collects one row per epoch: losses, the yardstick, the rate and the plateau state.

    Keras' own History holds only the logs; this adds the state of the callbacks that shape
    training, read once per epoch (never per batch) so it costs nothing measurable.

    Example:

    ```python
    history = TrainingHistory(schedule, adaptive_loss, detector)
    model.fit(..., callbacks=[detector, history])
    history.rows[-1]["plateau_level"]
    ```

    Args:
        schedule: the optimizer's learning-rate schedule.
        loss: the AdaptiveLoss compiled into the model.
        detector: the PlateauDetector.
    """

    def __init__(self, schedule, loss, detector):
        super().__init__()
        self.schedule = schedule
        self.loss = loss
        self.detector = detector
        self.rows: list[dict] = []
        self._epoch_started = 0.0

    def on_train_begin(self, logs=None):
        if getattr(self, "_keep_rows", False):
            self._keep_rows = False
        else:
            self.rows = []

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        step = int(self.model.optimizer.iterations.numpy())
        self.rows.append(
            {
                "epoch": epoch + 1,
                "loss": float(logs.get("loss", float("nan"))),
                "val_loss": float(logs.get("val_loss", float("nan"))),
                "mse": float(logs.get("mse", float("nan"))),
                "val_mse": float(logs.get("val_mse", float("nan"))),
                "learning_rate": float(self.schedule.rate_at([max(step - 1, 0)])[0]),
                "active_loss": self.loss.active_name,
                "plateau_level": int(self.detector.level),
                "epochs_since_improvement": int(self.detector.epochs_since_improvement),
                "epoch_seconds": time.perf_counter() - self._epoch_started,
            }
        )

    def get_state(self) -> dict:
        return {"rows": self.rows}

    def set_state(self, state: dict) -> None:
        self.rows = list(state["rows"])
        self._keep_rows = True
