import json
import re

import keras
import numpy as np
import pytest

from plateau_lstm.callbacks import (
    AdaptiveLoss,
    AdaptiveLossSwitcher,
    CyclicalLearningRate,
    EventLog,
    NanGuard,
    PlateauDetector,
    Triangular2Schedule,
)

MAX_LR = 2e-3
STEP_SIZE = 8
STEPS_PER_EPOCH = 4


def compiled_model(schedule, loss="mse"):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=schedule), loss=loss)
    return model


def setup(**kwargs):
    schedule = Triangular2Schedule(step_size=STEP_SIZE, max_lr=MAX_LR)
    detector = PlateauDetector(**kwargs)
    log = EventLog()
    restarts = CyclicalLearningRate(schedule, detector, event_log=log)
    model = compiled_model(schedule)
    for callback in (detector, restarts):
        callback.set_model(model)
        callback.on_train_begin()
    return schedule, detector, restarts, model, log


def flat_epochs(model, callbacks, epochs, start=0):
    """Plays epochs of STEPS_PER_EPOCH batches whose val_mse never improves."""
    for epoch in range(start, start + epochs):
        for callback in callbacks:
            callback.on_epoch_begin(epoch)
        model.optimizer.iterations.assign((epoch + 1) * STEPS_PER_EPOCH)
        for callback in callbacks:
            callback.on_epoch_end(epoch, {"val_mse": 1.0, "loss": 1.0})


def test_act_events_restart_at_boosted_peaks_up_to_the_cap():
    schedule, detector, restarts, model, log = setup(patience=(1, 2, 3))
    rates_at_restart = []
    detector.subscribe(
        lambda event: (
            rates_at_restart.append(float(model.optimizer.learning_rate))
            if event.level_name == "act"
            else None
        )
    )
    flat_epochs(model, [detector, restarts], 13)

    # Act events at stalled 2, 4, ..., 12: six restarts, the boost capped at 4x.
    boosts = [1.5, 2.25, 3.375, 4.0, 4.0, 4.0]
    restart_events = [e for e in log.events if e["kind"] == "lr_restart"]
    assert restarts.restarts == detector.plateaus_detected == 6
    assert [e["new_peak"] for e in restart_events] == pytest.approx([MAX_LR * b for b in boosts])
    # At the step of each restart the optimizer's rate is the new peak, the cycle just topped.
    assert rates_at_restart == pytest.approx([MAX_LR * b for b in boosts])
    for event in restart_events:
        assert event["origin"] == event["step"] - STEP_SIZE


def test_restart_message_and_event_fields():
    schedule, detector, restarts, model, log = setup()
    flat_epochs(model, [detector, restarts], 11)

    messages = [e["message"] for e in log.events if e["kind"] == "lr_restart"]
    assert messages == [
        "LR restart #1 at epoch 6: peak 2.0e-03 -> 3.0e-03, val_mse flat for 5 epochs",
        "LR restart #2 at epoch 11: peak 3.0e-03 -> 4.5e-03, val_mse flat for 10 epochs",
    ]
    pattern = (
        r"LR restart #\d+ at epoch \d+: peak \d\.\de-\d\d -> \d\.\de-\d\d, \w+ flat for \d+ epochs"
    )
    assert all(re.fullmatch(pattern, m) for m in messages)
    first = next(e for e in log.events if e["kind"] == "lr_restart")
    assert (first["restart"], first["step"], first["new_peak"]) == (1, 24, pytest.approx(3e-3))


def test_segments_reconstruct_the_rate_of_every_step():
    schedule, detector, restarts, model, log = setup(patience=(1, 2, 3))
    flat_epochs(model, [detector, restarts], 7)
    restarts.on_train_end()

    assert [s["step"] for s in restarts.segments] == [0, 12, 20, 28]
    steps = np.arange(0, 40)
    expected = []
    for step in steps:
        segment = [s for s in restarts.segments if s["step"] <= step][-1]
        expected.append(schedule.rate_at(step, segment["origin"], segment["peak"]))
    np.testing.assert_array_equal(restarts.learning_rate_at(steps), expected)
    # The rate is at each new peak exactly where it was restarted.
    for segment in restarts.segments[1:]:
        assert restarts.learning_rate_at(segment["step"]) == pytest.approx(segment["peak"])


def test_note_change_records_a_segment_and_damps_later_restarts():
    schedule, detector, restarts, model, log = setup()
    model.optimizer.iterations.assign(9)
    schedule.scale_peak(0.5)
    restarts.note_change(0.5)

    assert restarts.segments[-1] == {"step": 9, "origin": 0, "peak": pytest.approx(MAX_LR / 2)}
    flat_epochs(model, [detector, restarts], 6, start=3)
    assert schedule.current_peak == pytest.approx(MAX_LR * 1.5 * 0.5)


def test_a_change_made_by_someone_else_is_noted_at_the_next_epoch_begin():
    schedule, detector, restarts, model, log = setup()
    model.optimizer.iterations.assign(16)
    schedule.scale_peak(0.5)
    restarts.on_epoch_begin(4)
    assert restarts.segments[-1]["step"] == 16
    assert restarts.segments[-1]["peak"] == pytest.approx(MAX_LR / 2)


