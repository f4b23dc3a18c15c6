"""Restarts the cyclical learning rate at a boosted peak whenever a plateau calls for action."""

import logging
import math
import numbers
import warnings

import keras
import numpy as np

from plateau_lstm.callbacks.plateau_detector import PlateauDetector
from plateau_lstm.schedules import Triangular2Schedule

_logger = logging.getLogger("plateau_lstm")


def _current_step(model):
    return int(np.asarray(keras.ops.convert_to_numpy(model.optimizer.iterations)))


class CyclicalLearningRate(keras.callbacks.Callback):
    """Restarts a `Triangular2Schedule` at a boosted peak on every "act" plateau event.

    The optimizer computes its rate in-graph from the schedule at every batch; this
    callback never sets a rate from Python. On each `"act"` event of the detector it
    counts a restart and moves the schedule so the rate is at

    ```
    new_peak = max_lr * min(boost_factor ** restarts, boost_cap) * damping
    ```

    at the current optimizer step, from where the triangular2 decay starts over.
    `damping` is 1.0 unless `NanGuard` lowered the peak (it then multiplies by the
    same factor, so a restart does not bring back a rate that just diverged).

    `segments` lists `{"step", "origin", "peak"}` at train begin and after every
    change of the schedule: the rate at optimizer step `s` is
    `schedule.rate_at(s, origin, peak)` of the last segment whose `step <= s`
    (`learning_rate_at` does exactly that). Changes made by others are noted by
    `note_change()`, or at the next epoch begin at the latest. The epoch logs get
    `learning_rate`: the rate of the epoch's last batch.

    Each `fit` starts a fresh run (no restarts, a new cycle at the optimizer's
    current step, peak back at `max_lr`) unless `set_state` restored a checkpoint
    since the last `fit`; then it continues exactly from that state.

    Example:

    ```python
    schedule = Triangular2Schedule(step_size=4 * steps_per_epoch)
    detector = PlateauDetector()
    restarts = CyclicalLearningRate(schedule, detector)
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss="huber", metrics=["mse"])
    model.fit(x, y, validation_data=val, callbacks=[detector, restarts])
    ```

    Args:
        schedule: The `Triangular2Schedule` the optimizer was given as its
            `learning_rate`. Required.
        detector: The `PlateauDetector` whose `"act"` events trigger restarts, or
            `None` to only keep `segments`. Defaults to `None`.
        boost_factor: Growth of the peak per restart, above 1. Defaults to `1.5`.
        boost_cap: Largest boost, relative to the schedule's `max_lr`, at least 1.
            Defaults to `4.0`.
        event_log: An `EventLog` receiving an `"lr_restart"` event per restart, or
            `None`. Defaults to `None`.
    """

    def __init__(self, schedule, detector=None, boost_factor=1.5, boost_cap=4.0, event_log=None):
        super().__init__()
        if not isinstance(schedule, Triangular2Schedule):
            raise ValueError(
                f"`schedule` must be a Triangular2Schedule. Received: schedule={schedule!r}"
            )
        if detector is not None and not isinstance(detector, PlateauDetector):
            raise ValueError(
                f"`detector` must be a PlateauDetector or None. Received: detector={detector!r}"
            )
        if not _is_finite_number(boost_factor) or boost_factor <= 1:
            raise ValueError(
                f"`boost_factor` must be a number > 1. Received: boost_factor={boost_factor!r}"
            )
        if not _is_finite_number(boost_cap) or boost_cap < 1:
            raise ValueError(
                f"`boost_cap` must be a number >= 1. Received: boost_cap={boost_cap!r}"
            )
        self.schedule = schedule
        self.detector = detector
        self.boost_factor = float(boost_factor)
        self.boost_cap = float(boost_cap)
        self.event_log = event_log
        self._restored = False
        self._warned_optimizer = False
        self._uses_schedule = False
        self._reset()
        if detector is not None:
            detector.subscribe(self._on_plateau)

    def _reset(self):
        self.restarts = 0
        self.damping = 1.0
        self.segments = []

    def on_train_begin(self, logs=None):
        if self._restored:
            self._restored = False
        else:
            self._reset()
            # A fresh run starts a fresh cycle sequence at the optimizer's current step.
            self.schedule.set_state(
                {"origin": _current_step(self.model), "peak": self.schedule.max_lr}
            )
        self._check_optimizer()
        self._note_segment()

    def _check_optimizer(self):
        optimizer = self.model.optimizer
        optimizer = getattr(optimizer, "inner_optimizer", optimizer)
        self._uses_schedule = getattr(optimizer, "_learning_rate", None) is self.schedule
        if not self._uses_schedule and not self._warned_optimizer:
            self._warned_optimizer = True
            warnings.warn(
                "CyclicalLearningRate: the model's optimizer does not use this schedule as its "
                "learning_rate, so restarts will not change training. Pass the same "
                "Triangular2Schedule to the optimizer, e.g. Adam(learning_rate=schedule).",
                stacklevel=2,
            )

    def on_epoch_begin(self, epoch, logs=None):
        # No batch ran since the last epoch end, so the step of a change made then is exact.
        self._note_segment()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            last_step = _current_step(self.model) - 1
            if last_step >= 0 and self.segments and self._uses_schedule:
                logs["learning_rate"] = float(self.learning_rate_at(last_step))

    def on_train_end(self, logs=None):
        self._note_segment()

    def _note_segment(self):
        state = self.schedule.get_state()
        if self.segments:
            last = self.segments[-1]
            if (last["origin"], last["peak"]) == (state["origin"], state["peak"]):
                return
        step = _current_step(self.model)
        if self.segments and self.segments[-1]["step"] == step:
            self.segments[-1] = {"step": step, **state}
        else:
            self.segments.append({"step": step, **state})

    def note_change(self, peak_factor=1.0):
        """Records a change another callback just made to the schedule.

        Args:
            peak_factor: The factor the peak was multiplied by (`NanGuard` passes
                its 0.5); later restart peaks are scaled by it as well. Defaults
                to `1.0`.
        """
        if not _is_finite_number(peak_factor) or peak_factor <= 0:
            raise ValueError(
                f"`peak_factor` must be a positive number. Received: peak_factor={peak_factor!r}"
            )
        self.damping *= float(peak_factor)
        if self.model is not None:
            self._note_segment()

    def learning_rate_at(self, steps):
        """Reconstructs the rate the optimizer used at the given steps, from `segments`.

        Args:
            steps: An int or array-like of ints (optimizer iterations) at or after
                the first segment.

        Returns:
            A float32 numpy array shaped like `steps`.
        """
        if not self.segments:
            raise ValueError("No segments yet: learning_rate_at needs a fit to have begun.")
        steps = np.asarray(steps, dtype=np.int64)
        starts = np.array([segment["step"] for segment in self.segments], dtype=np.int64)
        owners = np.maximum(np.searchsorted(starts, steps, side="right") - 1, 0)
        rates = np.empty(steps.shape, dtype=np.float32)
        for owner in np.unique(owners):
            segment = self.segments[owner]
            mask = owners == owner
            rates[mask] = self.schedule.rate_at(steps[mask], segment["origin"], segment["peak"])
        return rates

    def _boost(self):
        # Compared in logs so a long run's boost_factor ** restarts never overflows.
        if self.restarts * math.log(self.boost_factor) >= math.log(self.boost_cap):
            return self.boost_cap
        return self.boost_factor**self.restarts

    def _on_plateau(self, event):
        if event.level_name != "act":
            return
        if self.model is None:
            warnings.warn(
                "CyclicalLearningRate got a plateau event but is not part of a fit; pass it "
                "to fit(callbacks=[...]) next to its detector.",
                stacklevel=2,
            )
            return
        self._note_segment()
        self.restarts += 1
        schedule = self.schedule
        old_peak = schedule.current_peak
        new_peak = max(schedule.base_lr, schedule.max_lr * self._boost() * self.damping)
        step = _current_step(self.model)
        schedule.restart_at_peak(step, new_peak)
        self._note_segment()
        message = (
            f"LR restart #{self.restarts} at epoch {event.epoch}: peak {old_peak:.1e} -> "
            f"{new_peak:.1e}, {self.detector.monitor} flat for {event.stalled_epochs} epochs"
        )
        if self.event_log is not None:
            self.event_log.record(
                "lr_restart",
                event.epoch,
                message,
                restart=self.restarts,
                step=step,
                origin=schedule.current_origin,
                old_peak=old_peak,
                new_peak=new_peak,
            )
        else:
            _logger.info("%s", message)

    def get_state(self):
        """Returns restarts, damping, the schedule's state and the segments, JSON-able."""
        return {
            "restarts": self.restarts,
            "damping": self.damping,
            "schedule": self.schedule.get_state(),
            "segments": [dict(segment) for segment in self.segments],
        }

    def set_state(self, state):
        """Restores `get_state()` output (schedule included); the next `fit` continues it.

        Args:
            state: A dict returned by `get_state`, possibly through JSON.
        """
        keys = {"restarts", "damping", "schedule", "segments"}
        if not isinstance(state, dict) or not keys <= state.keys():
            raise ValueError(
                f"`state` must be a dict with keys {sorted(keys)}. Received: state={state!r}"
            )
        self.schedule.set_state(state["schedule"])
        self.restarts = int(state["restarts"])
        self.damping = float(state["damping"])
        self.segments = [
            {"step": int(s["step"]), "origin": int(s["origin"]), "peak": float(s["peak"])}
            for s in state["segments"]
        ]
        self._restored = True


def _is_finite_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
