"""Exports the state of training and of the plateau machinery as Prometheus metrics."""

import time

import keras

from plateau_lstm.callbacks.adaptive_loss_switcher import AdaptiveLossSwitcher
from plateau_lstm.callbacks.cyclical_learning_rate import CyclicalLearningRate
from plateau_lstm.callbacks.nan_guard import NanGuard
from plateau_lstm.callbacks.plateau_detector import PlateauDetector


class PrometheusMetrics(keras.callbacks.Callback):
    """Updates a run's Prometheus metrics once per epoch and asks for a Pushgateway push.

    At every epoch end it reads the epoch's logs (losses, the monitored yardstick, the rate
    `CyclicalLearningRate` put there) and the state of the other callbacks (plateau level,
    epochs since improvement, restart, switch and recovery counts, active loss), replaces the
    metrics' values in one go and asks the exporter for a push, which runs in the exporter's
    own thread. Nothing here waits on the network and nothing runs per batch, so the epoch
    time does not change measurably (bench/metrics_overhead.py).

    Put it after the callbacks it reads, so it sees the state they reached in the same epoch.
    The train end pushes once more. The last-success timestamp is not set here: a fit that
    ends is not yet a published model (see `MetricsExporter.mark_success`).

    Example:

    ```python
    with MetricsExporter(MetricsConfig(pushgateway="http://pushgateway:9091")) as exporter:
        model.fit(..., callbacks=[guard, detector, restarts, switcher, PrometheusMetrics(
            exporter, detector=detector, lr_callback=restarts, loss_switcher=switcher,
            nan_guard=guard)])
        model.save(path)
        exporter.mark_success()
    ```

    Args:
        exporter: The `MetricsExporter` (or anything with `metrics` and `push()`) to update.
            Required.
        detector: The `PlateauDetector`, for the level, epochs since improvement and the
            monitored metric's name, or None (then `val_mse` is the monitored metric).
            Defaults to `None`.
        lr_callback: The `CyclicalLearningRate`, for the restart count, or None. Defaults to
            `None`.
        loss_switcher: The `AdaptiveLossSwitcher`, for the switch count and the active loss,
            or None. Defaults to `None`.
        nan_guard: The `NanGuard`, for the recovery count, or None. Defaults to `None`.
    """

    def __init__(
        self, exporter, detector=None, lr_callback=None, loss_switcher=None, nan_guard=None
    ):
        super().__init__()
        if not hasattr(exporter, "metrics") or not callable(getattr(exporter, "push", None)):
            raise ValueError(
                "`exporter` must be a MetricsExporter (with .metrics and .push()). "
                f"Received: exporter={exporter!r}"
            )
        for name, value, kind in (
            ("detector", detector, PlateauDetector),
            ("lr_callback", lr_callback, CyclicalLearningRate),
            ("loss_switcher", loss_switcher, AdaptiveLossSwitcher),
            ("nan_guard", nan_guard, NanGuard),
        ):
            if value is not None and not isinstance(value, kind):
                raise ValueError(
                    f"`{name}` must be a {kind.__name__} or None. Received: {name}={value!r}"
                )
        self.exporter = exporter
        self.detector = detector
        self.lr_callback = lr_callback
        self.loss_switcher = loss_switcher
        self.nan_guard = nan_guard
        self._epoch_started = None

    @property
    def monitor(self):
        return self.detector.monitor if self.detector is not None else "val_mse"

    def on_train_begin(self, logs=None):
        # The restored (or reset) state of the other callbacks is known now; the counters start
        # from it, so a resumed run's counters continue instead of dropping to 0.
        self.exporter.metrics.update(**self._counts())
        if self.loss_switcher is not None:
            self.exporter.metrics.set_active_loss(self.loss_switcher.loss.active_name)
        self._epoch_started = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        metrics = self.exporter.metrics
        if self._epoch_started is not None:
            metrics.observe_epoch_duration(time.perf_counter() - self._epoch_started)
            self._epoch_started = None
        values = {
            "epoch": epoch + 1,
            "learning_rate": self._learning_rate(logs),
            "train_loss": _number(logs.get("loss")),
            "val_loss": _number(logs.get("val_loss")),
            "monitored_metric": _number(logs.get(self.monitor)),
            **self._counts(),
        }
        if self.detector is not None:
            values["plateau_level"] = self.detector.level
            values["epochs_since_improvement"] = self.detector.epochs_since_improvement
        metrics.update(**values)
        if self.loss_switcher is not None:
            metrics.set_active_loss(self.loss_switcher.loss.active_name)
        self.exporter.push()

    def on_train_end(self, logs=None):
        self.exporter.push()

    def _learning_rate(self, logs):
        # CyclicalLearningRate puts the exact rate of the epoch's last step in the logs; any
        # other optimizer is asked once (one small read per epoch, never per batch).
        rate = _number(logs.get("learning_rate"))
        if rate is not None or self.model is None:
            return rate
        try:
            return float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        except (AttributeError, TypeError, ValueError):
            return None

    def _counts(self):
        counts = {}
        if self.lr_callback is not None:
            counts["lr_restarts"] = self.lr_callback.restarts
        if self.loss_switcher is not None:
            counts["loss_switches"] = self.loss_switcher.switches
        if self.nan_guard is not None:
            counts["nan_recoveries"] = self.nan_guard.recoveries
        return counts


def _number(value):
    """A log value as a float, NaN and infinities kept (they mean divergence); else None."""
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
