"""The residual LSTM: cuDNN eligibility, residual structure, and a safe round trip."""

import keras
import numpy as np
import pytest

from plateau_lstm.config import ModelConfig, TrainConfig
from plateau_lstm.layers import AddLastTarget, SubtractLastStep
from plateau_lstm.model import build_model, build_optimizer, forecasting_model, lstm_layers


@pytest.mark.parametrize("layers,units", [(1, 8), (2, 16), (3, 8)])
def test_lstm_cells_stay_cudnn_eligible(layers, units):
    # Swish (or any non-tanh activation) on a cell silently falls back from cuDNN: 6-25x slower.
    model = build_model(ModelConfig(lstm_layers=layers, lstm_units=units, dense_units=8), 12, 3)
    cells = lstm_layers(model)
    assert len(cells) == layers
    for layer in cells:
        assert layer.activation is keras.activations.tanh
        assert layer.recurrent_activation is keras.activations.sigmoid
        assert layer.recurrent_dropout == 0
        assert layer.unroll is False
        assert layer.use_bias is True


def test_structure_has_skips_batch_norm_swish_and_init():
    config = ModelConfig(lstm_layers=2, lstm_units=16, dense_layers=1, dense_units=8)
    model = build_model(config, window=10, n_features=2)
    names = [layer.name for layer in model.layers]
    assert "lstm_0_add" in names and "lstm_1_add" in names and "dense_0_add" in names
    # widths differ (2 -> 16 and 16 -> 8): a projection keeps the skip possible
    assert "lstm_0_projection" in names and "dense_0_projection" in names
    bn = model.get_layer("lstm_0_bn")
    assert bn.momentum == 0.99 and bn.epsilon == 1e-6
    dense = model.get_layer("dense_0")
    assert dense.activation is keras.activations.swish
    assert isinstance(dense.kernel_initializer, keras.initializers.HeNormal)
    assert isinstance(
        model.get_layer("forecast").kernel_initializer, keras.initializers.GlorotUniform
    )
    assert model.get_layer("lstm_0").kernel_regularizer.l2 == pytest.approx(5e-4)


def test_forecast_change_is_level_free():
    # Adding a constant to a whole window moves the forecast by exactly that constant: a trend
    # that leaves the training range does not push the LSTM into saturation.
    config = ModelConfig(lstm_units=8, dense_units=8)
    model = forecasting_model(
        build_model(config, 6, 2, change_scale=[0.5, 2.0]), config, [0.5, 2.0]
    )
    rng = np.random.default_rng(0)
    window = rng.normal(size=(4, 6, 2)).astype("float32")
    shifted = window + 5.0
    base = model.predict(window, verbose=0)
    moved = model.predict(shifted, verbose=0)
    np.testing.assert_allclose(moved - base, 5.0, atol=1e-4)


def test_saved_model_has_no_lambda_and_loads_in_safe_mode(tmp_path):
    config = ModelConfig(lstm_units=8, dense_units=8)
    model = forecasting_model(build_model(config, 6, 1, change_scale=[0.3]), config, [0.3])
    path = tmp_path / "model.keras"
    model.save(path)
    assert not any(isinstance(layer, keras.layers.Lambda) for layer in model.layers)
    loaded = keras.saving.load_model(path, safe_mode=True, compile=False)
    x = np.random.default_rng(1).normal(size=(3, 6, 1)).astype("float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    assert any(isinstance(layer, SubtractLastStep) for layer in loaded.layers)
    assert any(isinstance(layer, AddLastTarget) for layer in loaded.layers)
    assert loaded.get_layer("from_last_value").scale == pytest.approx(0.3)


def test_optimizer_is_adam_with_amsgrad_and_clipping():
    optimizer = build_optimizer(TrainConfig(), 1e-3)
    assert isinstance(optimizer, keras.optimizers.Adam)
    assert optimizer.amsgrad is True
    assert optimizer.clipnorm == 0.8
    assert optimizer.epsilon == 1e-7
