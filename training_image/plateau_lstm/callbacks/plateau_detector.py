"""Detects training plateaus on a fixed yardstick and tells subscribers how severe they are."""

import dataclasses
import logging
import math
import numbers
import warnings
from collections import deque

import keras

_logger = logging.getLogger("plateau_lstm")

LEVEL_NAMES = ("none", "watch", "act", "severe")


@dataclasses.dataclass(frozen=True)
class PlateauEvent:
    """A plateau reaching a level, as delivered to `PlateauDetector` subscribers.

    Attributes:
        level: 1 watch, 2 act, 3 severe.
        level_name: `"watch"`, `"act"` or `"severe"`.
        epoch: The epoch that raised it, 1-based as Keras prints it.
        stalled_epochs: Epochs without improvement that were not a steady fall.
        monitor_value: The monitored value at that epoch.
        best: The best monitored value so far.
    """

    level: int
    level_name: str
    epoch: int
    stalled_epochs: int
    monitor_value: float
    best: float


def _least_squares_slope(values):
    """Slope per epoch of the straight line that best fits equally spaced `values`."""
    count = len(values)
    mean_x = (count - 1) / 2
    mean_y = sum(values) / count
    numerator = sum((x - mean_x) * (y - mean_y) for x, y in enumerate(values))
    denominator = sum((x - mean_x) ** 2 for x in range(count))
    return numerator / denominator


