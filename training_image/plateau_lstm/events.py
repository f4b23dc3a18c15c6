"""A log of the training run's notable events: plateaus, restarts, switches, recoveries."""

import json
import logging
import math
import numbers
import time
from collections import Counter
from pathlib import Path

_logger = logging.getLogger("plateau_lstm")


def _to_jsonable(value):
    """Turns numpy scalars and arrays into plain Python so `json.dumps` accepts them."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def _finite_or_none(value):
    # NaN and infinity are not JSON; a reader sees `null` instead of a parse error.
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        return float(value) if math.isfinite(value) else None
    return value


class EventLog:
    """Records what the training callbacks decided, for people and for the report.

    Each event is logged at INFO on the `plateau_lstm` logger, kept in memory in
    `events`, and, when `path` is given, appended as one JSON line to that local
    file (opened in append mode for every event, so a crash loses nothing already
    recorded and a resumed run continues the same file).

    Event kinds used by the callbacks: `"plateau"`, `"lr_restart"`,
    `"loss_switch"`, `"nan_recovery"` and `"nan_abort"`.

    Example:

    ```python
    log = EventLog("model/events.jsonl")
    log.record("lr_restart", 14, "LR restart #2 at epoch 14: ...", peak=3e-3)
    log.counts()  # {"lr_restart": 1}
    EventLog.load("model/events.jsonl")  # [{"kind": "lr_restart", ...}]
    ```

    Args:
        path: Local file path (`str` or `Path`) of the JSON-lines file to append
            to; its folder is created when missing. `None` keeps events in
            memory only. Defaults to `None`.
    """

    def __init__(self, path=None):
        if path is not None and not isinstance(path, (str, Path)):
            raise ValueError(f"`path` must be a local file path or None. Received: path={path!r}")
        self.path = Path(path) if path is not None else None
        self.events = []

    def record(self, kind, epoch, message, **fields):
        """Logs `message`, keeps the event and appends it to the file.

        Args:
            kind: Short event kind, such as `"lr_restart"`.
            epoch: Epoch number the event belongs to (1-based, as Keras prints it).
            message: One sentence for people.
            **fields: Extra JSON-able values kept with the event.

        Returns:
            The event dict that was recorded.
        """
        if not isinstance(kind, str) or not kind:
            raise ValueError(f"`kind` must be a non-empty string. Received: kind={kind!r}")
        event = {
            "kind": kind,
            "epoch": int(epoch),
            "message": str(message),
            "time": time.time(),
            **{key: _finite_or_none(value) for key, value in fields.items()},
        }
        _logger.info("%s", message)
        self.events.append(event)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            line = json.dumps(event, default=_to_jsonable)
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(line + "\n")
                handle.flush()
        return event

    def counts(self):
        """Returns how many events of each kind were recorded, as `{kind: count}`."""
        return dict(Counter(event["kind"] for event in self.events))

    @staticmethod
    def load(path):
        """Reads a JSON-lines event file into a list of dicts.

        Blank lines are skipped, and so is a last line cut short by a crash in the
        middle of a write; any other line that is not JSON raises `ValueError`
        naming the file and line.

        Args:
            path: Local file path of the events file.

        Returns:
            The events, oldest first.
        """
        path = Path(path)
        lines = path.read_text(encoding="utf-8").splitlines()
        events = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError as error:
                if number == len(lines):
                    _logger.warning("Skipping a truncated last line %d of %s", number, path)
                    continue
                raise ValueError(
                    f"{path}, line {number} is not a JSON event ({error.msg}). "
                    "Remove or fix that line."
                ) from error
        return events
