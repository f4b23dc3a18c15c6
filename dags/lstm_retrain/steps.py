"""The four steps of the nightly job as `plateau-lstm` command lines, built from a run's params.

Both launchers run exactly these arguments, so a step means the same on a laptop and in a pod.
Every path comes from the artifact root and the DAG run (`settings.run_uris`): a run only ever
writes below `<root>/runs/<run_key>/`, plus the registry's `champion.json` through the gate.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from lstm_retrain.settings import run_uris


@dataclass(frozen=True)
class Step:
    """One pipeline step: the CLI subcommand, its task id and how long it may take."""

    command: str
    task_id: str
    timeout: timedelta
    doc: str


STEPS = (
    Step(
        "prepare",
        "prepare_data",
        timedelta(minutes=30),
        "Validate, clean, split and scale the input series into `runs/<run>/prepared`.",
    ),
    Step(
        "train",
        "train_model",
        timedelta(hours=6),
        "Train the residual LSTM into `runs/<run>/model`; a retry keeps or resumes it.",
    ),
    Step(
        "evaluate",
        "evaluate_model",
        timedelta(minutes=30),
        "Score the model on the test part against persistence into `runs/<run>/eval`.",
    ),
    Step(
        "promote",
        "promote_model",
        timedelta(minutes=10),
        "Move `champion.json` to this run only when it beats persistence and the champion.",
    ),
)


def step_arguments(command: str, params: Mapping[str, Any], root: str, run_id: str) -> list[str]:
    """`plateau-lstm` arguments (after the global options) for one step of the run `run_id`."""
    uris = run_uris(root, run_id)
    if command == "prepare":
        argv = ["prepare", "--output", uris["prepared"]]
        argv += _optional("--input", params.get("input_uri"))
        argv += _optional("--timestamp-col", params.get("timestamp_col"))
        argv += _optional("--target-col", params.get("target_col"))
        argv += _optional("--feature-cols", params.get("feature_cols"))
        argv += ["--window", str(params["window"]), "--horizon", str(params["horizon"])]
        return argv
    if command == "train":
        # More than one worker: the pods of a TFJob, which sets TF_CONFIG for each of them.
        distribution = ["--distribution", "multi-worker"] if workers(params) > 1 else []
        return [
            "train",
            "--prepared",
            uris["prepared"],
            "--output",
            uris["model"],
            "--epochs",
            str(params["epochs"]),
            "--batch-size",
            str(params["batch_size"]),
            "--window",
            str(params["window"]),
            "--horizon",
            str(params["horizon"]),
            "--seed",
            str(params["seed"]),
            "--lstm-layers",
            str(params["lstm_layers"]),
            "--lstm-units",
            str(params["lstm_units"]),
            "--dense-units",
            str(params["dense_units"]),
            "--base-lr",
            repr(float(params["base_lr"])),
            "--max-lr",
            repr(float(params["max_lr"])),
            "--verbose",
            "2",  # one line per epoch: task logs are not terminals
            *distribution,
        ]
    if command == "evaluate":
        return [
            "evaluate",
            "--prepared",
            uris["prepared"],
            "--model",
            uris["model"],
            "--output",
            uris["eval"],
        ]
    if command == "promote":
        return [
            "promote",
            "--candidate",
            uris["eval"],
            "--registry",
            uris["registry"],
            "--margin",
            repr(float(params["promotion_margin"])),
        ]
    raise ValueError(f"unknown step {command!r}; expected one of {[s.command for s in STEPS]}")


def workers(params: Mapping[str, Any]) -> int:
    """How many training workers the run asks for (runs from before the param existed: 1)."""
    return int(params.get("workers") or 1)


def _optional(flag: str, value: Any) -> list[str]:
    """A flag whose empty value means "the CLI's own default" (e.g. the bundled data set)."""
    text = "" if value is None else str(value).strip()
    return [flag, text] if text else []
