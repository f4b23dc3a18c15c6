"""Recovers from NaN or exploding losses by restoring the last good state at a lower peak rate."""

import logging
import math
import numbers

import keras
import numpy as np

from plateau_lstm.callbacks.cyclical_learning_rate import CyclicalLearningRate
from plateau_lstm.schedules import Triangular2Schedule

_logger = logging.getLogger("plateau_lstm")


def _as_float(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class NanGuard(keras.callbacks.Callback):
    """Undoes an epoch whose loss went NaN or exploded, halves the peak rate and carries on.

    At every epoch end whose `loss` and `val_loss` are finite (and `loss` is not
    above `explode_factor` times the best training loss so far) it keeps a numpy
    copy of the model weights and of the optimizer variables. When an epoch ends
    with a non-finite or exploding loss it restores that copy, except the
    optimizer's step counter (so the schedule and its segments move on), halves
    the schedule's peak and counts a recovery. The bad epoch is not seen by
    `PlateauDetector`, which ignores non-finite values.

    A bad epoch after `max_recoveries` recoveries restores the last good state one
    more time, stops training and explains why in `abort_message`.

    Example:

    ```python
    guard = NanGuard(schedule, max_recoveries=3, lr_callback=restarts)
    model.fit(x, y, validation_data=val, callbacks=[detector, restarts, guard])
    if guard.abort_message:
        raise SystemExit(guard.abort_message)
    ```

    Args:
        schedule: The `Triangular2Schedule` the optimizer uses. Required.
        max_recoveries: Recoveries allowed before the run is stopped, at least
            1. Defaults to `3`.
        explode_factor: A finite training loss above this many times the best
            one counts as exploding; above 1. Defaults to `1e3`.
        event_log: An `EventLog` receiving `"nan_recovery"` and `"nan_abort"`
            events, or `None`. Defaults to `None`.
        lr_callback: The `CyclicalLearningRate` driving the same schedule, told
            about each peak change so its segments stay exact and later restarts
            stay lowered, or `None`. Defaults to `None`.
    """

    def __init__(
        self,
        schedule,
        max_recoveries=3,
        explode_factor=1e3,
        event_log=None,
        lr_callback=None,
    ):
        super().__init__()
        if not isinstance(schedule, Triangular2Schedule):
            raise ValueError(
                f"`schedule` must be a Triangular2Schedule. Received: schedule={schedule!r}"
            )
        if (
            isinstance(max_recoveries, bool)
            or not isinstance(max_recoveries, numbers.Integral)
            or max_recoveries < 1
        ):
            raise ValueError(
                f"`max_recoveries` must be an int >= 1. Received: max_recoveries={max_recoveries!r}"
            )
        if (
            isinstance(explode_factor, bool)
            or not isinstance(explode_factor, numbers.Real)
            or not math.isfinite(explode_factor)
            or explode_factor <= 1
        ):
            raise ValueError(
                "`explode_factor` must be a finite number > 1. "
                f"Received: explode_factor={explode_factor!r}"
            )
        if lr_callback is not None and not isinstance(lr_callback, CyclicalLearningRate):
            raise ValueError(
                "`lr_callback` must be a CyclicalLearningRate or None. "
                f"Received: lr_callback={lr_callback!r}"
            )
        self.schedule = schedule
        self.max_recoveries = int(max_recoveries)
        self.explode_factor = float(explode_factor)
        self.event_log = event_log
        self.lr_callback = lr_callback
        self._restored = False
        self._weights_snapshot = None
        self._optimizer_snapshot = None
        self._reset()

    def _reset(self):
        self.recoveries = 0
        self.best_loss = math.inf
        self.last_good_epoch = 0
        self.abort_message = None

    def on_train_begin(self, logs=None):
        if self._restored:
            self._restored = False
        else:
            self._reset()
        # The weights a fit starts from (fresh, or restored from a checkpoint) are the
        # first good state, so even a NaN in the first epoch is recoverable.
        self._take_snapshot()

    # Detection is per epoch on purpose; there is no on_train_batch_end. Overriding a
    # batch hook makes Keras wait for every batch's logs on the host (no async
    # dispatch), which costs GPU throughput on every step of every run, while the
    # recovery restores the end of the last good epoch anyway: a per-batch check
    # would only save the rest of one bad epoch.

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        problem = self._problem(logs)
        if problem is None:
            loss = _as_float(logs.get("loss"))
            if loss is not None:
                self.best_loss = min(self.best_loss, loss)
            self._take_snapshot()
            self.last_good_epoch = epoch + 1
            return
        self._recover(epoch + 1, problem)

    def _problem(self, logs):
        """Describes what is wrong with the epoch's losses, or returns None when nothing is."""
        for key in ("loss", "val_loss"):
            if key in logs:
                value = _as_float(logs[key])
                if value is None or not math.isfinite(value):
                    return f"{key} was {logs[key]}"
        loss = _as_float(logs.get("loss"))
        if (
            loss is not None
            and math.isfinite(self.best_loss)
            and self.best_loss > 0
            and loss > self.explode_factor * self.best_loss
        ):
            return (
                f"loss exploded to {loss:.3g}, over {self.explode_factor:g} times "
                f"the best {self.best_loss:.3g}"
            )
        return None

    def _take_snapshot(self):
        self._weights_snapshot = [
            (variable, np.array(keras.ops.convert_to_numpy(variable)))
            for variable in self.model.weights
        ]
        optimizer = self.model.optimizer
        iterations = optimizer.iterations
        self._optimizer_snapshot = [
            (variable, np.array(keras.ops.convert_to_numpy(variable)))
            for variable in optimizer.variables
            if variable is not iterations and variable.path != iterations.path
        ]

    def _restore_snapshot(self):
        for variable, value in self._weights_snapshot + self._optimizer_snapshot:
            variable.assign(value)

    def _good_state_name(self):
        if self.last_good_epoch == 0:
            return "the weights the fit started from"
        return f"the weights of epoch {self.last_good_epoch}"

    def _recover(self, epoch, problem):
        self._restore_snapshot()
        if self.recoveries >= self.max_recoveries:
            self.model.stop_training = True
            self.abort_message = (
                f"Training stopped at epoch {epoch}: {problem}, after {self.recoveries} "
                f"recoveries that each restored the last good weights and halved the peak "
                f"learning rate (now {self.schedule.current_peak:.1e}); the model keeps "
                f"{self._good_state_name()}. Lower --max-lr (the peak was "
                f"{self.schedule.max_lr:.1e}) or check the prepared data for NaN, infinite or "
                "extreme values."
            )
            self._record(
                "nan_abort",
                epoch,
                self.abort_message,
                problem=problem,
                recoveries=self.recoveries,
                last_good_epoch=self.last_good_epoch,
            )
            return
        self.recoveries += 1
        old_peak = self.schedule.current_peak
        new_peak = self.schedule.scale_peak(0.5)
        if self.lr_callback is not None:
            self.lr_callback.note_change(new_peak / old_peak)
        message = (
            f"NaN recovery #{self.recoveries} at epoch {epoch}: {problem}; restored "
            f"{self._good_state_name()}, peak {old_peak:.1e} -> {new_peak:.1e}"
        )
        self._record(
            "nan_recovery",
            epoch,
            message,
            problem=problem,
            recovery=self.recoveries,
            last_good_epoch=self.last_good_epoch,
            old_peak=old_peak,
            new_peak=new_peak,
        )

    def _record(self, kind, epoch, message, **fields):
        if self.event_log is not None:
            self.event_log.record(kind, epoch, message, **fields)
        else:
            _logger.warning("%s", message)

    def get_state(self):
        """Returns recoveries, the best training loss and the last good epoch, JSON-able.

        The weight snapshot is not part of it: a resumed fit snapshots the weights
        it starts from.
        """
        return {
            "recoveries": self.recoveries,
            "best_loss": self.best_loss if math.isfinite(self.best_loss) else None,
            "last_good_epoch": self.last_good_epoch,
        }

    def set_state(self, state):
        """Restores `get_state()` output; the next `fit` continues from it.

        Args:
            state: A dict returned by `get_state`, possibly through JSON.
        """
        keys = {"recoveries", "best_loss", "last_good_epoch"}
        if not isinstance(state, dict) or not keys <= state.keys():
            raise ValueError(
                f"`state` must be a dict with keys {sorted(keys)}. Received: state={state!r}"
            )
        self.recoveries = int(state["recoveries"])
        self.best_loss = math.inf if state["best_loss"] is None else float(state["best_loss"])
        self.last_good_epoch = int(state["last_good_epoch"])
        self.abort_message = None
        self._restored = True
