"""Switches the training loss to its next kind whenever a plateau calls for action."""

import logging
import numbers
import warnings

import keras

from plateau_lstm.callbacks.plateau_detector import PlateauDetector
from plateau_lstm.losses import AdaptiveLoss

_logger = logging.getLogger("plateau_lstm")


class AdaptiveLossSwitcher(keras.callbacks.Callback):
    """Advances an `AdaptiveLoss` (Huber -> MSE -> MAE -> LogCosh) on every "act" plateau event.

    The switch is an assignment to the loss's index variable, read inside the
    compiled train step: no recompile, no retrace, and the optimizer keeps its
    moments and step count. Once the last kind is active the loss stays on it.

    Example:

    ```python
    loss = AdaptiveLoss()
    detector = PlateauDetector()
    switcher = AdaptiveLossSwitcher(loss, detector)
    model.compile(optimizer="adam", loss=loss, metrics=["mse"])
    model.fit(x, y, validation_data=val, callbacks=[detector, switcher])
    ```

    Args:
        loss: The `AdaptiveLoss` the model was compiled with. Required.
        detector: The `PlateauDetector` whose `"act"` events trigger switches, or
            `None` (then call `loss.next()` yourself). Defaults to `None`.
        event_log: An `EventLog` receiving a `"loss_switch"` event per switch, or
            `None`. Defaults to `None`.
    """

    def __init__(self, loss, detector=None, event_log=None):
        super().__init__()
        if not isinstance(loss, AdaptiveLoss):
            raise ValueError(f"`loss` must be an AdaptiveLoss. Received: loss={loss!r}")
        if detector is not None and not isinstance(detector, PlateauDetector):
            raise ValueError(
                f"`detector` must be a PlateauDetector or None. Received: detector={detector!r}"
            )
        self.loss = loss
        self.detector = detector
        self.event_log = event_log
        self._initial_index = loss.active_index
        self._restored = False
        self._warned_loss = False
        self.switches = 0
        if detector is not None:
            detector.subscribe(self._on_plateau)

    def on_train_begin(self, logs=None):
        if self._restored:
            self._restored = False
        else:
            self.switches = 0
            self.loss.switch_to(self._initial_index)
        compiled_loss = getattr(self.model, "loss", None)
        if self.model is not None and compiled_loss is not self.loss and not self._warned_loss:
            self._warned_loss = True
            warnings.warn(
                "AdaptiveLossSwitcher: the model was not compiled with this AdaptiveLoss, so "
                "switching will not change training. Pass the same object to "
                "model.compile(loss=...).",
                stacklevel=2,
            )

    def _on_plateau(self, event):
        if event.level_name != "act":
            return
        old_name = self.loss.active_name
        if not self.loss.next():
            _logger.info(
                "Plateau at epoch %d: the loss stays on %s, the last kind", event.epoch, old_name
            )
            return
        self.switches += 1
        new_name = self.loss.active_name
        monitor = self.detector.monitor if self.detector is not None else "the monitor"
        message = (
            f"Loss switch #{self.switches} at epoch {event.epoch}: {old_name} -> {new_name}, "
            f"{monitor} flat for {event.stalled_epochs} epochs"
        )
        if self.event_log is not None:
            self.event_log.record(
                "loss_switch",
                event.epoch,
                message,
                switch=self.switches,
                from_loss=old_name,
                to_loss=new_name,
                index=self.loss.active_index,
            )
        else:
            _logger.info("%s", message)

    def get_state(self):
        """Returns the switch count and the active loss index as a JSON-able dict."""
        return {"switches": self.switches, "index": self.loss.active_index}

    def set_state(self, state):
        """Restores `get_state()` output (the active loss included); the next `fit` continues.

        Args:
            state: A dict returned by `get_state`, possibly through JSON.
        """
        if not isinstance(state, dict) or not {"switches", "index"} <= state.keys():
            raise ValueError(
                f"`state` must be a dict with 'switches' and 'index'. Received: state={state!r}"
            )
        index = state["index"]
        if isinstance(index, bool) or not isinstance(index, numbers.Integral):
            raise ValueError(f"The state's index must be an int. Received: state={state!r}")
        self.loss.switch_to(index)
        self.switches = int(state["switches"])
        self._restored = True
