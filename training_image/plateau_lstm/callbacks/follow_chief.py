"""Makes every worker of a multi-worker run train on the chief's plateau decisions."""

import logging
import numbers

import keras

from plateau_lstm.distribution import Distribution, broadcast_from_chief
from plateau_lstm.losses import AdaptiveLoss
from plateau_lstm.schedules import Triangular2Schedule

_logger = logging.getLogger("plateau_lstm")


class FollowChief(keras.callbacks.Callback):
    """Hands the chief's epoch numbers and its rate and loss decisions to every worker.

    Under `MultiWorkerMirroredStrategy` every worker runs its own copy of the callbacks. Two
    collectives keep them one run:

    - at each epoch end, before any other callback reads them, the epoch's numbers (`loss`,
      `val_mse`, ...) are replaced by the chief's, so the plateau detector, the NaN guard and
      the history of every worker see exactly what the chief sees;
    - at each epoch start (and so before the first step after a decision), the learning-rate
      cycle's origin and peak and the active loss are taken from the chief: what the chief
      decided is what every replica trains with, from the same step on. A worker whose own
      copy disagreed logs a warning and follows the chief.

    For one process (no strategy, or `MirroredStrategy`, whose replicas share one set of
    callbacks) it does nothing. Put it first in the callback list.

    Example:

    ```python
    distribution = choose("multi-worker")
    with distribution.scope():
        schedule, loss = Triangular2Schedule(...), AdaptiveLoss()
        model = build_model(...)
        model.compile(optimizer=build_optimizer(config, schedule), loss=loss)
    model.fit(..., callbacks=[FollowChief(distribution, schedule, loss), detector, restarts])
    ```

    Args:
        distribution: the run's `Distribution`. Required.
        schedule: the `Triangular2Schedule` the optimizer follows. Required.
        loss: the `AdaptiveLoss` the model is compiled with. Required.
    """

    def __init__(self, distribution, schedule, loss):
        super().__init__()
        if not isinstance(distribution, Distribution):
            raise ValueError(
                f"`distribution` must be a Distribution. Received: distribution={distribution!r}"
            )
        if not isinstance(schedule, Triangular2Schedule):
            raise ValueError(
                f"`schedule` must be a Triangular2Schedule. Received: schedule={schedule!r}"
            )
        if not isinstance(loss, AdaptiveLoss):
            raise ValueError(f"`loss` must be an AdaptiveLoss. Received: loss={loss!r}")
        self.distribution = distribution
        self.schedule = schedule
        self.loss = loss
        self.corrections = 0

    @property
    def active(self):
        return self.distribution.kind == "multi-worker"

    def on_train_begin(self, logs=None):
        self.corrections = 0

    def on_epoch_begin(self, epoch, logs=None):
        if not self.active:
            return
        mine = [
            float(self.schedule.current_origin),
            self.schedule.current_peak,
            float(self.loss.active_index),
        ]
        origin, peak, index = broadcast_from_chief(self.distribution, mine)
        if [origin, peak, index] != mine:
            self.corrections += 1
            _logger.warning(
                "train: %s: epoch %d: took the chief's rate cycle and loss (origin %d, peak %.4g, "
                "loss %s) over its own (origin %d, peak %.4g, loss %s)",
                self.distribution.worker,
                epoch + 1,
                origin,
                peak,
                self.loss.order[int(index)],
                mine[0],
                mine[1],
                self.loss.active_name,
            )
            self.schedule.set_state({"origin": int(origin), "peak": peak})
            self.loss.switch_to(int(index))

    def on_epoch_end(self, epoch, logs=None):
        if not self.active or logs is None:
            return
        # Sorted: every worker must send the same numbers in the same order.
        keys = sorted(k for k, v in logs.items() if _is_number(v))
        chief = broadcast_from_chief(self.distribution, [float(logs[k]) for k in keys])
        # In place: Keras hands this same dict to the callbacks that follow.
        logs.update(zip(keys, chief, strict=True))


def _is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)
