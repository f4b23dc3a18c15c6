"""Which TensorFlow distribution strategy a run trains under, and who its chief is.

`--distribution`:

- `none`: TensorFlow's default strategy (one device).
- `mirrored`: `MirroredStrategy` over every GPU of the machine, or over the logical CPU devices
  when there is no GPU (how the tests and the scaling bench run it on a CPU).
- `multi-worker`: `MultiWorkerMirroredStrategy` across the processes that `TF_CONFIG` names
  (a Kubeflow TFJob sets it in every pod). Worker 0 is the chief unless a `chief` task exists.
- `auto` (the default): multi-worker when `TF_CONFIG` names more than one task, mirrored when
  more than one GPU is visible, none otherwise.

Every replica sees `batch_size` windows per step, so the global batch is `batch_size` times the
replicas; the learning-rate bounds follow it by `scaled_learning_rates`.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass

from plateau_lstm.errors import UserError

log = logging.getLogger("plateau_lstm")

CHOICES = ("auto", "none", "mirrored", "multi-worker")
LR_SCALING = ("sqrt", "linear", "none")


@dataclass(frozen=True)
class Distribution:
    """The strategy a run trains under and this process's part in it."""

    strategy: object  # tf.distribute.Strategy
    kind: str  # none, mirrored or multi-worker
    replicas: int
    is_chief: bool
    worker: str  # "worker 1 of 2", "chief", or "" for a single process

    def scope(self):
        return self.strategy.scope()


def tf_config() -> dict:
    """TF_CONFIG as a dict; {} when unset. A malformed one is a clear error, not a hang."""
    raw = os.environ.get("TF_CONFIG", "").strip()
    if not raw:
        return {}
    try:
        config = json.loads(raw)
        config["cluster"], config["task"]["type"], int(config["task"]["index"])
    except (ValueError, KeyError, TypeError):
        raise UserError(
            'TF_CONFIG must be JSON like {"cluster": {"worker": ["host:port", ...]}, '
            f'"task": {{"type": "worker", "index": 0}}}}. Received: {raw[:200]!r}'
        ) from None
    return config


def choose(name: str) -> Distribution:
    """Build the strategy `--distribution name` asks for; call before any other TF work."""
    import tensorflow as tf

    if name not in CHOICES:
        raise UserError(f"--distribution must be one of {', '.join(CHOICES)}. Received: {name!r}")
    cluster = tf_config()
    tasks = sum(len(hosts) for hosts in cluster.get("cluster", {}).values())
    if name == "auto":
        # Physical devices: listing logical ones starts TensorFlow's runtime, after which
        # collective ops (multi-worker) can no longer be configured.
        gpus = len(tf.config.list_physical_devices("GPU"))
        name = "multi-worker" if tasks > 1 else "mirrored" if gpus > 1 else "none"
    if name == "none":
        return Distribution(tf.distribute.get_strategy(), "none", 1, True, "")
    if name == "mirrored":
        devices = [d.name for d in tf.config.list_logical_devices("GPU")] or [
            d.name for d in tf.config.list_logical_devices("CPU")
        ]
        strategy = tf.distribute.MirroredStrategy(devices=devices)
        return Distribution(strategy, "mirrored", strategy.num_replicas_in_sync, True, "")
    if not cluster:
        raise UserError(
            "--distribution multi-worker needs TF_CONFIG, which names every worker and this "
            "process's place among them (a TFJob sets it). Set it, or use --distribution auto."
        )
    task_type, index = cluster["task"]["type"], int(cluster["task"]["index"])
    if task_type not in ("chief", "worker"):
        raise UserError(
            f"TF_CONFIG: task type {task_type!r} does not train; plateau-lstm runs chief and "
            "worker tasks only."
        )
    strategy = tf.distribute.MultiWorkerMirroredStrategy(
        communication_options=tf.distribute.experimental.CommunicationOptions(
            # AUTO: ring all-reduce over gRPC, on the port TF_CONFIG names, the one port the
            # NetworkPolicy opens between workers. NCCL would be faster between GPU nodes but
            # needs ephemeral ports open between them.
            implementation=tf.distribute.experimental.CommunicationImplementation.AUTO
        )
    )
    chief = task_type == "chief" or ("chief" not in cluster["cluster"] and index == 0)
    role = "chief" if task_type == "chief" else f"worker {index} of {tasks}"
    if chief and task_type == "worker":
        role += " (chief)"
    return Distribution(strategy, "multi-worker", strategy.num_replicas_in_sync, chief, role)


def scaled_learning_rates(base_lr: float, max_lr: float, replicas: int, rule: str):
    """The cycle's bounds for `replicas` times the batch.

    `sqrt` (the default) multiplies both by sqrt(replicas): the gradient noise of a k-times
    batch falls by sqrt(k), and for Adam, whose steps are already normalized per weight, that
    is the rule that keeps the noise of a step the same (linear scaling, right for SGD, is
    known to overshoot with Adam at large k). `linear` multiplies by replicas; `none` keeps
    them. The ratio max_lr / base_lr, and so the cycle's shape, never changes.
    """
    if rule not in LR_SCALING:
        raise ValueError(f"lr_scaling must be one of {', '.join(LR_SCALING)}. Received: {rule!r}")
    factor = {"sqrt": math.sqrt(replicas), "linear": float(replicas), "none": 1.0}[rule]
    return base_lr * factor, max_lr * factor


def broadcast_from_chief(distribution: Distribution, values: list[float]) -> list[float]:
    """`values` as the chief has them, on every worker (a no-op for one process).

    Replica 0 lives on the chief; it contributes its values and every other replica zeros,
    and a sum across all replicas hands the chief's numbers to everyone. NaN and inf pass
    unchanged (zeros are chosen by position, never multiplied in). Every worker must call it
    at the same point: it is a collective.
    """
    import tensorflow as tf

    # One process holds every replica otherwise, and they all see the same numbers already.
    if distribution.kind != "multi-worker" or not values:
        return list(values)
    summed = _chief_broadcaster(distribution.strategy)(tf.constant(values, dtype=tf.float64))
    return [float(v) for v in summed.numpy()]


_BROADCASTERS: dict[int, object] = {}


def _chief_broadcaster(strategy):
    """One traced function per strategy: run eagerly, each call would warn and be slow."""
    import tensorflow as tf

    if id(strategy) not in _BROADCASTERS:

        @tf.function
        def broadcast(values):
            def chief_or_zeros():
                replica = tf.distribute.get_replica_context().replica_id_in_sync_group
                return tf.where(tf.equal(replica, 0), values, tf.zeros_like(values))

            per_replica = strategy.run(chief_or_zeros)
            return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

        _BROADCASTERS[id(strategy)] = broadcast
    return _BROADCASTERS[id(strategy)]


def split_cpu(devices: int) -> None:
    """Make the CPU `devices` logical devices, so `mirrored` has replicas on a machine without
    GPUs (the tests and the scaling bench). Call before TensorFlow has run anything."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(devices)]
    )
