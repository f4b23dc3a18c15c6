"""The triangular2 cyclical learning rate, restartable at a new peak without retracing."""

import math
import numbers

import keras
import numpy as np
from keras import ops


def _triangular2(step, origin, base_lr, peak, step_size):
    """The one formula of the rate (Smith 2017, triangular2), in `keras.ops`.

    Steps before `origin` are treated as `origin`, so the rate never leaves
    `[base_lr, peak]`.
    """
    offset = ops.maximum(ops.cast(step, "int64") - ops.cast(origin, "int64"), 0)
    # The subtraction stays in int64 so float32 only ever sees the (small) offset.
    half_cycles = ops.cast(offset, "float32") / float(step_size)
    cycle = ops.floor(1.0 + half_cycles / 2.0)
    x = ops.abs(half_cycles - 2.0 * cycle + 1.0)
    decay = ops.power(2.0, cycle - 1.0)
    peak = ops.cast(peak, "float32")
    return base_lr + (peak - base_lr) * ops.maximum(0.0, 1.0 - x) / decay


def _is_positive_number(value):
    return (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


def _as_int(value):
    """Reads a Python int from an int, a numpy value, a tensor or a Keras variable."""
    return int(np.asarray(ops.convert_to_numpy(value)).reshape(()))


@keras.saving.register_keras_serializable(package="plateau_lstm")
class Triangular2Schedule(keras.optimizers.schedules.LearningRateSchedule):
    """Triangular2 cyclical learning rate whose phase and peak can be moved mid-training.

    The rate climbs linearly from `base_lr` to the peak over `step_size` batches,
    falls back over the next `step_size`, and the amplitude halves every cycle
    (Smith 2017, "Cyclical Learning Rates for Training Neural Networks"):

    ```
    cycle = floor(1 + (step - origin) / (2 * step_size))
    x = |(step - origin) / step_size - 2 * cycle + 1|
    lr = base_lr + (peak - base_lr) * max(0, 1 - x) / 2 ** (cycle - 1)
    ```

    `origin` and `peak` live in non-trainable Keras variables, so a callback can
    restart the cycle (`restart_at_peak`) or lower the peak (`scale_peak`) while
    the compiled train step keeps running: it reads the variables, it is never
    retraced.

    Example:

    ```python
    schedule = Triangular2Schedule(step_size=4 * steps_per_epoch)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=schedule), ...)
    schedule.restart_at_peak(model.optimizer.iterations, 3e-3)
    ```

    Args:
        step_size: Number of batches in half a cycle (a positive integer);
            2 to 8 epochs' worth of batches is usual. Required.
        base_lr: Lowest rate, reached at the start and end of every cycle.
            Defaults to `5e-5`.
        max_lr: Peak rate of the first cycle; the reference that restart boosts
            are relative to. Defaults to `2e-3`.
        origin: Step at which the current cycle sequence started. Defaults to `0`.
        peak: Current peak rate, at least `base_lr`; `None` means `max_lr`.
            Defaults to `None`.
        name: Name of the schedule. Defaults to `"triangular2"`.
    """

    def __init__(
        self,
        step_size,
        base_lr=5e-5,
        max_lr=2e-3,
        origin=0,
        peak=None,
        name="triangular2",
    ):
        super().__init__()
        is_whole = isinstance(step_size, numbers.Integral) or (
            isinstance(step_size, float) and step_size.is_integer()
        )
        if isinstance(step_size, bool) or not is_whole or step_size <= 0:
            raise ValueError(
                "`step_size` must be a positive whole number of batches. "
                f"Received: step_size={step_size!r}"
            )
        if not _is_positive_number(base_lr):
            raise ValueError(f"`base_lr` must be a positive number. Received: base_lr={base_lr!r}")
        if not _is_positive_number(max_lr) or max_lr < base_lr:
            raise ValueError(
                f"`max_lr` must be a number >= base_lr ({base_lr}). Received: max_lr={max_lr!r}"
            )
        peak = max_lr if peak is None else peak
        if not _is_positive_number(peak) or peak < base_lr:
            raise ValueError(
                f"`peak` must be a number >= base_lr ({base_lr}). Received: peak={peak!r}"
            )
        self.step_size = int(step_size)
        self.base_lr = float(base_lr)
        self.max_lr = float(max_lr)
        self.name = name
        self.origin = keras.Variable(
            _as_int(origin), dtype="int64", trainable=False, name=f"{name}_origin"
        )
        # autocast=False: under mixed precision the rate must not be rounded to float16.
        self.peak = keras.Variable(
            float(peak), dtype="float32", trainable=False, autocast=False, name=f"{name}_peak"
        )

    def __call__(self, step):
        return _triangular2(step, self.origin, self.base_lr, self.peak, self.step_size)

    def rate_at(self, steps, origin=None, peak=None):
        """Computes the rate at integer optimizer steps, with the same formula as training.

        Args:
            steps: An int or array-like of ints (optimizer iterations).
            origin: Origin to use instead of the current one, for example one
                taken from `CyclicalLearningRate.segments`. Defaults to `None`
                (the current origin).
            peak: Peak to use instead of the current one. Defaults to `None`
                (the current peak).

        Returns:
            A float32 numpy array shaped like `steps`.
        """
        steps = np.asarray(steps, dtype=np.int64)
        origin = self.origin if origin is None else np.int64(origin)
        peak = self.peak if peak is None else np.float32(peak)
        rates = _triangular2(steps, origin, self.base_lr, peak, self.step_size)
        return np.asarray(ops.convert_to_numpy(rates), dtype=np.float32)

    def restart_at_peak(self, step, new_peak):
        """Restarts the cycles so the rate is exactly `new_peak` at `step`.

        The origin moves to `step - step_size` (the top of the first cycle), so the
        halving count starts again from one.

        Args:
            step: The optimizer step to restart at (an int or the optimizer's
                `iterations` variable).
            new_peak: The new peak rate, at least `base_lr`.
        """
        if not _is_positive_number(new_peak) or new_peak < self.base_lr:
            raise ValueError(
                f"`new_peak` must be a number >= base_lr ({self.base_lr}). "
                f"Received: new_peak={new_peak!r}"
            )
        self.origin.assign(_as_int(step) - self.step_size)
        self.peak.assign(float(new_peak))

    def scale_peak(self, factor):
        """Multiplies the current peak by `factor`, never going below `base_lr`.

        Args:
            factor: A positive number, such as `0.5` to halve the peak.

        Returns:
            The new peak, as a float.
        """
        if not _is_positive_number(factor):
            raise ValueError(f"`factor` must be a positive number. Received: factor={factor!r}")
        new_peak = max(self.base_lr, self.current_peak * float(factor))
        self.peak.assign(new_peak)
        return self.current_peak

    @property
    def current_origin(self):
        """The current origin, as a Python int."""
        return _as_int(self.origin)

    @property
    def current_peak(self):
        """The current peak, as a Python float."""
        return float(ops.convert_to_numpy(self.peak))

    def get_state(self):
        """Returns the mutable state (origin and peak) as a JSON-able dict."""
        return {"origin": self.current_origin, "peak": self.current_peak}

    def set_state(self, state):
        """Restores the state returned by `get_state`.

        Args:
            state: A dict with `"origin"` and `"peak"`.
        """
        if not isinstance(state, dict) or not {"origin", "peak"} <= state.keys():
            raise ValueError(
                f"`state` must be a dict with 'origin' and 'peak'. Received: state={state!r}"
            )
        peak = state["peak"]
        if not _is_positive_number(peak) or peak < self.base_lr:
            raise ValueError(
                f"The state's peak must be a number >= base_lr ({self.base_lr}). "
                f"Received: state={state!r}"
            )
        self.origin.assign(int(state["origin"]))
        self.peak.assign(float(peak))

    def get_config(self):
        return {
            "step_size": self.step_size,
            "base_lr": self.base_lr,
            "max_lr": self.max_lr,
            "origin": self.current_origin,
            "peak": self.current_peak,
            "name": self.name,
        }
