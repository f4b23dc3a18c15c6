"""A training loss that can change kind mid-training without recompiling the model."""

import numbers

import keras
import numpy as np
from keras import ops

_LOSS_FUNCTIONS = {
    "huber": lambda y_true, y_pred: keras.losses.huber(y_true, y_pred, delta=1.0),
    "mse": keras.losses.mean_squared_error,
    "mae": keras.losses.mean_absolute_error,
    "log_cosh": keras.losses.log_cosh,
}
_DEFAULT_ORDER = ("huber", "mse", "mae", "log_cosh")


@keras.saving.register_keras_serializable(package="plateau_lstm")
class AdaptiveLoss(keras.losses.Loss):
    """Loss that steps through several kinds (Huber -> MSE -> MAE -> LogCosh) on demand.

    Changing the loss's shape of the error surface helps an optimizer that is stuck
    on a plateau. The active kind is an index held in a non-trainable Keras
    variable and chosen inside the graph, so `switch_to` and
    `next` take effect on the next batch without retracing or recompiling: the
    optimizer keeps its moments and its step count.

    Losses of different kinds are not comparable, so judge progress on a fixed
    metric (validation MSE), not on this loss.

    Example:

    ```python
    loss = AdaptiveLoss()
    model.compile(optimizer="adam", loss=loss, metrics=["mse"])
    loss.next()  # True: now "mse"
    loss.active_name  # "mse"
    ```

    Args:
        order: Names of the kinds, in the order they are tried; each one of
            `"huber"` (delta 1.0), `"mse"`, `"mae"`, `"log_cosh"`, no repeats.
            Defaults to `("huber", "mse", "mae", "log_cosh")`.
        index: Position in `order` to start from. Defaults to `0`.
        name: Name of the loss. Defaults to `"adaptive_loss"`.
        reduction: Keras reduction of the per-sample losses. Defaults to
            `"sum_over_batch_size"`.
        dtype: Dtype of the loss computation. Defaults to `None`
            (`keras.backend.floatx()`).
    """

    def __init__(
        self,
        order=_DEFAULT_ORDER,
        index=0,
        name="adaptive_loss",
        reduction="sum_over_batch_size",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        if isinstance(order, str) or not order:
            raise ValueError(
                f"`order` must be a non-empty sequence of loss names. Received: order={order!r}"
            )
        order = tuple(order)
        unknown = [kind for kind in order if kind not in _LOSS_FUNCTIONS]
        if unknown:
            raise ValueError(
                f"Unknown loss names {unknown}; use some of {list(_LOSS_FUNCTIONS)}. "
                f"Received: order={order!r}"
            )
        if len(set(order)) != len(order):
            raise ValueError(f"`order` must not repeat a loss. Received: order={order!r}")
        self.order = order
        self._check_index(index, "index")
        self.index = keras.Variable(
            int(index), dtype="int32", trainable=False, name=f"{self.name}_index"
        )
        self._branches = [_LOSS_FUNCTIONS[kind] for kind in order]

    def _check_index(self, index, argument):
        if (
            isinstance(index, bool)
            or not isinstance(index, numbers.Integral)
            or not 0 <= index < len(self.order)
        ):
            raise ValueError(
                f"`{argument}` must be an int in [0, {len(self.order) - 1}] "
                f"(positions in {self.order}). Received: {argument}={index!r}"
            )

    def call(self, y_true, y_pred):
        # Every kind is computed and the active one is gathered by the index variable.
        # The kinds are a few elementwise ops, far cheaper than the model, and unlike
        # `ops.switch` (tf.switch_case) the gather lowers cleanly with and without XLA.
        # The gradient reaches only the active kind; the others get exact zeros, and
        # all four have bounded or linear derivatives, so no 0 * inf turns into NaN.
        per_kind = ops.stack([loss(y_true, y_pred) for loss in self._branches], axis=0)
        return ops.take(per_kind, self.index, axis=0)

    @property
    def active_index(self):
        """The position of the active kind in `order`, as a Python int."""
        return int(np.asarray(ops.convert_to_numpy(self.index)))

    @property
    def active_name(self):
        """The name of the active kind, such as `"huber"`."""
        return self.order[self.active_index]

    def switch_to(self, index):
        """Makes `order[index]` the active kind from the next batch on.

        Args:
            index: Position in `order`.
        """
        self._check_index(index, "index")
        self.index.assign(int(index))

    def next(self):
        """Advances to the next kind in `order`.

        Returns:
            `True` if it advanced, `False` if the last kind was already active
            (it then stays on the last kind).
        """
        position = self.active_index
        if position + 1 >= len(self.order):
            return False
        self.index.assign(position + 1)
        return True

    def get_config(self):
        config = super().get_config()
        config.update({"order": list(self.order), "index": self.active_index})
        return config
