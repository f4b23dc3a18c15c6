"""The metric definitions and the per-run collector (ARCHITECTURE.md, "Prometheus metrics")."""

import math

import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families

from plateau_lstm.metrics import BY_NAME, DEFINITIONS, TrainingMetrics

# The contract, spelled out here on purpose: renaming a metric must fail a test.
CONTRACT = {
    "plateau_lstm_learning_rate": "gauge",
    "plateau_lstm_train_loss": "gauge",
    "plateau_lstm_val_loss": "gauge",
    "plateau_lstm_monitored_metric": "gauge",
    "plateau_lstm_epoch": "gauge",
    "plateau_lstm_plateau_level": "gauge",
    "plateau_lstm_epochs_since_improvement": "gauge",
    "plateau_lstm_lr_restarts_total": "counter",
    "plateau_lstm_loss_switches_total": "counter",
    "plateau_lstm_nan_recoveries_total": "counter",
    "plateau_lstm_active_loss_info": "info",
    "plateau_lstm_epoch_duration_seconds": "summary",
    "plateau_lstm_checkpoint_upload_seconds": "summary",
    "plateau_lstm_last_success_timestamp_seconds": "gauge",
}


def exposition(metrics: TrainingMetrics) -> dict[str, float]:
    """{sample name with labels: value} as a scraper parses the text format."""
    text = prometheus_client.generate_latest(metrics.registry).decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def test_every_contract_metric_is_defined_with_its_type_and_a_help_text():
    assert {d.name: d.kind for d in DEFINITIONS} == CONTRACT
    for definition in DEFINITIONS:
        assert len(definition.help) > 20, definition.name
    assert BY_NAME["plateau_lstm_active_loss_info"].label == "loss"


def test_a_full_epoch_exposes_every_metric_but_the_success_time():
    metrics = TrainingMetrics()
    metrics.update(
        epoch=4,
        learning_rate=1e-3,
        train_loss=0.5,
        val_loss=0.4,
        monitored_metric=0.8,
        plateau_level=2,
        epochs_since_improvement=5,
        lr_restarts=1,
        loss_switches=1,
        nan_recoveries=0,
    )
    metrics.set_active_loss("mse")
    metrics.observe_epoch_duration(1.5)
    metrics.observe_epoch_duration(0.5)
    metrics.observe_checkpoint_upload(0.25)
    samples = exposition(metrics)
    assert samples["plateau_lstm_epoch"] == 4
    assert samples["plateau_lstm_plateau_level"] == 2
    assert samples["plateau_lstm_lr_restarts_total"] == 1
    assert samples['plateau_lstm_active_loss_info{loss="mse"}'] == 1
    assert samples["plateau_lstm_epoch_duration_seconds_count"] == 2
    assert samples["plateau_lstm_epoch_duration_seconds_sum"] == 2.0
    assert samples["plateau_lstm_checkpoint_upload_seconds_sum"] == 0.25
    assert "plateau_lstm_last_success_timestamp_seconds" not in samples
    # No `_created` series beside the counters and summaries: nothing reads them.
    assert not [name for name in samples if name.endswith("_created")]
    names = {name.split("{")[0] for name in samples}
    for name, kind in CONTRACT.items():
        if name != "plateau_lstm_last_success_timestamp_seconds":
            assert (name if kind != "summary" else f"{name}_count") in names, name


def test_before_the_first_epoch_losses_are_absent_not_nan():
    # A NaN loss would read as divergence to the alert rules.
    samples = exposition(TrainingMetrics())
    for name in ("train_loss", "val_loss", "monitored_metric", "learning_rate", "epoch"):
        assert f"plateau_lstm_{name}" not in samples
    assert samples["plateau_lstm_nan_recoveries_total"] == 0
    assert samples["plateau_lstm_epoch_duration_seconds_count"] == 0


def test_non_finite_losses_are_exposed_as_they_are():
    metrics = TrainingMetrics()
    metrics.update(train_loss=float("nan"), val_loss=float("inf"))
    samples = exposition(metrics)
    assert math.isnan(samples["plateau_lstm_train_loss"])
    assert samples["plateau_lstm_val_loss"] == math.inf


def test_the_active_loss_is_one_series_that_follows_the_switches():
    metrics = TrainingMetrics()
    metrics.set_active_loss("huber")
    metrics.set_active_loss("mae")
    info = {k: v for k, v in exposition(metrics).items() if "active_loss" in k}
    assert info == {'plateau_lstm_active_loss_info{loss="mae"}': 1.0}


def test_success_time_appears_only_once_marked():
    metrics = TrainingMetrics()
    assert metrics.value("plateau_lstm_last_success_timestamp_seconds") is None
    metrics.mark_success(1_700_000_000.5)
    assert exposition(metrics)["plateau_lstm_last_success_timestamp_seconds"] == 1_700_000_000.5


def test_each_run_has_its_own_registry_never_the_global_one():
    first, second = TrainingMetrics(), TrainingMetrics()
    first.update(epoch=7)
    assert first.registry is not prometheus_client.REGISTRY
    assert first.registry is not second.registry
    assert "plateau_lstm_epoch" not in exposition(second)
    assert prometheus_client.REGISTRY.get_sample_value("plateau_lstm_epoch") is None


def test_unknown_names_fail_loudly_and_clock_oddities_are_ignored():
    metrics = TrainingMetrics()
    with pytest.raises(ValueError, match="Unknown metric.*epochs"):
        metrics.update(epochs=3)
    with pytest.raises(ValueError):
        metrics.update(last_success_timestamp_seconds=1.0)  # only mark_success sets it
    metrics.observe_epoch_duration(-1.0)
    metrics.observe_epoch_duration(float("nan"))
    assert exposition(metrics)["plateau_lstm_epoch_duration_seconds_count"] == 0
