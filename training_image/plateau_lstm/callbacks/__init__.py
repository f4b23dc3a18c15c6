"""Keras callbacks that detect loss plateaus and break out of them, usable in any Keras script."""

from plateau_lstm.callbacks.adaptive_loss_switcher import AdaptiveLossSwitcher
from plateau_lstm.callbacks.cyclical_learning_rate import CyclicalLearningRate
from plateau_lstm.callbacks.nan_guard import NanGuard
from plateau_lstm.callbacks.plateau_detector import PlateauDetector, PlateauEvent
from plateau_lstm.events import EventLog
from plateau_lstm.losses import AdaptiveLoss
from plateau_lstm.schedules import Triangular2Schedule

__all__ = [
    "AdaptiveLoss",
    "AdaptiveLossSwitcher",
    "CyclicalLearningRate",
    "EventLog",
    "NanGuard",
    "PlateauDetector",
    "PlateauEvent",
    "Triangular2Schedule",
]
