"""The Prometheus metrics of a training run: every definition and help text, one registry per run.

The names are a contract (ARCHITECTURE.md, "Prometheus metrics"): dashboards and the alert rules
in k8s/ select on them. Labels never carry a run id or an epoch; the only label is the active
loss's kind, one of four.

`TrainingMetrics` is a custom collector rather than a set of client_python metric objects:
the `PrometheusMetrics` callback replaces all values at once per epoch under one lock, so a
scrape or a push never mixes two epochs, and counters take the plateau callbacks' own counts
(restored with a checkpoint) instead of being incremented here.

Example:

```python
metrics = TrainingMetrics()
metrics.update(epoch=3, learning_rate=1e-3, train_loss=0.4, plateau_level=0)
metrics.set_active_loss("huber")
prometheus_client.generate_latest(metrics.registry)
```
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
    SummaryMetricFamily,
)

JOB = "plateau-lstm-train"
"""The Pushgateway job every training run pushes under; the alert rules select on it."""
GROUPING_LABEL = "model"
"""The Pushgateway grouping key's label: the model name, never the run id (groups live forever)."""


@dataclass(frozen=True)
class MetricDefinition:
    """One exported metric: its full name, Prometheus type, help text and label (if any)."""

    name: str
    kind: str
    help: str
    label: str | None = None


DEFINITIONS = (
    MetricDefinition(
        "plateau_lstm_learning_rate",
        "gauge",
        "Learning rate of the latest epoch's last optimizer step.",
    ),
    MetricDefinition(
        "plateau_lstm_train_loss",
        "gauge",
        "Training loss of the latest epoch, in the units of the active loss (see "
        "plateau_lstm_active_loss_info); not comparable across loss switches.",
    ),
    MetricDefinition(
        "plateau_lstm_val_loss",
        "gauge",
        "Validation loss of the latest epoch, in the units of the active loss.",
    ),
    MetricDefinition(
        "plateau_lstm_monitored_metric",
        "gauge",
        "The fixed yardstick the plateau detector judges (validation MSE) at the latest epoch.",
    ),
    MetricDefinition(
        "plateau_lstm_epoch",
        "gauge",
        "Epochs the run has completed (1-based, as Keras prints them).",
    ),
    MetricDefinition(
        "plateau_lstm_plateau_level",
        "gauge",
        "Plateau level of the detector: 0 none, 1 watch, 2 act, 3 severe.",
    ),
    MetricDefinition(
        "plateau_lstm_epochs_since_improvement",
        "gauge",
        "Epochs since the monitored metric last improved on its best by min_delta.",
    ),
    MetricDefinition(
        "plateau_lstm_lr_restarts_total",
        "counter",
        "Restarts of the cyclical learning rate at a boosted peak, in this run.",
    ),
    MetricDefinition(
        "plateau_lstm_loss_switches_total",
        "counter",
        "Switches of the training loss to its next kind, in this run.",
    ),
    MetricDefinition(
        "plateau_lstm_nan_recoveries_total",
        "counter",
        "Epochs with a NaN, infinite or exploding loss that were rolled back, in this run.",
    ),
    MetricDefinition(
        "plateau_lstm_active_loss_info",
        "info",
        "The training loss in use (huber, mse, mae or log_cosh); the value is always 1.",
        label="loss",
    ),
    MetricDefinition(
        "plateau_lstm_epoch_duration_seconds",
        "summary",
        "Wall time of the epochs of this process, validation included.",
    ),
    MetricDefinition(
        "plateau_lstm_checkpoint_upload_seconds",
        "summary",
        "Wall time of the checkpoint uploads of this process, retries included.",
    ),
    MetricDefinition(
        "plateau_lstm_last_success_timestamp_seconds",
        "gauge",
        "Unix time at which a training run last finished and published its model; set only "
        "on success.",
    ),
)
BY_NAME = {definition.name: definition for definition in DEFINITIONS}

# Keyword names accepted by `TrainingMetrics.update`: the gauge and counter names without the
# prefix (and without `_total`), e.g. update(lr_restarts=2).
_PREFIX = "plateau_lstm_"
_SETTABLE = {
    d.name.removeprefix(_PREFIX).removesuffix("_total"): d.name
    for d in DEFINITIONS
    if d.kind in ("gauge", "counter") and d.name != "plateau_lstm_last_success_timestamp_seconds"
}


