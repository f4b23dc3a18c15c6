"""What the timing benches share: the default model compiled and the plateau callbacks wired as
`plateau-lstm train` does it, so each bench times the real thing and differs only in its arm."""

from __future__ import annotations

from plateau_lstm.config import TrainConfig
from plateau_lstm.windows import change_scales


def compiled_model(prepared, config: TrainConfig, steps_per_epoch: int):
    """(model, schedule, loss): the residual LSTM compiled with AdaptiveLoss and the cycle."""
    import keras

    from plateau_lstm.callbacks import AdaptiveLoss, Triangular2Schedule
    from plateau_lstm.model import build_model, build_optimizer

    keras.utils.set_random_seed(config.seed)
    scales = change_scales(prepared.values, *prepared.bounds["train"], config.horizon)
    schedule = Triangular2Schedule(step_size=2 * steps_per_epoch)
    loss = AdaptiveLoss()
    model = build_model(config.model, config.window, len(prepared.columns), change_scale=scales)
    model.compile(
        optimizer=build_optimizer(config, schedule),
        loss=loss,
        metrics=[keras.metrics.MeanSquaredError(name="mse")],
    )
    return model, schedule, loss


def plateau_callbacks(schedule, loss, events_path: str) -> dict:
    """The plateau machinery, in train's order, by the names checkpoints store them under."""
    from plateau_lstm.callbacks import (
        AdaptiveLossSwitcher,
        CyclicalLearningRate,
        EventLog,
        NanGuard,
        PlateauDetector,
    )
    from plateau_lstm.training_history import TrainingHistory

    events = EventLog(events_path)
    detector = PlateauDetector(event_log=events)
    restarts = CyclicalLearningRate(schedule, detector, event_log=events)
    return {
        "nan_guard": NanGuard(schedule, event_log=events, lr_callback=restarts),
        "plateau_detector": detector,
        "cyclical_learning_rate": restarts,
        "adaptive_loss_switcher": AdaptiveLossSwitcher(loss, detector, event_log=events),
        "training_history": TrainingHistory(schedule, loss, detector),
    }
