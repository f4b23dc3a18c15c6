"""Everything a resumed `fit` needs, captured in memory and written to one local folder.

A training run is more than its weights: the optimizer's moments and step count, the
learning-rate cycle's phase and boost, the active loss, the plateau detector's counters, the NaN
guard's count, the history rows, the events, and the random state that decides dropout masks.
`capture_training_state` copies all of it in a few milliseconds (so an epoch end does not wait
on serialization), the snapshot's `write` puts it in a folder (in the background uploader's
thread), and `restore_training_state` puts it back into a model built and compiled by the same
code, so `fit(initial_epoch=...)` continues as if nothing had happened.

Files, all plain data (nothing is unpickled or turned into code when they are read):

```
variables.npz   every Keras variable: the model's weights, the optimizer's variables (moments,
                amsgrad maxima, step count) and the dropout layers' seed-generator states
random.json     Python's and NumPy's global random state
state.json      epoch, every stateful callback's get_state(), the variables' layout, extras
```
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

__all__ = [
    "RANDOM_FILE",
    "STATE_FILE",
    "VARIABLES_FILE",
    "EventLogState",
    "Stateful",
    "TrainingSnapshot",
    "capture_training_state",
    "read_state",
    "restore_model_weights",
    "restore_training_state",
    "save_training_state",
]

VARIABLES_FILE = "variables.npz"
RANDOM_FILE = "random.json"
STATE_FILE = "state.json"
FORMAT_VERSION = 1
_GROUPS = ("weights", "optimizer", "seeds")


class Stateful(Protocol):
    """What the plateau callbacks (and anything else checkpointed) expose."""

    def get_state(self) -> dict: ...

    def set_state(self, state: dict) -> None: ...


class EventLogState:
    """Gives an `EventLog` the get_state/set_state pair, so its events survive a resume.

    Restoring rewrites the log's file with the restored events, so `events.jsonl` of a resumed
    run holds the whole story, not just what happened after the resume.
    """

    def __init__(self, event_log):
        self.event_log = event_log

    def get_state(self) -> dict:
        return {"events": list(self.event_log.events)}

    def set_state(self, state: dict) -> None:
        events = list(state["events"])
        self.event_log.events = events
        if self.event_log.path is not None:
            with open(self.event_log.path, "w", encoding="utf-8") as handle:
                for event in events:
                    handle.write(json.dumps(event) + "\n")


@dataclass(frozen=True)
class TrainingSnapshot:
    """A copy of the training state at one epoch end, independent of the live model."""

    epoch: int
    arrays: dict[str, np.ndarray]
    random_json: bytes
    state_json: bytes

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays.values()) + len(self.state_json)

    def write(self, directory: str | os.PathLike[str]) -> list[str]:
        """Write the snapshot's files into the existing folder `directory`; returns their names."""
        folder = Path(directory)
        # Uncompressed: weights barely compress, and this runs once per epoch.
        np.savez(folder / VARIABLES_FILE, **self.arrays)
        (folder / RANDOM_FILE).write_bytes(self.random_json)
        (folder / STATE_FILE).write_bytes(self.state_json)
        return [VARIABLES_FILE, RANDOM_FILE, STATE_FILE]


def capture_training_state(
    model,
    stateful: Mapping[str, Stateful],
    *,
    epoch: int,
    extra: Mapping[str, Any] | None = None,
) -> TrainingSnapshot:
    """Copy the complete training state after `epoch` completed epochs.

    Args:
        model: the compiled Keras model being trained.
        stateful: name -> object with get_state(); each state must be JSON-able.
        epoch: completed epochs, i.e. the `initial_epoch` of the fit that resumes from here.
        extra: more JSON-able facts for state.json (configuration, data fingerprint, ...).
    """
    arrays: dict[str, np.ndarray] = {}
    layout: dict[str, list] = {}
    for group, variables in _variable_groups(model).items():
        layout[group] = []
        for index, variable in enumerate(variables):
            value = np.array(variable.numpy())  # a copy: training goes on changing the variable
            arrays[f"{group}/{index:04d}"] = value
            layout[group].append([variable.path, list(value.shape), str(value.dtype)])
    state = {
        "format": FORMAT_VERSION,
        "epoch": int(epoch),
        "optimizer_step": int(np.asarray(model.optimizer.iterations.numpy())),
        "variables": layout,
        "callbacks": {name: obj.get_state() for name, obj in stateful.items()},
        **dict(extra or {}),
    }
    # Serialized here, not later: the callbacks' state objects keep changing after this epoch.
    return TrainingSnapshot(
        epoch=int(epoch),
        arrays=arrays,
        random_json=_json_bytes(_random_state()),
        state_json=_json_bytes(state),
    )


def save_training_state(
    directory: str | os.PathLike[str],
    model,
    stateful: Mapping[str, Stateful],
    *,
    epoch: int,
    extra: Mapping[str, Any] | None = None,
) -> list[str]:
    """`capture_training_state` and `write` in one step; returns the file names."""
    return capture_training_state(model, stateful, epoch=epoch, extra=extra).write(directory)