class TrainingMetrics:
    """The values of one run's metrics and the `CollectorRegistry` that exposes them.

    A value is exposed once it is known: losses appear with the first epoch (a NaN before then
    would read as divergence), `last_success_timestamp_seconds` only after `mark_success`.
    Non-finite losses are exposed as they are (NaN, +Inf): that is what the divergence alert
    looks for. Counters and summaries are exposed from the start, at 0.

    Every run gets its own registry, never client_python's global one, so two runs in one
    process (or a test) never share values.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, float] = {}
        self._active_loss: str | None = None
        self._summaries = {
            d.name: (0, 0.0) for d in DEFINITIONS if d.kind == "summary"
        }  # name -> (count, sum)
        self.registry = CollectorRegistry()
        self.registry.register(self)

    def update(self, **values: float | None) -> None:
        """Sets gauges and counters by short name (`epoch=3`, `lr_restarts=2`); None skips one."""
        unknown = set(values) - _SETTABLE.keys()
        if unknown:
            raise ValueError(
                f"Unknown metric(s) {sorted(unknown)}. Known: {sorted(_SETTABLE)}. "
                f"Received: {values!r}"
            )
        with self._lock:
            for key, value in values.items():
                if value is not None:
                    self._values[_SETTABLE[key]] = float(value)

    def set_active_loss(self, name: str) -> None:
        """Sets the `loss` label of `plateau_lstm_active_loss_info` (one series at a time)."""
        with self._lock:
            self._active_loss = str(name)

    def observe_epoch_duration(self, seconds: float) -> None:
        """Adds one epoch's wall time to `plateau_lstm_epoch_duration_seconds`."""
        self._observe("plateau_lstm_epoch_duration_seconds", seconds)

    def observe_checkpoint_upload(self, seconds: float) -> None:
        """Adds one checkpoint upload's wall time to `plateau_lstm_checkpoint_upload_seconds`."""
        self._observe("plateau_lstm_checkpoint_upload_seconds", seconds)

    def mark_success(self, timestamp: float | None = None) -> None:
        """Sets `plateau_lstm_last_success_timestamp_seconds` (now by default). Call it only
        once the model is published: the nightly-retrain alert trusts it."""
        with self._lock:
            self._values["plateau_lstm_last_success_timestamp_seconds"] = float(
                time.time() if timestamp is None else timestamp
            )

    def value(self, name: str) -> float | None:
        """The current value of a gauge or counter by full name, or None while unknown."""
        with self._lock:
            return self._values.get(name)

    def _observe(self, name: str, seconds: float) -> None:
        seconds = float(seconds)
        if not math.isfinite(seconds) or seconds < 0:
            return  # a clock oddity must not poison the sum for the rest of the run
        with self._lock:
            count, total = self._summaries[name]
            self._summaries[name] = (count + 1, total + seconds)

    def describe(self) -> Iterator[Metric]:
        # The registry checks names for clashes with this; values do not matter.
        yield from _families({}, None, {name: (0, 0.0) for name in self._summaries})

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            values, active, summaries = dict(self._values), self._active_loss, dict(self._summaries)
        yield from _families(values, active, summaries)


def _families(values: dict, active_loss: str | None, summaries: dict) -> Iterator[Metric]:
    for d in DEFINITIONS:
        if d.kind == "gauge" and d.name in values:
            yield GaugeMetricFamily(d.name, d.help, value=values[d.name])
        elif d.kind == "counter":
            # created=None: no `_created` series next to each counter; nothing here reads it.
            yield CounterMetricFamily(d.name, d.help, value=values.get(d.name, 0.0))
        elif d.kind == "summary":
            count, total = summaries[d.name]
            yield SummaryMetricFamily(d.name, d.help, count_value=count, sum_value=total)
        elif d.kind == "info" and active_loss is not None:
            family = InfoMetricFamily(d.name.removesuffix("_info"), d.help, labels=[d.label])
            family.add_metric([active_loss], {})
            yield family
