"""Sliding windows cut on the fly from one (rows, features) array.

Nothing of size windows x window length is ever materialized: each batch is gathered from
the array by index inside the tf.data pipeline. Validation and test windows may take their
inputs from the rows before their split (those are past observations), but every target
lies inside its own split.
"""

from __future__ import annotations

import numpy as np

TARGET_INDEX = 0
"""The target is always the first input column (prepare writes it first)."""


def first_target_row(window: int, horizon: int) -> int:
    """The first row that has a full window of inputs ending `horizon` steps before it."""
    return window + horizon - 1


def window_count(start: int, end: int, window: int, horizon: int) -> int:
    """How many windows have their target in rows [start, end)."""
    return max(0, end - max(start, first_target_row(window, horizon)))


def make_dataset(
    values: np.ndarray,
    start: int,
    end: int,
    *,
    window: int,
    horizon: int,
    batch_size: int,
    shuffle: bool = False,
    seed: int | None = None,
    change_scale: float | None = None,
):
    """A tf.data.Dataset of (inputs, target) whose targets are rows [start, end) of column 0.

    The window for target row t is rows [t - horizon - window + 1, t - horizon], so the
    target sits exactly `horizon` steps after the window's last input. Batches are gathered
    from the array by index, so memory grows with rows, never rows x window; shuffling
    reorders those indices afresh every epoch. With `change_scale`, the target becomes the
    change from the window's last observed target divided by it.
    """
    import tensorflow as tf

    start = max(start, first_target_row(window, horizon))
    if end <= start:
        raise ValueError(
            f"No windows: rows [{start}, {end}) are too few for window={window}, horizon={horizon}"
        )
    first_input = start - horizon - window + 1
    inputs = tf.constant(np.asarray(values[first_input : end - horizon], dtype="float32"))
    targets = tf.constant(
        np.asarray(values[start:end, TARGET_INDEX : TARGET_INDEX + 1], dtype="float32")
    )
    offsets = tf.range(window, dtype=tf.int64)
    scale = None if change_scale is None else tf.constant(float(change_scale), tf.float32)

    def gather(indices):
        batch = tf.gather(inputs, indices[:, None] + offsets[None, :])
        target = tf.gather(targets, indices)
        if scale is not None:
            target = (target - batch[:, -1, TARGET_INDEX : TARGET_INDEX + 1]) / scale
        return batch, target

    count = end - start
    dataset = tf.data.Dataset.range(count)
    if shuffle:
        dataset = dataset.shuffle(count, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size).map(gather, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def change_scales(values: np.ndarray, start: int, end: int, horizon: int) -> np.ndarray:
    """Per column, the std of `horizon`-step changes over rows [start, end) (1 where flat).

    Dividing changes by this puts the training target near unit scale, where a model that
    predicts no change (persistence) scores a validation MSE of about 1.
    """
    part = np.asarray(values[start:end], dtype="float64")
    scales = (part[horizon:] - part[:-horizon]).std(axis=0)
    return np.where(scales > 0, scales, 1.0)


def last_inputs(values: np.ndarray, start: int, end: int, window: int, horizon: int) -> np.ndarray:
    """The last observed target of each window with its target in [start, end): persistence."""
    start = max(start, first_target_row(window, horizon))
    return np.asarray(values[start - horizon : end - horizon, TARGET_INDEX], dtype="float64")
