"""Two workarounds that let Keras 3's `fit` train under MultiWorkerMirroredStrategy.

Keras 3's TensorFlow trainer assumes in two places that one process holds every replica
(keras-team/keras#20585, open for Keras 3.15):

1. `fit` starts by averaging the first distributed batch across replicas, to build what is
   not built yet: `strategy.reduce("MEAN", (x, y))`, which MultiWorkerMirroredStrategy cannot
   do for an (x, y) pair. Building the model, loss, metrics and optimizer beforehand, in the
   strategy's scope, leaves that step nothing to do, and it is skipped.
2. Every step averages its logs across replicas with `strategy.reduce("MEAN", v, axis=0)`,
   which fails for the scalar losses and metrics under MultiWorkerMirroredStrategy. Scalars
   are averaged whole (axis=None) instead: the mean over replicas of each replica's value,
   what MirroredStrategy computes for them on one machine.

Both are applied only under `--distribution multi-worker`. tests/test_distribution.py trains
two real workers, so a Keras release that moves either place fails there, not in production.
"""

from __future__ import annotations

import tensorflow as tf
from keras.src.backend.tensorflow import trainer as tf_trainer


def prepare_for_fit(model, strategy, dataset) -> None:
    """Build `model`'s training state from one local batch, then make fit skip its own build."""
    patch_scalar_log_reduction()
    x, y = next(iter(dataset.take(1)))
    with strategy.scope():
        model._symbolic_build(data_batch=(x, y))  # noqa: SLF001
    model._maybe_symbolic_build = _already_built  # noqa: SLF001


def _already_built(iterator=None, data_batch=None) -> None:
    return None


def patch_scalar_log_reduction() -> None:
    """Make the trainer average scalar logs with axis=None under multi-worker (idempotent)."""
    original = tf_trainer.reduce_per_replica
    if getattr(original, "plateau_lstm_patch", False):
        return
    is_multi_worker = tf_trainer._collective_all_reduce_multi_worker  # noqa: SLF001

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and is_multi_worker(strategy):
            return tf.nest.map_structure(
                lambda v: strategy.reduce("MEAN", v, axis=None if _rank(strategy, v) == 0 else 0),
                values,
            )
        return original(values, strategy, reduction)

    reduce_per_replica.plateau_lstm_patch = True
    tf_trainer.reduce_per_replica = reduce_per_replica


def _rank(strategy, value) -> int:
    # With several devices per worker the value is a PerReplica, whose parts have the rank.
    return strategy.experimental_local_results(value)[0].shape.rank
