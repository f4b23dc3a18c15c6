import json
import math

import keras
import numpy as np
import pytest

from plateau_lstm.callbacks import (
    CyclicalLearningRate,
    EventLog,
    NanGuard,
    PlateauDetector,
    Triangular2Schedule,
)

MAX_LR = 2e-3
GOOD = {"loss": 1.0, "val_loss": 1.0}
NAN = {"loss": math.nan, "val_loss": math.nan}


def built_model(schedule):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=schedule, amsgrad=True), loss="mse")
    model.optimizer.build(model.trainable_variables)
    return model


def values(variables):
    return [np.array(keras.ops.convert_to_numpy(v)) for v in variables]


def optimizer_slots(model):
    return [v for v in model.optimizer.variables if v is not model.optimizer.iterations]


def poison(model):
    for variable in model.weights + optimizer_slots(model):
        variable.assign(np.full(variable.shape, np.nan, dtype=variable.dtype))


def setup(**kwargs):
    schedule = Triangular2Schedule(step_size=8, max_lr=MAX_LR)
    log = EventLog()
    guard = NanGuard(schedule, event_log=log, **kwargs)
    model = built_model(schedule)
    guard.set_model(model)
    guard.on_train_begin()
    return schedule, guard, model, log


def test_nan_epoch_restores_weights_and_optimizer_but_not_the_step_and_halves_the_peak():
    schedule, guard, model, log = setup()
    for slot in optimizer_slots(model):
        slot.assign(np.full(slot.shape, 0.25, dtype=slot.dtype))
    guard.on_epoch_end(0, GOOD)
    good_weights, good_slots = values(model.weights), values(optimizer_slots(model))

    poison(model)
    model.optimizer.iterations.assign(42)
    guard.on_epoch_end(1, NAN)

    for restored, expected in zip(values(model.weights), good_weights, strict=True):
        np.testing.assert_array_equal(restored, expected)
    for restored, expected in zip(values(optimizer_slots(model)), good_slots, strict=True):
        np.testing.assert_array_equal(restored, expected)
    assert int(model.optimizer.iterations) == 42
    assert schedule.current_peak == pytest.approx(MAX_LR / 2)
    assert guard.recoveries == 1 and not model.stop_training
    (event,) = log.events
    assert event["kind"] == "nan_recovery" and event["epoch"] == 2
    assert event["message"] == (
        "NaN recovery #1 at epoch 2: loss was nan; restored the weights of epoch 1, "
        "peak 2.0e-03 -> 1.0e-03"
    )


def test_a_nan_in_the_first_epoch_restores_the_starting_weights():
    schedule, guard, model, log = setup()
    start = values(model.weights)
    poison(model)
    guard.on_epoch_end(0, NAN)
    for restored, expected in zip(values(model.weights), start, strict=True):
        np.testing.assert_array_equal(restored, expected)
    assert "the weights the fit started from" in log.events[0]["message"]


def test_an_exploding_or_nan_validation_loss_counts_too():
    schedule, guard, model, log = setup(explode_factor=100.0)
    guard.on_epoch_end(0, {"loss": 0.5, "val_loss": 0.5})
    guard.on_epoch_end(1, {"loss": 49.0, "val_loss": 0.5})  # under 100 x the best
    assert guard.recoveries == 0 and guard.best_loss == 0.5
    guard.on_epoch_end(2, {"loss": 51.0, "val_loss": 0.5})
    guard.on_epoch_end(3, {"loss": 0.4, "val_loss": math.inf})
    assert guard.recoveries == 2
    assert "loss exploded to 51" in log.events[0]["message"]
    assert "val_loss was inf" in log.events[1]["message"]


def test_more_than_max_recoveries_stops_training_with_a_clear_message():
    schedule, guard, model, log = setup(max_recoveries=2)
    guard.on_epoch_end(0, GOOD)
    good_weights = values(model.weights)
    for epoch in (1, 2, 3):
        poison(model)
        guard.on_epoch_end(epoch, NAN)

    assert model.stop_training
    assert guard.recoveries == 2
    assert schedule.current_peak == pytest.approx(MAX_LR / 4)
    assert [e["kind"] for e in log.events] == ["nan_recovery", "nan_recovery", "nan_abort"]
    message = guard.abort_message
    assert message.startswith("Training stopped at epoch 4: loss was nan, after 2 recoveries")
    assert "--max-lr" in message and "check the prepared data" in message
    # The model is left with the last good weights, not NaN.
    for restored, expected in zip(values(model.weights), good_weights, strict=True):
        np.testing.assert_array_equal(restored, expected)


def test_the_lr_callback_is_told_so_its_segments_stay_exact():
    schedule = Triangular2Schedule(step_size=8, max_lr=MAX_LR)
    restarts = CyclicalLearningRate(schedule, PlateauDetector())
    guard = NanGuard(schedule, lr_callback=restarts)
    model = built_model(schedule)
    for callback in (restarts, guard):
        callback.set_model(model)
        callback.on_train_begin()
    model.optimizer.iterations.assign(12)
    guard.on_epoch_end(2, NAN)

    assert restarts.segments[-1] == {"step": 12, "origin": 0, "peak": pytest.approx(MAX_LR / 2)}
    assert restarts.damping == pytest.approx(0.5)


def test_state_round_trips_and_a_restored_state_survives_train_begin():
    schedule, guard, model, log = setup()
    guard.on_epoch_end(0, {"loss": 0.7, "val_loss": 0.8})
    guard.on_epoch_end(1, NAN)
    state = json.loads(json.dumps(guard.get_state()))
    assert state == {"recoveries": 1, "best_loss": 0.7, "last_good_epoch": 1}

    resumed = NanGuard(schedule)
    resumed.set_model(model)
    resumed.set_state(state)
    resumed.on_train_begin()
    assert resumed.get_state() == state

    resumed.on_train_begin()
    assert resumed.get_state() == {"recoveries": 0, "best_loss": None, "last_good_epoch": 0}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_recoveries": 0}, "Received: max_recoveries=0"),
        ({"explode_factor": 1.0}, "Received: explode_factor=1.0"),
        ({"lr_callback": "clr"}, "Received: lr_callback='clr'"),
    ],
)
def test_bad_arguments_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        NanGuard(Triangular2Schedule(step_size=4), **kwargs)
