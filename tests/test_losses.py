import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from plateau_lstm.losses import AdaptiveLoss

Y_TRUE = np.zeros((4, 1), dtype="float32")
Y_PRED = np.full((4, 1), 2.0, dtype="float32")
# Error 2 everywhere: Huber (delta 1) = 0.5 + (2 - 1), MSE = 4, MAE = 2, LogCosh = log(cosh(2)).
EXPECTED = {"huber": 1.5, "mse": 4.0, "mae": 2.0, "log_cosh": math.log(math.cosh(2.0))}


def test_each_kind_computes_its_loss():
    loss = AdaptiveLoss()
    assert loss.order == ("huber", "mse", "mae", "log_cosh")
    for index, name in enumerate(loss.order):
        loss.switch_to(index)
        assert loss.active_name == name
        assert float(loss(Y_TRUE, Y_PRED)) == pytest.approx(EXPECTED[name], rel=1e-6)


def test_next_advances_in_order_and_stays_on_the_last():
    loss = AdaptiveLoss()
    names = [loss.active_name]
    while loss.next():
        names.append(loss.active_name)
    assert names == ["huber", "mse", "mae", "log_cosh"]
    assert loss.next() is False
    assert loss.active_name == "log_cosh"


def test_switching_changes_the_value_without_retracing():
    loss = AdaptiveLoss()
    traces = []

    @tf.function
    def compute(y_true, y_pred):
        traces.append(1)
        return loss(y_true, y_pred)

    values = [float(compute(Y_TRUE, Y_PRED))]
    while loss.next():
        values.append(float(compute(Y_TRUE, Y_PRED)))

    assert len(traces) == 1
    assert values == pytest.approx([EXPECTED[name] for name in loss.order], rel=1e-6)


def test_gradients_follow_the_active_kind():
    loss = AdaptiveLoss()
    y_pred = tf.Variable(Y_PRED)
    gradients = []
    for _ in range(2):
        with tf.GradientTape() as tape:
            value = loss(Y_TRUE, y_pred)
        gradients.append(float(tf.reduce_sum(tape.gradient(value, y_pred))))
        loss.next()
    # d/dpred of mean Huber (linear part) is 1/4 per sample; of mean MSE it is 2 * 2 / 4.
    assert gradients == pytest.approx([1.0, 4.0])


def test_custom_order_and_serialization_keep_the_active_kind():
    loss = AdaptiveLoss(order=("mse", "mae"))
    loss.next()
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(restored, AdaptiveLoss)
    assert restored.order == ("mse", "mae")
    assert restored.active_name == "mae"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"order": ("huber", "l1")}, "Received: order=\\('huber', 'l1'\\)"),
        ({"order": ("mse", "mse")}, "Received: order=\\('mse', 'mse'\\)"),
        ({"order": "mse"}, "Received: order='mse'"),
        ({"index": 4}, "Received: index=4"),
    ],
)
def test_bad_arguments_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AdaptiveLoss(**kwargs)


def test_switch_to_rejects_a_position_outside_the_order():
    with pytest.raises(ValueError, match="Received: index=-1"):
        AdaptiveLoss().switch_to(-1)
