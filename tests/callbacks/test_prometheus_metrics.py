import math

import keras
import numpy as np
import pytest
from monitoring_services import Pushgateway

from plateau_lstm.callbacks import (
    AdaptiveLoss,
    AdaptiveLossSwitcher,
    CyclicalLearningRate,
    NanGuard,
    PlateauDetector,
    Triangular2Schedule,
)
from plateau_lstm.callbacks.prometheus_metrics import PrometheusMetrics
from plateau_lstm.config import MetricsConfig
from plateau_lstm.metrics import JOB
from plateau_lstm.metrics_export import MetricsExporter

FLAT = {"loss": 1.0, "val_loss": 0.9, "val_mse": 0.8, "learning_rate": 1e-3}


@pytest.fixture(scope="module")
def pushgateway(tmp_path_factory):
    gateway = Pushgateway(tmp_path_factory.mktemp("pushgateway"))
    gateway.start()
    yield gateway
    gateway.kill()


def setup(exporter=None, patience=(1, 2, 3)):
    schedule = Triangular2Schedule(step_size=8)
    loss = AdaptiveLoss()
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss=loss, metrics=["mse"])
    model.optimizer.build(model.trainable_variables)
    detector = PlateauDetector(patience=patience)
    restarts = CyclicalLearningRate(schedule, detector)
    switcher = AdaptiveLossSwitcher(loss, detector)
    guard = NanGuard(schedule, lr_callback=restarts)
    exporter = exporter or MetricsExporter()
    metrics = PrometheusMetrics(
        exporter, detector=detector, lr_callback=restarts, loss_switcher=switcher, nan_guard=guard
    )
    callbacks = [guard, detector, restarts, switcher, metrics]
    for callback in callbacks:
        callback.set_model(model)
    return callbacks, exporter


def run_epochs(callbacks, logs_per_epoch, start=0):
    for epoch, logs in enumerate(logs_per_epoch, start=start):
        for callback in callbacks:
            callback.on_epoch_begin(epoch)
        for callback in callbacks:
            callback.on_epoch_end(epoch, dict(logs))


def begin(callbacks):
    for callback in callbacks:
        callback.on_train_begin()


def test_each_epoch_end_exports_the_logs_and_the_plateau_state():
    callbacks, exporter = setup()
    begin(callbacks)
    value = exporter.metrics.value
    assert value("plateau_lstm_epoch") is None  # nothing known before the first epoch
    run_epochs(callbacks, [FLAT] * 3)  # best at 1, stalled 2 -> act at epoch 3

    assert value("plateau_lstm_epoch") == 3
    assert value("plateau_lstm_train_loss") == 1.0
    assert value("plateau_lstm_val_loss") == 0.9
    assert value("plateau_lstm_monitored_metric") == 0.8
    assert value("plateau_lstm_learning_rate") == pytest.approx(1e-3)
    assert value("plateau_lstm_plateau_level") == 2
    assert value("plateau_lstm_epochs_since_improvement") == 2
    assert value("plateau_lstm_lr_restarts_total") == 1
    assert value("plateau_lstm_loss_switches_total") == 1
    assert value("plateau_lstm_nan_recoveries_total") == 0
    samples = {
        (s.name, tuple(s.labels.items())): s.value
        for family in exporter.metrics.collect()
        for s in family.samples
    }
    assert samples[("plateau_lstm_active_loss_info", (("loss", "mse"),))] == 1
    assert samples[("plateau_lstm_epoch_duration_seconds_count", ())] == 3

    run_epochs(callbacks, [FLAT], start=3)
    assert value("plateau_lstm_plateau_level") == 3


def test_a_nan_epoch_exports_the_nan_and_the_recovery():
    callbacks, exporter = setup()
    begin(callbacks)
    run_epochs(callbacks, [FLAT, {**FLAT, "loss": math.nan, "val_loss": math.nan}])
    assert math.isnan(exporter.metrics.value("plateau_lstm_train_loss"))
    assert exporter.metrics.value("plateau_lstm_nan_recoveries_total") == 1
    run_epochs(callbacks, [FLAT], start=2)
    assert exporter.metrics.value("plateau_lstm_train_loss") == 1.0


def test_a_resumed_run_continues_the_counters_of_its_checkpoint():
    callbacks, _ = setup()
    begin(callbacks)
    run_epochs(callbacks, [FLAT] * 5)
    states = [c.get_state() for c in callbacks[:4]]

    resumed, exporter = setup()
    for callback, state in zip(resumed[:4], states, strict=True):
        callback.set_state(state)
    begin(resumed)
    assert exporter.metrics.value("plateau_lstm_lr_restarts_total") == 2
    assert exporter.metrics.value("plateau_lstm_loss_switches_total") == 2


def test_without_the_cyclical_rate_the_optimizer_is_asked_for_the_rate():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.25), loss="mse")
    exporter = MetricsExporter()
    metrics = PrometheusMetrics(exporter)
    metrics.set_model(model)
    metrics.on_train_begin()
    metrics.on_epoch_end(0, {"loss": 1.0, "val_loss": 2.0, "val_mse": 2.0})
    assert exporter.metrics.value("plateau_lstm_learning_rate") == 0.25
    assert exporter.metrics.value("plateau_lstm_monitored_metric") == 2.0
    assert exporter.metrics.value("plateau_lstm_plateau_level") is None


def test_bad_arguments_fail_at_construction():
    with pytest.raises(ValueError, match="exporter"):
        PrometheusMetrics(object())
    with pytest.raises(ValueError, match="detector"):
        PrometheusMetrics(MetricsExporter(), detector="val_mse")


def test_a_real_fit_pushes_every_epoch_to_the_pushgateway(pushgateway):
    config = MetricsConfig(port=0, pushgateway=pushgateway.url, model_name="callback-fit")
    with MetricsExporter(config) as exporter:
        callbacks, _ = setup(exporter, patience=(3, 5, 10))
        model = callbacks[0].model
        x = np.random.default_rng(0).normal(size=(64, 3)).astype("float32")
        y = x.sum(axis=1, keepdims=True)
        seen = []

        class PushedEpochs(keras.callbacks.Callback):
            # What the Pushgateway holds after each epoch's push has run.
            def on_epoch_end(self, epoch, logs=None):
                assert exporter.flush(5)
                group = pushgateway.group(job=JOB, model="callback-fit")
                seen.append(group["plateau_lstm_epoch"]["metrics"][0]["value"])

        fit_callbacks = [*callbacks, PushedEpochs()]
        model.fit(x, y, validation_data=(x, y), epochs=3, verbose=0, callbacks=fit_callbacks)
    assert seen == ["1", "2", "3"]
    group = pushgateway.group(job=JOB, model="callback-fit")
    assert group["plateau_lstm_epoch_duration_seconds"]["metrics"][0]["count"] == "3"
    assert float(group["plateau_lstm_learning_rate"]["metrics"][0]["value"]) > 0
    assert float(group["plateau_lstm_monitored_metric"]["metrics"][0]["value"]) > 0
    # fit ended, but nothing was published: no success time.
    assert "plateau_lstm_last_success_timestamp_seconds" not in group
