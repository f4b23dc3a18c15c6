import json

import keras
import pytest

from plateau_lstm.callbacks import AdaptiveLoss, AdaptiveLossSwitcher, EventLog, PlateauDetector


def setup(**kwargs):
    loss = AdaptiveLoss()
    detector = PlateauDetector(**kwargs)
    log = EventLog()
    switcher = AdaptiveLossSwitcher(loss, detector, event_log=log)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss=loss)
    for callback in (detector, switcher):
        callback.set_model(model)
        callback.on_train_begin()
    return loss, detector, switcher, log


def flat_epochs(detector, epochs, start=0):
    for epoch in range(start, start + epochs):
        detector.on_epoch_end(epoch, {"val_mse": 1.0, "loss": 1.0})


def test_each_act_event_advances_one_kind_and_the_last_kind_stays():
    loss, detector, switcher, log = setup(patience=(1, 2, 3))
    names = []
    for epoch in range(0, 11, 2):
        flat_epochs(detector, 2, start=epoch)
        names.append(loss.active_name)

    # Act events at stalled 2, 4, 6, 8, 10 (epochs 3, 5, 7, 9, 11).
    assert names == ["huber", "mse", "mae", "log_cosh", "log_cosh", "log_cosh"]
    assert switcher.switches == 3
    assert detector.plateaus_detected == 5
    assert log.counts()["loss_switch"] == 3


def test_switch_message_and_fields():
    loss, detector, switcher, log = setup()
    flat_epochs(detector, 6)
    (event,) = [e for e in log.events if e["kind"] == "loss_switch"]
    assert event["message"] == "Loss switch #1 at epoch 6: huber -> mse, val_mse flat for 5 epochs"
    assert (event["from_loss"], event["to_loss"], event["index"]) == ("huber", "mse", 1)


def test_watch_and_severe_events_do_not_switch():
    loss, detector, switcher, log = setup(patience=(1, 3, 4))
    flat_epochs(detector, 3)  # watch at stalled 1, nothing at 2
    assert loss.active_name == "huber"
    flat_epochs(detector, 2, start=3)  # act at 3, severe at 4
    assert loss.active_name == "mse" and switcher.switches == 1


def test_state_round_trips_and_a_restored_state_survives_train_begin():
    loss, detector, switcher, log = setup()
    flat_epochs(detector, 11)
    state = json.loads(json.dumps(switcher.get_state()))
    assert state == {"switches": 2, "index": 2}

    other_loss = AdaptiveLoss()
    resumed = AdaptiveLossSwitcher(other_loss, PlateauDetector())
    resumed.set_state(state)
    resumed.on_train_begin()
    assert (resumed.switches, other_loss.active_name) == (2, "mae")

    # Without a restored state, a new fit starts again from the first kind.
    resumed.on_train_begin()
    assert (resumed.switches, other_loss.active_name) == (0, "huber")


def test_warns_when_the_model_was_compiled_with_another_loss():
    switcher = AdaptiveLossSwitcher(AdaptiveLoss())
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    switcher.set_model(model)
    with pytest.warns(UserWarning, match="not compiled with this AdaptiveLoss"):
        switcher.on_train_begin()


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="Received: loss='mse'"):
        AdaptiveLossSwitcher("mse")
    with pytest.raises(ValueError, match="Received: detector=3"):
        AdaptiveLossSwitcher(AdaptiveLoss(), detector=3)
    with pytest.raises(ValueError, match="Received: state="):
        AdaptiveLossSwitcher(AdaptiveLoss()).set_state({"switches": 1})
