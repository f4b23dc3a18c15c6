import dataclasses
import json
import math
import warnings

import pytest

from plateau_lstm.callbacks import EventLog, PlateauDetector, PlateauEvent


def run_epochs(detector, values, start=0):
    """Feeds one epoch end per value and returns the events delivered meanwhile."""
    events = []

    def collect(event):
        if collecting:
            events.append(event)

    collecting = True
    detector.subscribe(collect)
    for epoch, value in enumerate(values, start=start):
        detector.on_epoch_end(epoch, {"val_mse": value, "loss": 0.5})
    collecting = False
    return events


def started(**kwargs):
    detector = PlateauDetector(**kwargs)
    detector.on_train_begin()
    return detector


def test_flat_values_reach_watch_act_and_severe_at_3_5_10():
    detector = started()
    levels = []
    for epoch in range(16):
        detector.on_epoch_end(epoch, {"val_mse": 1.0})
        levels.append(detector.level)

    # Epoch 0 sets the best; the stalled count is then 1, 2, 3 ...
    assert levels[:4] == [0, 0, 0, 1]
    assert levels[5] == 2 and levels[9] == 2
    assert levels[10] == 3 and levels[15] == 3
    assert detector.stalled_epochs == 15
    assert detector.epochs_since_improvement == 15


def test_events_fire_on_entering_watch_every_act_multiple_and_on_entering_severe():
    detector = started()
    events = run_epochs(detector, [1.0] * 16)

    assert [(e.level_name, e.stalled_epochs, e.epoch) for e in events] == [
        ("watch", 3, 4),
        ("act", 5, 6),
        ("act", 10, 11),  # the plateau outlived the first adaptation: act again
        ("severe", 10, 11),
        ("act", 15, 16),
    ]
    assert detector.plateaus_detected == 3
    assert all(isinstance(e, PlateauEvent) and e.best == 1.0 for e in events)
    with pytest.raises(dataclasses.FrozenInstanceError):
        events[0].level = 0


def test_improvement_must_beat_best_by_more_than_min_delta():
    detector = started(min_delta=2e-4)
    run_epochs(detector, [1.0, 0.9999])
    assert detector.best == 1.0 and detector.epochs_since_improvement == 1

    run_epochs(detector, [0.9997], start=2)
    assert detector.best == 0.9997
    assert detector.epochs_since_improvement == 0
    assert detector.stalled_epochs == 0 and detector.level == 0


def test_improvement_clears_the_level():
    detector = started()
    run_epochs(detector, [1.0] * 7)
    assert detector.level == 2
    run_epochs(detector, [0.5], start=7)
    assert (detector.level, detector.stalled_epochs, detector.best) == (0, 0, 0.5)


def test_a_steady_fall_after_a_spike_is_not_a_plateau():
    falling = [1.0, 1.5, 1.4, 1.3, 1.2, 1.1, 1.05, 1.02, 1.01]
    detector = started(trend_window=4)
    events = run_epochs(detector, falling)

    # Until the window holds 4 values, and while the spike is in it, epochs count;
    # from then on the slope is below -min_delta and the stalled count holds.
    assert detector.epochs_since_improvement == 8
    assert detector.stalled_epochs == 3
    assert [e.level_name for e in events] == ["watch"]

    flat = started(trend_window=4)
    events = run_epochs(flat, [1.0] + [1.5] * 8)
    assert flat.stalled_epochs == 8
    assert [e.level_name for e in events] == ["watch", "act"]


def test_a_fall_slower_than_min_delta_per_epoch_counts_as_flat():
    detector = started(min_delta=1e-2)
    run_epochs(detector, [1.0, 1.5, 1.499, 1.498, 1.497, 1.496])
    assert detector.stalled_epochs == 5


def test_non_finite_values_and_nan_loss_epochs_are_ignored():
    detector = started()
    run_epochs(detector, [1.0, 1.0])
    detector.on_epoch_end(2, {"val_mse": math.nan})
    detector.on_epoch_end(3, {"val_mse": math.inf})
    detector.on_epoch_end(4, {"val_mse": 1.0, "loss": math.nan})
    assert detector.stalled_epochs == 1
    assert detector.get_state()["recent"] == [1.0, 1.0]


def test_a_missing_monitor_warns_once_and_changes_nothing():
    detector = started()
    with pytest.warns(UserWarning, match="val_mse"):
        detector.on_epoch_end(0, {"loss": 1.0})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        detector.on_epoch_end(1, {"loss": 1.0})
    assert detector.best == math.inf and detector.epochs_since_improvement == 0


def test_act_and_severe_events_go_to_the_event_log():
    log = EventLog()
    detector = started(patience=(1, 2, 3), event_log=log)
    run_epochs(detector, [1.0] * 5)
    assert [(e["kind"], e["level_name"], e["epoch"]) for e in log.events] == [
        ("plateau", "act", 3),
        ("plateau", "severe", 4),
        ("plateau", "act", 5),
    ]
    assert log.events[0]["message"].startswith("Plateau act at epoch 3: val_mse flat for 2 epochs")


def test_state_round_trips_through_json_and_survives_the_next_train_begin():
    detector = started()
    run_epochs(detector, [1.0] * 7)
    state = json.loads(json.dumps(detector.get_state()))

    resumed = PlateauDetector()
    resumed.set_state(state)
    resumed.on_train_begin()
    assert resumed.get_state() == detector.get_state()
    assert resumed.level == 2 and resumed.plateaus_detected == 1

    events = run_epochs(resumed, [1.0] * 4, start=7)
    assert [(e.level_name, e.stalled_epochs) for e in events] == [("act", 10), ("severe", 10)]

    # The restored state served one fit; the next fit starts fresh.
    resumed.on_train_begin()
    assert resumed.best == math.inf and resumed.stalled_epochs == 0


def test_train_begin_without_restored_state_resets():
    detector = started()
    run_epochs(detector, [1.0] * 7)
    detector.on_train_begin()
    assert detector.get_state() == PlateauDetector().get_state()


def test_fresh_state_is_json_safe():
    assert json.loads(json.dumps(PlateauDetector().get_state()))["best"] is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"patience": (5, 3, 10)}, "Received: patience=\\(5, 3, 10\\)"),
        ({"patience": (0, 1, 2)}, "Received: patience=\\(0, 1, 2\\)"),
        ({"patience": (1, 2)}, "Received: patience=\\(1, 2\\)"),
        ({"trend_window": 1}, "Received: trend_window=1"),
        ({"min_delta": -1.0}, "Received: min_delta=-1.0"),
        ({"monitor": ""}, "Received: monitor=''"),
    ],
)
def test_bad_arguments_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PlateauDetector(**kwargs)


def test_set_state_rejects_an_incomplete_dict():
    with pytest.raises(ValueError, match="Received: state="):
        PlateauDetector().set_state({"best": 1.0})
