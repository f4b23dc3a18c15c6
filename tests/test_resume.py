"""Exact resume: a `plateau-lstm train` killed with SIGKILL continues where it stopped.

The acceptance test of issue 4: a 6-epoch run writing to a real SeaweedFS bucket is killed right
after its third committed checkpoint, the same command is run again, and the result is compared
with an uninterrupted run of the same seed.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from plateau_lstm.checkpoints import COMMITTED, CheckpointStore
from plateau_lstm.cli import main
from plateau_lstm.storage import open_store

# Small enough for two shared CPU cores, slow enough (about half a second an epoch) that the
# kill lands before a fourth checkpoint; --min-delta 1 makes every epoch after the first a
# stalled one, so the plateau machinery acts at epochs 3 and 5: once before the kill, once after.
TINY = [
    "--epochs",
    "6",
    "--window",
    "16",
    "--lstm-units",
    "8",
    "--dense-units",
    "8",
    "--batch-size",
    "32",
    "--patience",
    "1,2,3",
    "--min-delta",
    "1",
    "--seed",
    "7",
    "--verbose",
    "2",
]


def train_command(prepared: str, output: str, *extra: str) -> list[str]:
    script = Path(sys.executable).with_name("plateau-lstm")  # the real console script
    return [str(script), "train", "--prepared", prepared, "--output", output, *TINY, *extra]


def child_env() -> dict[str, str]:
    # The AWS_* variables s3_env set are in os.environ; the child inherits them.
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


def run(command: list[str]) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, env=child_env(), timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def events_without_time(store) -> list[dict]:
    lines = store.read_text("events.jsonl").splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "time"} for line in lines]


def history_without_timing(store) -> list[dict]:
    rows = list(csv.DictReader(io.StringIO(store.read_text("history.csv"))))
    return [{k: v for k, v in row.items() if k != "epoch_seconds"} for row in rows]


def model_weights(store, tmp_path: Path, name: str) -> list[np.ndarray]:
    import keras

    import plateau_lstm.model  # noqa: F401 - registers the custom layers for safe loading

    local = tmp_path / f"{name}.keras"
    store.download_file("model.keras", local)
    return keras.saving.load_model(local, safe_mode=True).get_weights()


def snapshot(seaweedfs, bucket: str, prefix: str) -> dict[str, str]:
    listing = seaweedfs.client().list_objects_v2(Bucket=bucket, Prefix=prefix)
    return {item["Key"]: item["ETag"] for item in listing.get("Contents", [])}


def test_sigkilled_run_resumes_from_its_third_checkpoint_like_an_uninterrupted_run(
    prepared, s3_env, seaweedfs, tmp_path
):
    bucket = s3_env.removeprefix("s3://")
    # Run ids whose names share a prefix: neither run may touch the other's files.
    straight_uri = f"{s3_env}/runs/night-1/model"
    killed_uri = f"{s3_env}/runs/night-10/model"

    run(train_command(prepared, straight_uri))
    straight_files = snapshot(seaweedfs, bucket, "runs/night-1/")

    command = train_command(prepared, killed_uri)
    killed = open_store(killed_uri)
    child = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=child_env()
    )
    try:
        deadline = time.monotonic() + 300
        while not killed.exists(f"checkpoints/epoch-0003/{COMMITTED}"):
            assert child.poll() is None, "the run ended before its third checkpoint"
            assert time.monotonic() < deadline, "no third checkpoint within 300 s"
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL
    checkpoints = CheckpointStore(killed)
    assert checkpoints.committed_epochs()[-1] == 3, "killed later than intended; see TINY"
    assert not killed.exists("train_summary.json")

    resumed = run(command)
    resume_lines = [line for line in resumed.stderr.splitlines() if "resuming from" in line]
    assert len(resume_lines) == 1, resumed.stderr[-3000:]
    assert resume_lines[0].startswith("train: resuming from epoch 3 of 6, checkpoint ")
    assert f"{killed_uri}/checkpoints/epoch-0003" in resume_lines[0]
    assert "loss mse, 1 LR restart(s)" in resume_lines[0]
    result = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert result["epochs_run"] == 6 and result["resumed_from_epoch"] == 3
    assert result["lr_restarts"] == 2 and result["loss_switches"] == 2

    straight = open_store(straight_uri)
    # What must match exactly: the rate at every step, every decision, every epoch's numbers.
    assert killed.read_bytes("learning_rate.csv") == straight.read_bytes("learning_rate.csv")
    assert events_without_time(killed) == events_without_time(straight)
    assert [e["kind"] for e in events_without_time(killed)].count("lr_restart") == 2
    assert history_without_timing(killed) == history_without_timing(straight)
    # Weights, optimizer slots, dropout seeds and the data order are all restored, so on CPU the
    # resumed model is bit for bit the uninterrupted one.
    for ours, theirs in zip(
        model_weights(killed, tmp_path, "killed"),
        model_weights(straight, tmp_path, "straight"),
        strict=True,
    ):
        np.testing.assert_array_equal(ours, theirs)

    summary = killed.read_json("train_summary.json")
    assert summary["epochs_run"] == 6 and summary["resumed_from_epoch"] == 3
    assert checkpoints.committed_epochs()[-3:] == [4, 5, 6]
    assert snapshot(seaweedfs, bucket, "runs/night-1/") == straight_files


def test_a_checkpoint_of_other_options_is_refused_and_nothing_changes(prepared, tmp_path, capsys):
    output = tmp_path / "runs" / "r1" / "model"
    args = ["train", "--prepared", prepared, "--output", str(output), *TINY]
    assert main([*args, "--epochs", "2"]) == 0
    # As if the pod died between its last checkpoint and publishing the model.
    (output / "train_summary.json").unlink()
    before = {p: p.read_bytes() for p in output.rglob("*") if p.is_file()}
    capsys.readouterr()

    assert main([*args, "--epochs", "3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith(f"plateau-lstm train: error: {output}: holds checkpoints of a run")
    assert "config.epochs: 2 -> 3" in err[0] and "delete file://" in err[0]
    assert {p: p.read_bytes() for p in output.rglob("*") if p.is_file()} == before


def test_a_finished_run_killed_before_publishing_only_publishes(prepared, tmp_path, caplog):
    output = tmp_path / "model"
    args = ["train", "--prepared", prepared, "--output", str(output), *TINY, "--epochs", "2"]
    assert main(args) == 0
    expected = (output / "learning_rate.csv").read_bytes()
    for name in ("train_summary.json", "model.keras", "learning_rate.csv"):
        (output / name).unlink()

    with caplog.at_level("INFO", logger="plateau_lstm"):
        assert main(args) == 0
    assert "resuming from epoch 2 of 2" in caplog.text
    summary = json.loads((output / "train_summary.json").read_text())
    assert summary["epochs_run"] == 2 and summary["resumed_from_epoch"] == 2
    assert (output / "learning_rate.csv").read_bytes() == expected
    assert (output / "model.keras").is_file()