def _as_finite_float(value):
    """Returns `value` as a float, or None when it is missing, not a number or not finite."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


class PlateauDetector(keras.callbacks.Callback):
    """Watches a fixed metric for plateaus and raises watch, act and severe events.

    At each epoch end the monitored value (validation MSE by default: a yardstick
    that does not change when the training loss does) either improves on the best
    by more than `min_delta`, which clears everything, or counts one more epoch
    since improvement. That epoch also counts as *stalled* unless the recent values
    still fall steadily (least-squares slope over the last `trend_window` values
    below `-min_delta` per epoch): a slow recovery after a spike is not a plateau.

    The stalled count sets the level: 0 none, 1 watch (`patience[0]`), 2 act
    (`patience[1]`), 3 severe (`patience[2]`). Subscribers (`subscribe(fn)`)
    receive a `PlateauEvent` when the watch level is entered, an `"act"` event
    every time the stalled count reaches a multiple of `patience[1]` (so a plateau
    that outlives an adaptation triggers another one), and a `"severe"` event when
    level 3 is entered (after the `"act"` event of the same epoch, if any).

    Epochs whose monitored value or training loss is NaN or infinite are ignored,
    so an epoch undone by `NanGuard` never counts. Event epochs are 1-based, as
    Keras prints them.

    Example:

    ```python
    detector = PlateauDetector(monitor="val_mse", patience=(3, 5, 10))
    detector.subscribe(lambda event: print(event.level_name, event.epoch))
    model.compile(optimizer="adam", loss="huber", metrics=["mse"])
    model.fit(x, y, validation_data=(x_val, y_val), callbacks=[detector])
    ```

    Args:
        monitor: Name of the epoch log value to watch; lower is better. Defaults
            to `"val_mse"`.
        min_delta: Smallest decrease that counts as an improvement, and the
            steepest fall per epoch that still counts as flat. Defaults to `2e-4`.
        patience: Stalled epochs for the watch, act and severe levels: three
            strictly increasing positive ints. Defaults to `(3, 5, 10)`.
        trend_window: Number of recent values the trend is fitted on (at least
            2). Defaults to `4`.
        event_log: An `EventLog` that receives a `"plateau"` event for every act
            and severe event, or `None`. Defaults to `None`.
    """

    def __init__(
        self,
        monitor="val_mse",
        min_delta=2e-4,
        patience=(3, 5, 10),
        trend_window=4,
        event_log=None,
    ):
        super().__init__()
        if not isinstance(monitor, str) or not monitor:
            raise ValueError(f"`monitor` must be a metric name. Received: monitor={monitor!r}")
        if (
            isinstance(min_delta, bool)
            or not isinstance(min_delta, numbers.Real)
            or not math.isfinite(min_delta)
            or min_delta < 0
        ):
            raise ValueError(
                f"`min_delta` must be a finite number >= 0. Received: min_delta={min_delta!r}"
            )
        if (
            isinstance(patience, (str, bytes))
            or not hasattr(patience, "__len__")
            or len(patience) != 3
            or not all(
                isinstance(p, numbers.Integral) and not isinstance(p, bool) and p > 0
                for p in patience
            )
            or not patience[0] < patience[1] < patience[2]
        ):
            raise ValueError(
                "`patience` must be three strictly increasing positive ints "
                f"(watch, act, severe). Received: patience={patience!r}"
            )
        if (
            isinstance(trend_window, bool)
            or not isinstance(trend_window, numbers.Integral)
            or (trend_window < 2)
        ):
            raise ValueError(
                f"`trend_window` must be an int >= 2. Received: trend_window={trend_window!r}"
            )
        self.monitor = monitor
        self.min_delta = float(min_delta)
        self.patience = tuple(int(p) for p in patience)
        self.trend_window = int(trend_window)
        self.event_log = event_log
        self._subscribers = []
        self._restored = False
        self._reset()

    def _reset(self):
        self.best = math.inf
        self.epochs_since_improvement = 0
        self.stalled_epochs = 0
        self.level = 0
        self.plateaus_detected = 0
        self.severe_plateaus = 0
        self._recent = deque(maxlen=self.trend_window)
        self._warned_missing = False

    @property
    def level_name(self):
        """The name of the current level: `"none"`, `"watch"`, `"act"` or `"severe"`."""
        return LEVEL_NAMES[self.level]

    def subscribe(self, fn):
        """Registers `fn(event)` to receive every `PlateauEvent`, in subscription order.

        Args:
            fn: A callable taking one `PlateauEvent`.

        Returns:
            `fn`, so this can be used as a decorator.
        """
        if not callable(fn):
            raise ValueError(f"`fn` must be callable. Received: fn={fn!r}")
        self._subscribers.append(fn)
        return fn

    def on_train_begin(self, logs=None):
        if self._restored:
            # A checkpoint was restored for this fit: continue from it.
            self._restored = False
            return
        self._reset()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.monitor not in logs:
            if not self._warned_missing:
                self._warned_missing = True
                warnings.warn(
                    f"PlateauDetector watches `{self.monitor}`, which is not in the epoch logs "
                    f"(available: {sorted(logs)}); it stays idle until it appears. Compile with "
                    "metrics=['mse'] and pass validation data, or set `monitor`.",
                    stacklevel=2,
                )
            return
        value = _as_finite_float(logs[self.monitor])
        if value is None or ("loss" in logs and _as_finite_float(logs["loss"]) is None):
            return
        self._observe(value, epoch + 1)

    def _observe(self, value, epoch):
        self._recent.append(value)
        if value < self.best - self.min_delta:
            self.best = value
            self.epochs_since_improvement = 0
            self.stalled_epochs = 0
            self.level = 0
            return
        self.epochs_since_improvement += 1
        if self._trending_down():
            return
        self.stalled_epochs += 1
        stalled = self.stalled_epochs
        watch, act, severe = self.patience
        self.level = sum(stalled >= threshold for threshold in self.patience)
        levels = []
        if stalled == watch:
            levels.append(1)
        if stalled % act == 0:
            levels.append(2)
            self.plateaus_detected += 1
        if stalled == severe:
            levels.append(3)
            self.severe_plateaus += 1
        for level in levels:
            self._emit(level, epoch, value)

    def _trending_down(self):
        if len(self._recent) < self.trend_window:
            return False
        return _least_squares_slope(list(self._recent)) < -self.min_delta

    def _emit(self, level, epoch, value):
        event = PlateauEvent(
            level=level,
            level_name=LEVEL_NAMES[level],
            epoch=epoch,
            stalled_epochs=self.stalled_epochs,
            monitor_value=value,
            best=self.best,
        )
        message = (
            f"Plateau {event.level_name} at epoch {epoch}: {self.monitor} flat for "
            f"{event.stalled_epochs} epochs (best {event.best:.4g}, now {value:.4g})"
        )
        if level >= 2 and self.event_log is not None:
            self.event_log.record(
                "plateau",
                epoch,
                message,
                level=level,
                level_name=event.level_name,
                stalled_epochs=event.stalled_epochs,
                monitor=self.monitor,
                monitor_value=value,
                best=event.best,
            )
        else:
            _logger.info("%s", message)
        for fn in self._subscribers:
            fn(event)

    def get_state(self):
        """Returns the detector's counters and recent values as a JSON-able dict."""
        return {
            "best": self.best if math.isfinite(self.best) else None,
            "epochs_since_improvement": self.epochs_since_improvement,
            "stalled_epochs": self.stalled_epochs,
            "level": self.level,
            "plateaus_detected": self.plateaus_detected,
            "severe_plateaus": self.severe_plateaus,
            "recent": list(self._recent),
        }

    def set_state(self, state):
        """Restores `get_state()` output; the next `fit` continues from it.

        Args:
            state: A dict returned by `get_state`, possibly through JSON.
        """
        keys = {
            "best",
            "epochs_since_improvement",
            "stalled_epochs",
            "level",
            "plateaus_detected",
            "severe_plateaus",
            "recent",
        }
        if not isinstance(state, dict) or not keys <= state.keys():
            raise ValueError(
                f"`state` must be a dict with keys {sorted(keys)}. Received: state={state!r}"
            )
        self.best = math.inf if state["best"] is None else float(state["best"])
        self.epochs_since_improvement = int(state["epochs_since_improvement"])
        self.stalled_epochs = int(state["stalled_epochs"])
        self.level = int(state["level"])
        self.plateaus_detected = int(state["plateaus_detected"])
        self.severe_plateaus = int(state["severe_plateaus"])
        self._recent = deque((float(v) for v in state["recent"]), maxlen=self.trend_window)
        self._restored = True
