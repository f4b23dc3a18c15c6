"""Windows are cut on the fly, targets sit exactly `horizon` steps after the last input."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from plateau_lstm.windows import first_target_row, last_inputs, make_dataset, window_count


def _collect(dataset):
    xs, ys = [], []
    for x, y in dataset:
        xs.append(x.numpy())
        ys.append(y.numpy())
    return np.concatenate(xs), np.concatenate(ys)


@settings(max_examples=25, deadline=None)
@given(
    rows=st.integers(30, 80),
    window=st.integers(1, 8),
    horizon=st.integers(1, 4),
    split=st.integers(10, 25),
)
def test_every_target_sits_horizon_steps_after_its_window(rows, window, horizon, split):
    # column 0 holds the row number, so every value says where it came from
    values = np.stack([np.arange(rows), -np.arange(rows)], axis=1).astype("float32")
    x, y = _collect(make_dataset(values, split, rows, window=window, horizon=horizon, batch_size=7))
    start = max(split, first_target_row(window, horizon))
    assert len(y) == window_count(split, rows, window, horizon) == rows - start
    np.testing.assert_array_equal(y[:, 0], np.arange(start, rows))
    np.testing.assert_array_equal(x[:, -1, 0] + horizon, y[:, 0])
    np.testing.assert_array_equal(x[:, 0, 0], y[:, 0] - horizon - window + 1)
    np.testing.assert_array_equal(
        last_inputs(values, split, rows, window, horizon), y[:, 0] - horizon
    )


def test_shuffled_training_windows_are_the_same_set():
    values = np.arange(100, dtype="float32")[:, None]
    _, plain = _collect(make_dataset(values, 0, 100, window=5, horizon=2, batch_size=8))
    _, shuffled = _collect(
        make_dataset(values, 0, 100, window=5, horizon=2, batch_size=8, shuffle=True, seed=3)
    )
    assert not np.array_equal(plain, shuffled)
    np.testing.assert_array_equal(np.sort(shuffled[:, 0]), plain[:, 0])
