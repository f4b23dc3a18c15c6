"""Typed configuration with documented defaults; the CLI only fills these in.

The numbers are the design's (ARCHITECTURE.md, "The training algorithm"); change them here,
not in the modules that use them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class PrepareConfig:
    """How `plateau-lstm prepare` reads, cleans and splits a raw series."""

    timestamp_col: str | None = None
    """Timestamp column; None picks the first column named like a time (date, time, ds, ...)."""
    target_col: str | None = None
    """Column to forecast; None picks the first numeric column that is not the timestamp."""
    feature_cols: tuple[str, ...] = ()
    """Extra input columns, scaled per column on the training part only."""
    train_fraction: float = 0.70
    val_fraction: float = 0.15
    """The test part is what remains (0.15 by default), always the latest in time."""
    max_gap: int = 24
    """Longest run of missing steps (per column) filled by time interpolation."""
    on_duplicate: str = "error"
    """Duplicate timestamps: error, keep the last row, or average them."""
    freq: str | None = None
    """Sampling frequency (pandas alias such as 'h' or 'W-SAT'); None infers it."""

    def __post_init__(self) -> None:
        if self.on_duplicate not in ("error", "last", "mean"):
            raise ValueError(
                "on_duplicate must be error, last or mean. "
                f"Received: on_duplicate={self.on_duplicate!r}"
            )
        if not (0 < self.train_fraction < 1 and 0 < self.val_fraction < 1):
            raise ValueError(
                "train_fraction and val_fraction must lie in (0, 1). Received: "
                f"train_fraction={self.train_fraction}, val_fraction={self.val_fraction}"
            )
        if self.train_fraction + self.val_fraction >= 1:
            raise ValueError(
                "train_fraction + val_fraction must leave room for a test part. Received: "
                f"{self.train_fraction} + {self.val_fraction}"
            )
        if self.max_gap < 0:
            raise ValueError(f"max_gap must be >= 0. Received: max_gap={self.max_gap}")


@dataclass(frozen=True)
class ModelConfig:
    """The residual LSTM. LSTM cells keep tanh/sigmoid so GPUs use the cuDNN kernel."""

    lstm_layers: int = 2
    lstm_units: int = 64
    dense_layers: int = 1
    dense_units: int = 64
    dropout: float = 0.1
    l2: float = 5e-4
    batch_norm_momentum: float = 0.99
    batch_norm_epsilon: float = 1e-6
    forecast_change: bool = True
    """Predict the change from the last observed target and see each window relative to its
    last step: the model starts as persistence and is immune to a trend leaving the
    training range."""

    def __post_init__(self) -> None:
        for name in ("lstm_layers", "lstm_units", "dense_units"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1. Received: {name}={getattr(self, name)}")
        if self.dense_layers < 0:
            raise ValueError(
                f"dense_layers must be >= 0. Received: dense_layers={self.dense_layers}"
            )
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must lie in [0, 1). Received: dropout={self.dropout}")


@dataclass(frozen=True)
class ScheduleConfig:
    """Cyclical learning rate (triangular2), restarted and boosted on "act" plateaus."""

    base_lr: float = 5e-5
    max_lr: float = 2e-3
    half_cycle_epochs: float = 2.0
    """Step size of the cycle in epochs (converted to batches once the data is known)."""
    boost_factor: float = 1.5
    boost_cap: float = 4.0

    def __post_init__(self) -> None:
        if not 0 < self.base_lr < self.max_lr:
            raise ValueError(
                "Learning-rate bounds need 0 < base_lr < max_lr. Received: "
                f"base_lr={self.base_lr}, max_lr={self.max_lr}"
            )
        if self.half_cycle_epochs <= 0:
            raise ValueError(
                "half_cycle_epochs must be > 0. "
                f"Received: half_cycle_epochs={self.half_cycle_epochs}"
            )


@dataclass(frozen=True)
class PlateauConfig:
    """The trend-aware plateau detector on the fixed yardstick, validation MSE."""

    min_delta: float = 2e-4
    patience_watch: int = 3
    patience_act: int = 5
    patience_severe: int = 10
    trend_window: int = 4
    max_nan_recoveries: int = 3

    @property
    def patience(self) -> tuple[int, int, int]:
        return (self.patience_watch, self.patience_act, self.patience_severe)


@dataclass(frozen=True)
class CheckpointConfig:
    """Checkpoints under <output>/checkpoints/ and the background uploads that carry them.

    Kept apart from TrainConfig on purpose: none of this changes what is learned, so a resumed
    run may use other values than the run it continues.
    """

    keep_last: int = 3
    """Committed checkpoints kept besides the best one."""
    max_pending_uploads: int = 2
    """Checkpoints that may wait for storage; beyond that the oldest waiting one is skipped
    (the next supersedes it), so training never waits."""
    storage_wait_seconds: float = 300.0
    """How long the end of a run waits for storage (retrying) before it fails."""

    def __post_init__(self) -> None:
        for name in ("keep_last", "max_pending_uploads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1. Received: {name}={getattr(self, name)}")
        if not self.storage_wait_seconds >= 0:
            raise ValueError(
                "storage_wait_seconds must be >= 0. "
                f"Received: storage_wait_seconds={self.storage_wait_seconds}"
            )


@dataclass(frozen=True)
class TrainConfig:
    """One training run: data windows, optimisation and the plateau machinery."""

    epochs: int = 60
    batch_size: int = 64
    window: int = 48
    horizon: int = 1
    seed: int = 42
    model: ModelConfig = field(default_factory=ModelConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    plateau: PlateauConfig = field(default_factory=PlateauConfig)
    loss_order: tuple[str, ...] = ("huber", "mse", "mae", "log_cosh")
    clipnorm: float = 0.8
    adam_epsilon: float = 1e-7
    lr_scaling: str = "sqrt"
    """How the learning-rate bounds follow the global batch on several replicas: sqrt (times
    sqrt(replicas)), linear (times replicas) or none. See distribution.scaled_learning_rates."""
    mixed_precision: bool = False
    """float16 compute with float32 weights and Keras' dynamic loss scaling (GPUs)."""

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "window", "horizon"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1. Received: {name}={getattr(self, name)}")
        if self.lr_scaling not in ("sqrt", "linear", "none"):
            raise ValueError(
                f"lr_scaling must be sqrt, linear or none. Received: lr_scaling={self.lr_scaling!r}"
            )

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class MetricsConfig:
    """Where a training run reports its Prometheus metrics (see metrics.py).

    Kept apart from TrainConfig on purpose: none of this changes what is learned, so a retried
    or resumed run may report elsewhere without becoming "a model trained with other options".
    """

    port: int = 9464
    """HTTP port that serves /metrics while training runs; 0 turns the endpoint off."""
    addr: str = "0.0.0.0"
    """Address the endpoint binds; every interface by default so Prometheus can scrape a pod."""
    pushgateway: str | None = None
    """Pushgateway URL pushed to at every epoch end and at the end; None pushes nothing."""
    model_name: str = "plateau-lstm"
    """The Pushgateway grouping key: one group per model, never per run (groups live forever)."""
    push_timeout: float = 2.0
    """Seconds one push may take before it is given up and retried at the next epoch end."""

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must lie in [0, 65535]. Received: port={self.port}")
        if not self.model_name or not self.model_name.strip():
            raise ValueError(f"model_name must not be empty. Received: {self.model_name!r}")
        if not 0 < self.push_timeout <= 2:
            raise ValueError(
                "push_timeout must lie in (0, 2] so a slow Pushgateway never holds a run up. "
                f"Received: push_timeout={self.push_timeout}"
            )