def read_state(directory: str | os.PathLike[str]) -> dict:
    """state.json of a saved training state (epoch, callbacks' states, the caller's extras)."""
    return json.loads((Path(directory) / STATE_FILE).read_text(encoding="utf-8"))


def restore_training_state(
    directory: str | os.PathLike[str], model, stateful: Mapping[str, Stateful]
) -> dict:
    """Put a saved state back into a built and compiled model; returns its state.json content.

    Call it before `fit`: the callbacks keep what `set_state` restored through their
    `on_train_begin`.

    Raises:
        ValueError: the saved state does not fit this model, optimizer or set of callbacks
            (the message says which part).
    """
    folder = Path(directory)
    state = read_state(folder)
    missing = sorted(set(stateful) - set(state["callbacks"]))
    if missing:
        raise ValueError(
            f"{folder}: the checkpoint has no state for {', '.join(missing)}; it was written by "
            "another version of the trainer"
        )
    optimizer = model.optimizer
    if not optimizer.built:
        # The slots exist only once built; fit would otherwise build them later as zeros, and
        # the resumed run would start with a cold optimizer, silently.
        optimizer.build(model.trainable_variables)
    _assign(folder, model, state["variables"], _GROUPS)
    step = int(np.asarray(optimizer.iterations.numpy()))
    if step != state["optimizer_step"]:
        raise ValueError(
            f"{folder}: the optimizer came back at step {step}, the checkpoint says "
            f"{state['optimizer_step']}"
        )
    _restore_random_state(json.loads((folder / RANDOM_FILE).read_text(encoding="utf-8")))
    for name, obj in stateful.items():
        obj.set_state(state["callbacks"][name])
    return state


def restore_model_weights(directory: str | os.PathLike[str], model) -> None:
    """Load only the model's weights of a saved state (the best epoch's, for the final model)."""
    folder = Path(directory)
    _assign(folder, model, read_state(folder)["variables"], ("weights",))


def _variable_groups(model) -> dict[str, list]:
    weights = list(model.weights)
    known = {id(variable) for variable in weights}
    return {
        "weights": weights,
        "optimizer": list(model.optimizer.variables),
        # Keras lists SeedGenerator states in `model.variables` but not in `model.weights`;
        # dropout masks come from them.
        "seeds": [variable for variable in model.variables if id(variable) not in known],
    }


def _assign(folder: Path, model, layout: dict, groups: tuple[str, ...]) -> None:
    """Check every saved array against the variable it belongs to, then assign them all.

    Shapes and order decide: paths carry names Keras numbers per process (adam_1, dense_2), so
    they only help a person read a mismatch. Nothing is assigned unless everything fits.
    """
    targets = _variable_groups(model)
    # allow_pickle=False: an .npz can carry pickled objects; a checkpoint never may.
    with np.load(folder / VARIABLES_FILE, allow_pickle=False) as saved:
        arrays = {key: saved[key] for key in saved.files}
    plan = []
    for group in groups:
        variables, entries = targets[group], layout[group]
        if len(entries) != len(variables):
            raise ValueError(
                f"{folder}: the checkpoint holds {len(entries)} {group} variables, this model "
                f"has {len(variables)}; it was made by another architecture or optimizer"
            )
        for index, (variable, (path, shape, _dtype)) in enumerate(
            zip(variables, entries, strict=True)
        ):
            value = arrays.get(f"{group}/{index:04d}")
            if value is None or list(value.shape) != list(shape):
                raise ValueError(f"{folder}: {VARIABLES_FILE} lacks {path} as the layout says")
            if tuple(value.shape) != tuple(variable.shape):
                raise ValueError(
                    f"{folder}: {path} has shape {tuple(value.shape)} in the checkpoint but "
                    f"{variable.path} has {tuple(variable.shape)} in this model"
                )
            plan.append((variable, value))
    for variable, value in plan:
        variable.assign(value)


def _random_state() -> dict:
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": {"version": version, "state": list(internal), "gauss": gauss},
        "numpy": {
            "kind": kind,
            "keys": [int(k) for k in keys],
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
    }


def _restore_random_state(saved: dict) -> None:
    python = saved["python"]
    random.setstate((python["version"], tuple(python["state"]), python["gauss"]))
    numpy = saved["numpy"]
    np.random.set_state(
        (
            numpy["kind"],
            np.asarray(numpy["keys"], dtype=np.uint32),
            numpy["pos"],
            numpy["has_gauss"],
            numpy["cached_gaussian"],
        )
    )


def _json_bytes(obj: Any) -> bytes:
    # NaN stays NaN (Python's json reads it back): a history row of a diverged epoch must come
    # back as it was, or the resumed run's history.csv would differ from an uninterrupted one's.
    # Insertion order kept: restored events read back key for key as they were logged.
    return (json.dumps(obj, indent=1, default=_plain) + "\n").encode("utf-8")


def _plain(value: Any) -> Any:
    """NumPy scalars and arrays that callbacks may leave in their state, as plain Python."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON-able in a checkpoint: {value!r} ({type(value).__name__})")
