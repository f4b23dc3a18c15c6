"""Scale-out training: `--distribution mirrored` and `multi-worker`, `--mixed-precision`.

Mirrored runs over two logical CPU devices (`split_cpu`), multi-worker over two real
`plateau-lstm train` processes that find each other on loopback ports through TF_CONFIG, as the
pods of a TFJob do. Both are compared with a single-worker run of the same global batch and
learning rates. Nothing is mocked: every run trains.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ports import free_loopback_ports

from plateau_lstm.checkpoints import COMMITTED, CheckpointStore
from plateau_lstm.cli import main
from plateau_lstm.distribution import (
    Distribution,
    broadcast_from_chief,
    choose,
    scaled_learning_rates,
)
from plateau_lstm.errors import UserError
from plateau_lstm.storage import open_store

CLI = str(Path(sys.executable).with_name("plateau-lstm"))
# The CLI after splitting the CPU into two logical devices, which must happen before TensorFlow
# starts; there is no option for it because only a machine without GPUs needs it.
CLI_ON_TWO_CPU_DEVICES = [
    sys.executable,
    "-c",
    "import sys; from plateau_lstm.distribution import split_cpu; split_cpu(2); "
    "from plateau_lstm.cli import main; sys.exit(main(sys.argv[1:]))",
]
# --min-delta 1: every epoch after the first is a stalled one, so the plateau machinery restarts
# the rate and switches the loss at epoch 3 of every run.
TINY = [
    "--window", "16", "--lstm-units", "8", "--dense-units", "8", "--seed", "7",
    "--patience", "1,2,3", "--min-delta", "1", "--verbose", "2", "--metrics-port", "0",
]  # fmt: skip
# Single-worker and two-replica runs see the same global batch and the same rates.
ONE_REPLICA = ["--batch-size", "64", "--distribution", "none"]
TWO_REPLICAS = ["--batch-size", "32", "--lr-scaling", "none"]
# Two replicas add up gradients in another order, and batch normalization sees 32 windows
# instead of 64 per replica: the runs drift apart a little, never by more than this.
SINGLE_WORKER_TOLERANCE = 0.05  # relative, on the best validation MSE after 4 epochs


@pytest.fixture(scope="module")
def single_worker(prepared, tmp_path_factory) -> dict:
    output = tmp_path_factory.mktemp("single") / "model"
    run([CLI, "train", "--prepared", prepared, "--output", str(output), "--epochs", "4",
         *TINY, *ONE_REPLICA])  # fmt: skip
    return open_store(str(output)).read_json("train_summary.json")


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, timeout=400, **kwargs)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def epoch_rates(stderr: str) -> list[str]:
    """The learning rate Keras printed at each epoch end, as printed."""
    return re.findall(r"- learning_rate: (\S+)", stderr)


# --- MirroredStrategy -----------------------------------------------------------------------


def test_mirrored_over_two_cpu_devices_reaches_the_single_worker_result(
    prepared, single_worker, tmp_path
):
    output = tmp_path / "model"
    result = run([*CLI_ON_TWO_CPU_DEVICES, "train", "--prepared", prepared, "--output",
                  str(output), "--epochs", "4", "--distribution", "mirrored", *TINY,
                  *TWO_REPLICAS])  # fmt: skip
    summary = open_store(str(output)).read_json("train_summary.json")
    assert summary["distribution"] == "mirrored" and summary["replicas"] == 2
    assert summary["global_batch_size"] == 64 == single_worker["global_batch_size"]
    assert summary["steps"] == single_worker["steps"]
    assert summary["val_mse_best"] == pytest.approx(
        single_worker["val_mse_best"], rel=SINGLE_WORKER_TOLERANCE
    )
    # The plateau machinery acted as in the single-worker run, at the same epochs.
    assert summary["lr_restarts"] == single_worker["lr_restarts"] >= 1
    assert summary["loss_switches"] == single_worker["loss_switches"] >= 1
    assert "mirrored over 2 replica(s)" in result.stderr


def test_auto_learning_rate_scaling_follows_the_replicas(prepared, tmp_path):
    output = tmp_path / "model"
    run([*CLI_ON_TWO_CPU_DEVICES, "train", "--prepared", prepared, "--output", str(output),
         "--epochs", "1", "--distribution", "mirrored", *TINY, "--batch-size", "32",
         "--base-lr", "1e-4", "--max-lr", "1e-3"])  # fmt: skip
    summary = open_store(str(output)).read_json("train_summary.json")
    # sqrt rule by default: both bounds times sqrt(2), the cycle's shape unchanged.
    assert summary["learning_rate_bounds"] == pytest.approx([1.4142e-4, 1.4142e-3], rel=1e-4)
    assert summary["global_batch_size"] == 64


# --- MultiWorkerMirroredStrategy ------------------------------------------------------------


def tf_config(ports: list[int], index: int) -> str:
    workers = [f"127.0.0.1:{port}" for port in ports]
    return json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})


def start_workers(
    prepared: str,
    output: str,
    tmp_path: Path,
    *extra: str,
    launcher: list[str] = [CLI],  # noqa: B006 - never mutated
    worker_extra: tuple[str, ...] = (),
):
    """Two `plateau-lstm train` processes, worker 0 the chief, as two pods of a TFJob.

    `worker_extra` goes to worker 1 only, after the common options (so it overrides them).
    """
    ports = free_loopback_ports(2)
    workers = []
    for index in range(2):
        result_file = tmp_path / f"worker-{index}.json"
        log = open(tmp_path / f"worker-{index}.log", "w")  # noqa: SIM115 - closed by finish()
        own = worker_extra if index == 1 else ()
        command = [*launcher, "--result-file", str(result_file), "train", "--prepared", prepared,
                   "--output", output, "--distribution", "multi-worker",
                   *TINY, *TWO_REPLICAS, *extra, *own]  # fmt: skip
        env = {**os.environ, "TF_CONFIG": tf_config(ports, index), "PYTHONUNBUFFERED": "1"}
        # Keras prints its epoch lines on stdout, our log on stderr: one file keeps both.
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        workers.append((process, log, result_file))
    return workers


def finish(workers, timeout: float = 400) -> list[tuple[int, str, dict | None]]:
    """Wait for every worker; (exit code, output, --result-file) of each."""
    outcomes = []
    for process, log, result_file in workers:
        try:
            code = process.wait(timeout=timeout)
        finally:
            process.kill()
            process.wait()
            log.close()
        text = Path(log.name).read_text()
        result = json.loads(result_file.read_text()) if result_file.exists() else None
        outcomes.append((code, text, result))
    return outcomes


def test_two_workers_train_as_one_run_and_follow_the_chiefs_plateau_decisions(
    prepared, single_worker, tmp_path
):
    output = str(tmp_path / "model")
    # Worker 1 is told to be far more patient: left to itself it would not restart the rate or
    # switch the loss in 4 epochs. The chief does at epoch 3, and the worker must follow.
    (chief_code, chief_log, chief), (worker_code, worker_log, worker) = finish(
        start_workers(
            prepared, output, tmp_path, "--epochs", "4", worker_extra=("--patience", "5,10,20")
        )
    )
    assert chief_code == 0, chief_log[-3000:]
    assert worker_code == 0, worker_log[-3000:]
    assert "this process is worker 0 of 2 (chief)" in chief_log
    assert "this process is worker 1 of 2" in worker_log

    summary = open_store(output).read_json("train_summary.json")
    assert summary["distribution"] == "multi-worker" and summary["replicas"] == 2
    assert summary["global_batch_size"] == 64 and summary["steps"] == single_worker["steps"]
    assert summary["val_mse_best"] == pytest.approx(
        single_worker["val_mse_best"], rel=SINGLE_WORKER_TOLERANCE
    )
    # The chief detected the plateau and restarted the rate at epoch 3 ...
    events = [json.loads(line) for line in Path(output, "events.jsonl").read_text().splitlines()]
    restarts = [event for event in events if event["kind"] == "lr_restart"]
    assert [event["epoch"] for event in restarts] == [3]
    assert chief["lr_restarts"] == 1 and chief["loss_switches"] == 1
    # ... the worker decided nothing itself ...
    assert worker["lr_restarts"] == 0 and worker["loss_switches"] == 0
    # ... yet took the chief's rate cycle and loss before its next step, and trained with the
    # same rate as the chief, epoch by epoch.
    assert "epoch 4: took the chief's rate cycle and loss" in worker_log
    assert "loss mse" in worker_log.split("took the chief's rate cycle and loss")[1].splitlines()[0]
    rates = epoch_rates(chief_log)
    assert len(rates) == 4 and rates == epoch_rates(worker_log)

    # Only the chief wrote: one model, one set of checkpoints, one summary.
    assert "the chief publishes the model" in worker_log
    assert "published the model" in chief_log and "published the model" not in worker_log
    assert CheckpointStore(open_store(output)).committed_epochs()[-1] == 4


def test_scalar_logs_are_recognised_with_several_devices_per_worker():
    # A worker with several GPUs holds its logs as PerReplica values. MultiWorkerMirroredStrategy
    # uses one CPU per worker, so two logical CPUs under MirroredStrategy stand in for such a
    # worker's PerReplica values (a real one, made by strategy.run).
    program = (
        "from plateau_lstm.distribution import split_cpu; split_cpu(2)\n"
        "import tensorflow as tf\n"
        "from plateau_lstm.keras_multi_worker import _rank\n"
        "cpus = [d.name for d in tf.config.list_logical_devices('CPU')]\n"
        "strategy = tf.distribute.MirroredStrategy(cpus)\n"
        "scalar = strategy.run(lambda: tf.constant(1.0))\n"
        "vector = strategy.run(lambda: tf.constant([1.0, 2.0]))\n"
        "assert type(scalar).__name__ == 'PerReplica', type(scalar)\n"
        "plain = tf.constant(3.0)\n"
        "print(_rank(strategy, scalar), _rank(strategy, vector), _rank(strategy, plain))\n"
    )
    result = run([sys.executable, "-c", program])
    assert result.stdout.split() == ["0", "1", "0"]


def test_killed_workers_resume_together_from_the_chiefs_checkpoint(prepared, tmp_path):
    output = str(tmp_path / "model")
    store = open_store(output)
    workers = start_workers(prepared, output, tmp_path, "--epochs", "8")
    try:
        deadline = time.monotonic() + 300
        while not store.exists(f"checkpoints/epoch-0002/{COMMITTED}"):
            assert all(p.poll() is None for p, _, _ in workers), "a worker ended early"
            assert time.monotonic() < deadline, "no second checkpoint within 300 s"
            time.sleep(0.02)
        for process, _, _ in workers:
            process.send_signal(signal.SIGKILL)
    finally:
        finish(workers)
    done = CheckpointStore(store).committed_epochs()[-1]
    assert 2 <= done < 8 and not store.exists("train_summary.json")

    (chief_code, chief_log, chief), (worker_code, worker_log, worker) = finish(
        start_workers(prepared, output, tmp_path, "--epochs", "8")
    )
    assert chief_code == 0, chief_log[-3000:]
    assert worker_code == 0, worker_log[-3000:]
    for log in (chief_log, worker_log):
        assert f"resuming from epoch {done} of 8" in log
    assert chief["resumed_from_epoch"] == worker["resumed_from_epoch"] == done
    summary = store.read_json("train_summary.json")
    assert summary["epochs_run"] == 8 and summary["resumed_from_epoch"] == done

    # The same two workers, never killed: the resumed run's epochs are theirs.
    straight = str(tmp_path / "straight")
    for code, log, _ in finish(start_workers(prepared, straight, tmp_path, "--epochs", "8")):
        assert code == 0, log[-3000:]
    assert history_without_timing(store) == history_without_timing(open_store(straight))


def history_without_timing(store) -> list[dict]:
    rows = list(csv.DictReader(io.StringIO(store.read_text("history.csv"))))
    return [{k: v for k, v in row.items() if k != "epoch_seconds"} for row in rows]


def test_multi_worker_without_tf_config_is_one_clear_error(prepared, tmp_path, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    result = subprocess.run(
        [
            CLI,
            "train",
            "--prepared",
            prepared,
            "--output",
            str(tmp_path / "m"),
            "--distribution",
            "multi-worker",
            *TINY,
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("plateau-lstm train: error: --distribution multi-worker needs TF_CONFIG")
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("{not json", "TF_CONFIG must be JSON like"),
        ('{"cluster": {"worker": ["a:1"]}}', "TF_CONFIG must be JSON like"),
        (
            '{"cluster": {"worker": ["a:1"], "ps": ["b:2"]}, "task": {"type": "ps", "index": 0}}',
            "task type 'ps' does not train",
        ),
    ],
)
def test_a_bad_tf_config_is_refused_before_training(value, expected, monkeypatch):
    monkeypatch.setenv("TF_CONFIG", value)
    with pytest.raises(UserError, match=re.escape(expected)):
        choose("multi-worker")


def test_auto_without_gpus_or_tf_config_trains_on_one_device(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    placement = choose("auto")
    assert (placement.kind, placement.replicas, placement.is_chief) == ("none", 1, True)
    # One process: the chief's numbers are everyone's already.
    assert broadcast_from_chief(placement, [1.0, float("nan")])[0] == 1.0


@pytest.mark.parametrize(
    ("rule", "replicas", "expected"),
    [("sqrt", 4, (2e-4, 4e-3)), ("linear", 4, (4e-4, 8e-3)), ("none", 4, (1e-4, 2e-3)),
     ("sqrt", 1, (1e-4, 2e-3))],
)  # fmt: skip
def test_learning_rate_scaling_rules(rule, replicas, expected):
    assert scaled_learning_rates(1e-4, 2e-3, replicas, rule) == pytest.approx(expected)


def test_learning_rate_scaling_refuses_an_unknown_rule():
    with pytest.raises(ValueError, match="lr_scaling must be one of sqrt, linear, none"):
        scaled_learning_rates(1e-4, 2e-3, 2, "cubic")


def test_follow_chief_validates_its_arguments():
    from plateau_lstm.callbacks.follow_chief import FollowChief
    from plateau_lstm.losses import AdaptiveLoss
    from plateau_lstm.schedules import Triangular2Schedule

    schedule = Triangular2Schedule(base_lr=1e-4, max_lr=1e-3, step_size=10)
    with pytest.raises(ValueError, match="`distribution` must be a Distribution"):
        FollowChief("multi-worker", schedule, AdaptiveLoss())
    one = Distribution(strategy=None, kind="none", replicas=1, is_chief=True, worker="")
    with pytest.raises(ValueError, match="`schedule` must be a Triangular2Schedule"):
        FollowChief(one, 1e-3, AdaptiveLoss())
    with pytest.raises(ValueError, match="`loss` must be an AdaptiveLoss"):
        FollowChief(one, schedule, "mse")


# --- mixed precision --------------------------------------------------------------------------


def test_mixed_precision_trains_float16_cudnn_eligible_cells_with_loss_scaling(prepared, tmp_path):
    import keras
    import numpy as np

    from plateau_lstm.config import TrainConfig
    from plateau_lstm.model import lstm_layers
    from plateau_lstm.prepared import load_prepared
    from plateau_lstm.train import _build_model

    output = tmp_path / "model"
    assert main(["train", "--prepared", prepared, "--output", str(output), "--epochs", "2",
                 "--mixed-precision", *TINY, *ONE_REPLICA]) == 0  # fmt: skip
    summary = open_store(str(output)).read_json("train_summary.json")
    assert summary["config"]["mixed_precision"] is True
    assert summary["optimizer"] == "LossScaleOptimizer"  # Keras' dynamic loss scaling
    assert np.isfinite(summary["val_mse_best"])

    # What trains: float16 cells that still meet the cuDNN conditions, a float32 output.
    trained = _build_model(TrainConfig(window=16, mixed_precision=True), 1, [1.0])
    cells = lstm_layers(trained)
    assert cells and all(layer.dtype_policy.name == "mixed_float16" for layer in cells)
    for layer in cells:
        config = layer.get_config()
        assert config["activation"] == "tanh" and config["recurrent_activation"] == "sigmoid"
        assert config["recurrent_dropout"] == 0 and not config["unroll"] and config["use_bias"]
    assert trained.get_layer("forecast").dtype_policy.name == "float32"

    # What is saved and served: float32 throughout, whatever precision it trained in.
    model = keras.saving.load_model(output / "model.keras", safe_mode=True)
    assert all(layer.dtype_policy.name == "float32" for layer in lstm_layers(model))
    windows = load_prepared(open_store(prepared)).values[:16][None, :, :]
    forecast = model.predict(windows.astype("float32"), verbose=0)
    assert forecast.dtype == np.float32 and np.isfinite(forecast).all()
    # The process's policy is back to float32 for whatever runs next.
    assert keras.config.dtype_policy().name == "float32"