def test_state_round_trips_and_a_restored_state_survives_train_begin():
    schedule, detector, restarts, model, log = setup()
    flat_epochs(model, [detector, restarts], 6)
    state = json.loads(json.dumps(restarts.get_state()))

    schedule2 = Triangular2Schedule(step_size=STEP_SIZE, max_lr=MAX_LR)
    resumed = CyclicalLearningRate(schedule2, PlateauDetector())
    resumed.set_state(state)
    model2 = compiled_model(schedule2)
    model2.optimizer.iterations.assign(24)
    resumed.set_model(model2)
    resumed.on_train_begin()

    assert resumed.get_state() == restarts.get_state()
    assert float(model2.optimizer.learning_rate) == pytest.approx(3e-3)

    # Without a restored state, a new fit starts a fresh cycle at the current step.
    resumed.on_train_begin()
    assert resumed.restarts == 0
    assert schedule2.get_state() == {"origin": 24, "peak": pytest.approx(MAX_LR)}
    assert resumed.segments == [{"step": 24, "origin": 24, "peak": pytest.approx(MAX_LR)}]


def test_warns_when_the_optimizer_does_not_use_the_schedule():
    schedule = Triangular2Schedule(step_size=STEP_SIZE)
    restarts = CyclicalLearningRate(schedule)
    restarts.set_model(compiled_model(1e-3))
    with pytest.warns(UserWarning, match="does not use this schedule"):
        restarts.on_train_begin()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"boost_factor": 1.0}, "Received: boost_factor=1.0"),
        ({"boost_cap": 0.5}, "Received: boost_cap=0.5"),
        ({"detector": "val_mse"}, "Received: detector='val_mse'"),
    ],
)
def test_bad_arguments_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CyclicalLearningRate(Triangular2Schedule(step_size=4), **kwargs)


def test_schedule_must_be_a_triangular2_schedule():
    with pytest.raises(ValueError, match="Received: schedule=0.001"):
        CyclicalLearningRate(1e-3)


class TraceCounter(keras.layers.Layer):
    """Identity layer whose Python body runs once per trace of a compiled function."""

    traces = 0

    def call(self, inputs):
        TraceCounter.traces += 1
        return inputs


class Probe(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.batch_rates = {}
        self.traces_at_epoch_end = []

    def on_train_batch_begin(self, batch, logs=None):
        step = int(self.model.optimizer.iterations)
        self.batch_rates[step] = float(self.model.optimizer.learning_rate)

    def on_epoch_end(self, epoch, logs=None):
        self.traces_at_epoch_end.append(TraceCounter.traces)


def test_a_real_fit_with_every_callback_follows_the_schedule(tmp_path):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 3)).astype("float32"), rng.normal(size=(64, 1)).astype("float32")
    x_val, y_val = x[:32], y[:32]

    log = EventLog(tmp_path / "events.jsonl")
    schedule = Triangular2Schedule(step_size=STEP_SIZE, max_lr=MAX_LR)
    # min_delta so large that nothing after the first epoch counts as an improvement.
    detector = PlateauDetector(min_delta=1e9, patience=(1, 2, 3), event_log=log)
    restarts = CyclicalLearningRate(schedule, detector, event_log=log)
    loss = AdaptiveLoss()
    switcher = AdaptiveLossSwitcher(loss, detector, event_log=log)
    guard = NanGuard(schedule, event_log=log, lr_callback=restarts)
    probe = Probe()

    model = keras.Sequential(
        [keras.Input((3,)), TraceCounter(), keras.layers.Dense(4), keras.layers.Dense(1)]
    )
    optimizer = keras.optimizers.Adam(learning_rate=schedule, amsgrad=True, clipnorm=0.8)
    model.compile(optimizer=optimizer, loss=loss, metrics=["mse"])
    history = model.fit(
        x,
        y,
        batch_size=16,
        epochs=5,
        validation_data=(x_val, y_val),
        callbacks=[detector, restarts, switcher, guard, probe],
        verbose=0,
    )

    # Epoch 1 sets the best; 2 watch; 3 act; 4 severe; 5 act again.
    assert log.counts() == {"plateau": 3, "lr_restart": 2, "loss_switch": 2}
    assert [e["kind"] for e in EventLog.load(tmp_path / "events.jsonl")] == [
        e["kind"] for e in log.events
    ]
    assert (restarts.restarts, switcher.switches, loss.active_name) == (2, 2, "mae")
    assert guard.recoveries == 0 and guard.abort_message is None

    # Every batch ran at the rate the segments give, and restarts took effect at once.
    steps = sorted(probe.batch_rates)
    assert steps == list(range(5 * STEPS_PER_EPOCH))
    np.testing.assert_allclose(
        [probe.batch_rates[s] for s in steps], restarts.learning_rate_at(steps), rtol=1e-6
    )
    assert probe.batch_rates[12] == pytest.approx(MAX_LR * 1.5)
    assert float(model.optimizer.learning_rate) == pytest.approx(
        float(schedule.rate_at(int(model.optimizer.iterations)))
    )
    last_steps = [(epoch + 1) * STEPS_PER_EPOCH - 1 for epoch in range(5)]
    np.testing.assert_allclose(
        history.history["learning_rate"], restarts.learning_rate_at(last_steps), rtol=1e-6
    )

    # Restarts and loss switches never retraced the train or test step.
    assert len(set(probe.traces_at_epoch_end)) == 1
