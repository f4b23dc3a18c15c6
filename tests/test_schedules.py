import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from plateau_lstm.schedules import Triangular2Schedule

BASE, MAX, STEP_SIZE = 1e-4, 1e-3, 10


def make_schedule():
    return Triangular2Schedule(step_size=STEP_SIZE, base_lr=BASE, max_lr=MAX)


def test_triangular2_values_at_known_steps_halve_every_cycle():
    schedule = make_schedule()
    steps = [0, 5, 10, 15, 20, 25, 30, 40, 50, 60]
    expected = [
        BASE,
        BASE + (MAX - BASE) / 2,
        MAX,  # top of cycle 1
        BASE + (MAX - BASE) / 2,
        BASE,
        BASE + (MAX - BASE) / 4,
        BASE + (MAX - BASE) / 2,  # top of cycle 2: half the amplitude
        BASE,
        BASE + (MAX - BASE) / 4,  # top of cycle 3: a quarter
        BASE,
    ]
    np.testing.assert_allclose(schedule.rate_at(steps), expected, rtol=1e-6)


def test_call_and_optimizer_use_the_same_formula_as_rate_at():
    schedule = make_schedule()
    optimizer = keras.optimizers.Adam(learning_rate=schedule)
    for step in (0, 7, 13, 33):
        optimizer.iterations.assign(step)
        assert float(optimizer.learning_rate) == pytest.approx(float(schedule.rate_at(step)))
        assert float(schedule(step)) == pytest.approx(float(schedule.rate_at(step)))


def test_restart_puts_the_rate_at_the_new_peak_and_restarts_the_halving():
    schedule = make_schedule()
    schedule.restart_at_peak(57, 3e-3)

    assert schedule.current_origin == 57 - STEP_SIZE
    rates = schedule.rate_at([57, 62, 67, 77, 97])
    np.testing.assert_allclose(
        rates,
        [3e-3, BASE + (3e-3 - BASE) / 2, BASE, BASE + (3e-3 - BASE) / 2, BASE + (3e-3 - BASE) / 4],
        rtol=1e-6,
    )


def test_restart_accepts_the_optimizer_iterations_variable():
    schedule = make_schedule()
    optimizer = keras.optimizers.Adam(learning_rate=schedule)
    optimizer.iterations.assign(123)
    schedule.restart_at_peak(optimizer.iterations, 2e-3)
    assert float(optimizer.learning_rate) == pytest.approx(2e-3)


def test_changing_origin_or_peak_never_retraces():
    schedule = make_schedule()
    traces = []

    @tf.function
    def rate(step):
        traces.append(1)
        return schedule(step)

    step = tf.constant(30, dtype=tf.int64)
    before = float(rate(step))
    schedule.restart_at_peak(30, 2e-3)
    after = float(rate(step))
    schedule.scale_peak(0.5)
    halved = float(rate(step))

    assert len(traces) == 1
    assert before == pytest.approx(BASE + (MAX - BASE) / 2)
    assert after == pytest.approx(2e-3)
    assert halved == pytest.approx(1e-3)


def test_scale_peak_never_goes_below_base():
    schedule = make_schedule()
    assert schedule.scale_peak(0.5) == pytest.approx(MAX / 2)
    assert schedule.scale_peak(1e-6) == pytest.approx(BASE)


def test_rate_at_with_explicit_origin_and_peak_leaves_the_schedule_alone():
    schedule = make_schedule()
    rate = schedule.rate_at(20, origin=10, peak=4e-3)
    assert float(rate) == pytest.approx(4e-3)
    assert schedule.get_state() == {"origin": 0, "peak": pytest.approx(MAX)}


def test_state_round_trips_through_json():
    schedule = make_schedule()
    schedule.restart_at_peak(40, 3e-3)
    state = json.loads(json.dumps(schedule.get_state()))

    other = make_schedule()
    other.set_state(state)
    np.testing.assert_array_equal(other.rate_at(range(100)), schedule.rate_at(range(100)))


def test_serializes_with_the_optimizer_including_its_state():
    schedule = make_schedule()
    schedule.restart_at_peak(40, 3e-3)
    optimizer = keras.optimizers.Adam(learning_rate=schedule)

    restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))

    assert isinstance(restored._learning_rate, Triangular2Schedule)
    np.testing.assert_array_equal(
        restored._learning_rate.rate_at(range(100)), schedule.rate_at(range(100))
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"step_size": 0}, "Received: step_size=0"),
        ({"step_size": 2.5}, "Received: step_size=2.5"),
        ({"step_size": 4, "base_lr": -1.0}, "Received: base_lr=-1.0"),
        ({"step_size": 4, "max_lr": 1e-6}, "Received: max_lr=1e-06"),
    ],
)
def test_bad_arguments_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Triangular2Schedule(**kwargs)


def test_bad_peaks_are_rejected():
    schedule = make_schedule()
    with pytest.raises(ValueError, match="Received: new_peak=1e-05"):
        schedule.restart_at_peak(5, 1e-5)
    with pytest.raises(ValueError, match="Received: factor=0"):
        schedule.scale_peak(0)
