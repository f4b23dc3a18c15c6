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
    from one copy of the rows by index, so memory grows with rows, never rows x window;
    shuffling draws a fresh permutation of the window indices every epoch. With
    `change_scale`, the target becomes the change from the window's last observed target
    divided by it.
    """
    import tensorflow as tf

    start = max(start, first_target_row(window, horizon))
    if end <= start:
        raise ValueError(
            f"No windows: rows [{start}, {end}) are too few for window={window}, horizon={horizon}"
        )
    first_input = start - horizon - window + 1
    # Window i covers rows [i, i + window) of `rows` and its target is row i + window - 1 +
    # horizon: the inputs and the targets come from the same single copy.
    rows = tf.constant(np.asarray(values[first_input:end], dtype="float32"))
    offsets = tf.range(window, dtype=tf.int64)
    target_offset = window - 1 + horizon
    scale = None if change_scale is None else tf.constant(float(change_scale), tf.float32)

    def gather(indices):
        batch = tf.gather(rows, indices[:, None] + offsets[None, :])
        target = tf.gather(rows, indices + target_offset)[:, TARGET_INDEX : TARGET_INDEX + 1]
        if scale is not None:
            target = (target - batch[:, -1, TARGET_INDEX : TARGET_INDEX + 1]) / scale
        return batch, target

    count = end - start
    batches = _shuffled_batches(count, batch_size, seed) if shuffle else _batches(count, batch_size)
    dataset = batches.map(gather, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def _batches(count: int, batch_size: int):
    """Window indices [0, count) in order, one int64 vector per batch, made on demand."""
    import tensorflow as tf

    return tf.data.Dataset.range(0, count, batch_size).map(
        lambda first: tf.range(first, tf.minimum(first + batch_size, count))
    )


def _shuffled_batches(count: int, batch_size: int, seed: int | None):
    """Window indices [0, count) in a new random order every epoch, one vector per batch.

    One permutation tensor per epoch costs 8 bytes a window and one kernel call. tf.data's
    `shuffle` would hold every index as an element of its own (about 200 bytes each) and
    refill that buffer one element at a time before each epoch's first batch: gigabytes and
    seconds per epoch at ten million windows.
    """
    import tensorflow as tf

    full = count // batch_size * batch_size

    def split(permutation):
        parts = tf.data.Dataset.from_tensor_slices(tf.reshape(permutation[:full], [-1, batch_size]))
        if full < count:  # the last, shorter batch
            parts = parts.concatenate(tf.data.Dataset.from_tensors(permutation[full:]))
        return parts

    # Dataset.random re-draws its seed every time the dataset is iterated (every epoch), from
    # the one `seed`: the order differs per epoch but repeats run by run.
    epoch_seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).take(1)
    permutations = epoch_seeds.map(
        lambda s: tf.random.experimental.stateless_shuffle(
            tf.range(count, dtype=tf.int64), seed=tf.stack([s, tf.constant(0, tf.int64)])
        )
    )
    return permutations.flat_map(split)


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
