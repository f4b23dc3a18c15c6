"""The CLI end to end on the bundled series: prepare -> train -> evaluate -> promote."""

import json
import subprocess
import sys

import pandas as pd
import pytest

from plateau_lstm.cli import main

METRIC_KEYS = {
    "test_mse",
    "test_mae",
    "test_mae_original",
    "persistence_mse",
    "mean_mse",
    "skill_vs_persistence",
    "val_mse_best",
    "epochs_run",
    "lr_restarts",
    "loss_switches",
    "plateaus_detected",
    "train_seconds",
}
TINY = [
    "--epochs",
    "4",
    "--window",
    "16",
    "--lstm-units",
    "8",
    "--dense-units",
    "8",
    "--batch-size",
    "128",
]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    root = tmp_path_factory.mktemp("artifacts")
    run = root / "runs" / "r1"
    assert main(["prepare", "--output", str(run / "prepared"), "--window", "16"]) == 0
    assert (
        main(
            [
                "train",
                "--prepared",
                str(run / "prepared"),
                "--output",
                str(run / "model"),
                "--verbose",
                "0",
                *TINY,
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "evaluate",
                "--prepared",
                str(run / "prepared"),
                "--model",
                str(run / "model"),
                "--output",
                str(run / "eval"),
            ]
        )
        == 0
    )
    return root, run


def test_train_writes_the_model_and_its_story(pipeline):
    _, run = pipeline
    model = run / "model"
    for name in (
        "model.keras",
        "history.csv",
        "events.jsonl",
        "learning_rate.csv",
        "report.png",
        "train_summary.json",
    ):
        assert (model / name).is_file(), name
    history = pd.read_csv(model / "history.csv")
    assert list(history["epoch"]) == [1, 2, 3, 4]
    assert history["val_mse"].notna().all()
    rates = pd.read_csv(model / "learning_rate.csv")
    assert rates["learning_rate"].between(5e-5 * 0.999, 2e-3 * 1.001).all()
    assert (model / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_writes_the_contract_metrics(pipeline):
    _, run = pipeline
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert metrics.keys() >= METRIC_KEYS
    assert metrics["epochs_run"] == 4
    assert metrics["skill_vs_persistence"] == pytest.approx(
        1 - metrics["test_mse"] / metrics["persistence_mse"]
    )
    # persistence on a smooth weekly series is far better than predicting the mean
    assert metrics["persistence_mse"] < metrics["mean_mse"]


def test_promote_gate_sets_then_keeps_the_champion(pipeline, capsys):
    root, run = pipeline
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    code = main(["promote", "--candidate", str(run / "eval"), "--registry", str(root)])
    assert code == 0
    champion_file = root / "champion.json"
    if metrics["test_mse"] < metrics["persistence_mse"]:
        assert json.loads(champion_file.read_text())["model"] == str(run / "model")
        # the same candidate again does not beat itself by 1%: nothing changes
        before = champion_file.read_bytes()
        assert main(["promote", "--candidate", str(run / "eval"), "--registry", str(root)]) == 0
        assert champion_file.read_bytes() == before
        assert '"promoted": false' in capsys.readouterr().out
    else:
        assert not champion_file.exists()


def test_train_refuses_to_overwrite_a_different_model(pipeline, capsys):
    _, run = pipeline
    before = (run / "model" / "model.keras").read_bytes()
    code = main(
        [
            "train",
            "--prepared",
            str(run / "prepared"),
            "--output",
            str(run / "model"),
            "--verbose",
            "0",
            *TINY[:-2],
            "--batch-size",
            "64",
        ]
    )
    assert code == 2
    assert "already holds a model trained with other options" in capsys.readouterr().err
    assert (run / "model" / "model.keras").read_bytes() == before


def test_console_script_help_and_clean_error():
    help_text = subprocess.run(
        [sys.executable, "-m", "plateau_lstm.cli", "train", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for option in ("--epochs", "--max-lr", "--patience", "--boost-cap", "--base-lr"):
        assert option in help_text
    result = subprocess.run(
        [sys.executable, "-m", "plateau_lstm.cli", "evaluate", "--model", "/nonexistent/model"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("plateau-lstm evaluate: error: "), (
        result.stderr
    )


def test_readme_documents_every_option():
    import argparse
    from pathlib import Path

    from plateau_lstm.cli import build_parser

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in commands.choices.items():
        assert f"`plateau-lstm {name}`" in readme
        for action in sub._actions:
            if action.dest != "help":
                assert f"| `{action.option_strings[-1]}` |" in readme, (name, action.dest)
