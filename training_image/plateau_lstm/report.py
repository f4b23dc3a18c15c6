"""report.png: what a person looks at first when a nightly run looks wrong.

Four panels on one epoch axis: the training loss (its kind changes at loss switches), the
validation MSE yardstick that plateaus are judged on, the learning rate step by step, and
the plateau level; every plateau, restart, loss switch and NaN recovery is marked on all.
"""

from __future__ import annotations

import os

import pandas as pd

MARKERS = {
    "plateau": ("tab:orange", ":", "plateau"),
    "lr_restart": ("tab:red", "--", "LR restart"),
    "loss_switch": ("tab:purple", "-.", "loss switch"),
    "nan_recovery": ("black", "-", "NaN recovery"),
}


def write_report(folder: str, events: list[dict], filename: str = "report.png") -> str:
    """Draw report.png from history.csv and learning_rate.csv in `folder`; returns its path."""
    import matplotlib

    matplotlib.use("Agg")  # no display in pods or CI
    import matplotlib.pyplot as plt

    history = pd.read_csv(os.path.join(folder, "history.csv"))
    rates = pd.read_csv(os.path.join(folder, "learning_rate.csv"))
    fig, axes = plt.subplots(
        4, 1, figsize=(10, 11), sharex=True, gridspec_kw={"height_ratios": [3, 3, 2, 1]}
    )
    loss_ax, yardstick_ax, lr_ax, level_ax = axes

    loss_ax.plot(history["epoch"], history["loss"], label="train loss (active kind)")
    loss_ax.plot(history["epoch"], history["val_loss"], label="validation loss")
    for kind, start in _loss_segments(history):
        loss_ax.annotate(
            kind,
            (start, 1.0),
            xycoords=("data", "axes fraction"),
            fontsize=8,
            va="top",
            color="tab:purple",
        )
    loss_ax.set_ylabel("loss")
    loss_ax.set_yscale("log")
    loss_ax.set_title("Training loss (not comparable across loss switches)")

    yardstick_ax.plot(
        history["epoch"], history["val_mse"], color="tab:green", label="validation MSE"
    )
    best = history["val_mse"].cummin()
    yardstick_ax.plot(
        history["epoch"], best, color="tab:green", alpha=0.4, linestyle="--", label="best so far"
    )
    yardstick_ax.set_ylabel("val MSE (standardized)")
    yardstick_ax.set_yscale("log")
    yardstick_ax.set_title("Yardstick: validation MSE, on which plateaus are judged")

    steps_per_epoch = _steps_per_epoch(history, rates)
    lr_ax.plot(rates["step"] / steps_per_epoch, rates["learning_rate"], color="tab:blue", lw=0.8)
    lr_ax.set_ylabel("learning rate")
    lr_ax.set_yscale("log")
    lr_ax.set_title("Cyclical learning rate (triangular2), restarted and boosted on plateaus")

    level_ax.step(history["epoch"], history["plateau_level"], where="post", color="tab:orange")
    level_ax.set_yticks([0, 1, 2, 3], ["none", "watch", "act", "severe"])
    level_ax.set_ylim(-0.3, 3.3)
    level_ax.set_xlabel("epoch")
    level_ax.set_title("Plateau level")

    shown = set()
    for event in events:
        if event.get("kind") not in MARKERS:
            continue
        color, style, label = MARKERS[event["kind"]]
        for ax in axes:
            ax.axvline(
                event["epoch"],
                color=color,
                linestyle=style,
                lw=1,
                label=label if (ax is loss_ax and label not in shown) else None,
            )
        shown.add(label)
    loss_ax.legend(loc="upper right", fontsize=8)
    yardstick_ax.legend(loc="upper right", fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path = os.path.join(folder, filename)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _loss_segments(history: pd.DataFrame):
    """(loss kind, first epoch) each time the active loss changes."""
    previous = None
    for epoch, kind in zip(history["epoch"], history["active_loss"], strict=True):
        if kind != previous:
            yield kind, epoch
            previous = kind


def _steps_per_epoch(history: pd.DataFrame, rates: pd.DataFrame) -> float:
    if rates.empty or history.empty:
        return 1.0
    return max(1.0, (rates["step"].iloc[-1] + 1) / len(history))
