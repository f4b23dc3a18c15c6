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


@settings(max_examples=8, deadline=None)
@given(
    rows=st.integers(30, 120),
    window=st.integers(1, 8),
    horizon=st.integers(1, 4),
    batch_size=st.integers(1, 16),
    seed=st.integers(0, 2**31 - 1),
)
def test_shuffled_epochs_hold_every_window_once_in_a_repeatable_new_order(
    rows, window, horizon, batch_size, seed
):
    values = np.stack([np.arange(rows), np.arange(rows) * 10], axis=1).astype("float32")

    def dataset():
        return make_dataset(
            values,
            5,
            rows,
            window=window,
            horizon=horizon,
            batch_size=batch_size,
            shuffle=True,
            seed=seed,
        )

    shuffled = dataset()
    epochs = [_collect(shuffled) for _ in range(2)]
    start = max(5, first_target_row(window, horizon))
    for x, y in epochs:
        np.testing.assert_array_equal(np.sort(y[:, 0]), np.arange(start, rows))
        np.testing.assert_array_equal(x[:, -1, 0] + horizon, y[:, 0])  # every pair intact
        np.testing.assert_array_equal(x[:, :, 1], x[:, :, 0] * 10)  # all columns are inputs
    if rows - start >= 10:
        assert not np.array_equal(epochs[0][1], epochs[1][1])  # a new order every epoch
    again = dataset()
    for _, y in epochs:  # the same seed replays the same orders
        np.testing.assert_array_equal(_collect(again)[1], y)
    sizes = [len(y) for _, y in shuffled]
    assert sizes[:-1] == [batch_size] * (len(sizes) - 1) and 0 < sizes[-1] <= batch_size


def test_change_target_is_the_step_from_the_last_input_divided_by_the_scale():
    values = (np.arange(50, dtype="float32") ** 2)[:, None]
    x, y = _collect(
        make_dataset(values, 0, 50, window=3, horizon=2, batch_size=4, change_scale=4.0)
    )
    np.testing.assert_allclose(y[:, 0], (values[4:50, 0] - x[:, -1, 0]) / 4.0)
