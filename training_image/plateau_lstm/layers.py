"""Small named layers instead of Lambda, so `model.keras` loads with safe_mode=True."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="plateau_lstm")
class LastStep(keras.layers.Layer):
    """The last time step of a sequence: (batch, time, features) -> (batch, features)."""

    def call(self, inputs):
        return inputs[:, -1, :]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2])


@keras.saving.register_keras_serializable(package="plateau_lstm")
class SubtractLastStep(keras.layers.Layer):
    """Each window relative to its own last step, divided by a per-column scale.

    The level of the series then does not matter: a trend that leaves the training range
    would otherwise push test inputs where the LSTM's tanh saturates.

    Args:
        scale: one divisor per input column (the std of changes on train). Defaults to 1.0.
    """

    def __init__(self, scale=1.0, **kwargs):
        super().__init__(**kwargs)
        self.scale = [float(x) for x in scale] if isinstance(scale, list | tuple) else float(scale)

    def call(self, inputs):
        relative = inputs - ops.expand_dims(inputs[:, -1, :], axis=1)
        return relative / ops.convert_to_tensor(self.scale, dtype=inputs.dtype)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


@keras.saving.register_keras_serializable(package="plateau_lstm")
class AddLastTarget(keras.layers.Layer):
    """Turns a predicted change into a forecast: last observed target + scale * change.

    Args:
        target_index: column of the target in the input window. Defaults to 0.
        scale: the unit of the predicted change. Defaults to 1.0.
    """

    def __init__(self, target_index: int = 0, scale: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.target_index = target_index
        self.scale = float(scale)

    def call(self, inputs):
        window, change = inputs
        last = window[:, -1, self.target_index : self.target_index + 1]
        return ops.cast(last, change.dtype) + self.scale * change

    def compute_output_shape(self, input_shapes):
        return input_shapes[1]

    def get_config(self):
        return {**super().get_config(), "target_index": self.target_index, "scale": self.scale}
