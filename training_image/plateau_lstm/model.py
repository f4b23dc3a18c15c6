"""The residual LSTM forecaster of ARCHITECTURE.md.

Stacked LSTM blocks with skip connections (a projection where widths differ), batch
normalization, Swish dense blocks with He-normal init and a Glorot-initialized output.
LSTM cells keep tanh/sigmoid, recurrent_dropout 0, unroll False and use_bias True: those are
the conditions for the cuDNN kernel on GPUs, and Swish on a cell silently costs 6-25x there.
"""

from __future__ import annotations

import keras

from plateau_lstm.config import ModelConfig, TrainConfig
from plateau_lstm.layers import AddLastTarget, LastStep, SubtractLastStep


def build_model(
    config: ModelConfig,
    window: int,
    n_features: int,
    change_scale=None,
    synchronized_batch_norm: bool = False,
) -> keras.Model:
    """Build (not compile) the residual LSTM for windows of shape (window, n_features).

    With `config.forecast_change` the model sees each window relative to its last step, in
    units of `change_scale` (one per column, the std of changes on train), and predicts the
    target's change in those units; `forecasting_model` turns that back into a forecast.

    `synchronized_batch_norm` (for several replicas) normalizes with the statistics of the
    global batch instead of each replica's share: the same numbers as one device with the same
    global batch, and moving statistics that are the same on every replica, so a checkpoint
    (which holds one replica's) resumes them exactly.
    """
    regularizer = keras.regularizers.L2(config.l2)
    inputs = keras.Input(shape=(window, n_features), name="window")
    if config.forecast_change:
        scale = [1.0] * n_features if change_scale is None else [float(s) for s in change_scale]
        x = SubtractLastStep(scale=scale, name="relative_window")(inputs)
    else:
        x = inputs

    for i in range(config.lstm_layers):
        last_layer = i == config.lstm_layers - 1
        y = keras.layers.LSTM(
            config.lstm_units,
            activation="tanh",
            recurrent_activation="sigmoid",
            recurrent_dropout=0.0,
            unroll=False,
            use_bias=True,
            return_sequences=not last_layer,
            kernel_regularizer=regularizer,
            name=f"lstm_{i}",
        )(x)
        skip = LastStep(name=f"lstm_{i}_skip_last")(x) if last_layer else x
        x = _residual(skip, y, config, f"lstm_{i}", synchronized_batch_norm)

    for i in range(config.dense_layers):
        y = keras.layers.Dense(
            config.dense_units,
            activation="swish",
            kernel_initializer="he_normal",
            kernel_regularizer=regularizer,
            name=f"dense_{i}",
        )(x)
        x = _residual(x, y, config, f"dense_{i}", synchronized_batch_norm)

    outputs = keras.layers.Dense(
        1, kernel_initializer="glorot_uniform", dtype="float32", name="forecast"
    )(x)
    return keras.Model(inputs, outputs, name="residual_lstm")


def forecasting_model(model: keras.Model, config: ModelConfig, change_scale=None) -> keras.Model:
    """The model to save and serve: windows in, the target's next value out (scaled units).

    It shares every layer with the training model, so no weights are copied.
    """
    if not config.forecast_change:
        return model
    scale = 1.0 if change_scale is None else float(change_scale[0])
    forecast = AddLastTarget(target_index=0, scale=scale, name="from_last_value", dtype="float32")(
        [model.input, model.output]
    )
    return keras.Model(model.input, forecast, name="residual_lstm_forecaster")


def _residual(skip, y, config: ModelConfig, name: str, synchronized: bool):
    """y + skip (projected when widths differ), then batch norm and light dropout."""
    if skip.shape[-1] != y.shape[-1]:
        skip = keras.layers.Dense(y.shape[-1], use_bias=False, name=f"{name}_projection")(skip)
    x = keras.layers.Add(name=f"{name}_add")([skip, y])
    x = keras.layers.BatchNormalization(
        momentum=config.batch_norm_momentum,
        epsilon=config.batch_norm_epsilon,
        synchronized=synchronized,
        name=f"{name}_bn",
    )(x)
    return keras.layers.Dropout(config.dropout, name=f"{name}_dropout")(x)


def build_optimizer(config: TrainConfig, learning_rate) -> keras.optimizers.Optimizer:
    """Adam with amsgrad and gradient clipping, as the design fixes them."""
    return keras.optimizers.Adam(
        learning_rate=learning_rate,
        amsgrad=True,
        clipnorm=config.clipnorm,
        epsilon=config.adam_epsilon,
    )


def lstm_layers(model: keras.Model) -> list[keras.layers.LSTM]:
    return [layer for layer in model.layers if isinstance(layer, keras.layers.LSTM)]
