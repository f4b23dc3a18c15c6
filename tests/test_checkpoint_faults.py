"""Faults: storage that stops mid-upload, storage that never comes back, damaged checkpoints.

Every S3 fault is real: the `seaweedfs` fixture SIGKILLs the server and starts it again on the
same ports and data. The uploader's own behaviour (bounded queue, retries, the final wait) is
driven with plain callables as jobs; nothing of ours is mocked.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from plateau_lstm.background_uploader import BackgroundUploader, UploadJob, UploadsFailed
from plateau_lstm.checkpoints import COMMITTED, CheckpointStore, write_manifest
from plateau_lstm.cli import main
from plateau_lstm.errors import TrainingFailed
from plateau_lstm.storage import StorageError, open_store

TINY = [
    "--window",
    "16",
    "--lstm-units",
    "8",
    "--dense-units",
    "8",
    "--batch-size",
    "32",
    "--seed",
    "7",
    "--verbose",
    "2",
]


def wait_for(condition, timeout: float, what: str, child=None, explain=None) -> None:
    """Poll `condition`; fail at once if `child` exits first, with `explain()` in the message."""
    deadline = time.monotonic() + timeout
    while not condition():
        if child is not None and child.poll() is not None:
            pytest.fail(f"the run exited ({child.returncode}) before {what}:\n{explain()}")
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out waiting for {what}:\n{explain() if explain else ''}")
        time.sleep(0.02)


def stage(root: Path, epoch: int, size: int = 1000) -> Path:
    folder = root / f"stage-{epoch}"
    folder.mkdir(parents=True)
    (folder / "model.weights.h5").write_bytes(os.urandom(size))
    (folder / "state.json").write_text(json.dumps({"epoch": epoch}))
    write_manifest(folder, epoch=epoch, monitor="val_mse", value=1.0 / epoch)
    return folder


def train_child(prepared: str, output: str, *extra: str) -> subprocess.Popen:
    script = Path(sys.executable).with_name("plateau-lstm")
    command = [script, "train", "--prepared", prepared, "--output", output, *TINY, *extra]
    return subprocess.Popen(
        [str(part) for part in command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


class Lines:
    """Reads a pipe in a thread, keeping each line with the time it arrived."""

    def __init__(self, pipe):
        self.lines: list[tuple[float, str]] = []
        self._thread = threading.Thread(target=self._read, args=(pipe,), daemon=True)
        self._thread.start()

    def _read(self, pipe) -> None:
        for line in pipe:
            self.lines.append((time.monotonic(), line.rstrip("\n")))

    def text(self) -> str:
        self._thread.join(timeout=30)
        return "\n".join(line for _, line in self.lines)

    def so_far(self) -> str:
        """What arrived until now, without waiting for the pipe to close."""
        return "\n".join(line for _, line in list(self.lines))


# ------------------------------------------------------------------------------------------------
# The uploader on its own


def test_submit_never_waits_and_a_failing_job_is_retried_until_it_succeeds(caplog):
    attempts = []

    def flaky():
        attempts.append(time.monotonic())
        if len(attempts) < 3:
            raise StorageError("cannot reach the S3 endpoint (simulated by the job itself)")

    uploader = BackgroundUploader(first_retry_s=0.05, max_retry_s=0.1)
    with caplog.at_level(logging.INFO, logger="plateau_lstm"), uploader:
        started = time.perf_counter()
        uploader.submit(UploadJob("checkpoint epoch-0001", flaky))
        assert time.perf_counter() - started < 0.05
        uploader.wait(timeout=10)
    assert len(attempts) == 3 and uploader.failures == 2
    assert [job.name for job in uploader.completed] == ["checkpoint epoch-0001"]
    assert "uploading checkpoint epoch-0001 failed (cannot reach the S3 endpoint" in caplog.text
    assert "retrying in the background, training goes on" in caplog.text
    assert "uploaded checkpoint epoch-0001 after 3 attempts" in caplog.text


def test_a_full_queue_drops_the_oldest_waiting_checkpoint_never_the_model(caplog):
    release = threading.Event()
    ran, discarded = [], []

    def job(name, droppable=True):
        def work():
            if name == "first":
                release.wait(10)
            ran.append(name)

        return UploadJob(name, work, droppable=droppable, on_discard=lambda: discarded.append(name))

    with BackgroundUploader(max_pending=2) as uploader:
        uploader.submit(job("first"))
        wait_for(lambda: not uploader._pending, 5, "the first job to start")
        for name in ("second", "model"):
            uploader.submit(job(name, droppable=name != "model"))
        with caplog.at_level(logging.WARNING, logger="plateau_lstm"):
            uploader.submit(job("third"))  # full: "second" goes, the model stays
            uploader.submit(job("fourth"))  # full again: only the model waits besides "third"
        release.set()
        uploader.wait(timeout=10)
    assert ran == ["first", "model", "fourth"]
    assert uploader.dropped == ["second", "third"]
    assert "skipped uploading second (superseded by third)" in caplog.text
    assert sorted(discarded) == ["first", "fourth", "model", "second", "third"]


def test_wait_fails_with_what_did_not_land_and_what_to_do():
    def down():
        raise StorageError("cannot reach the S3 endpoint http://127.0.0.1:1 for s3://b/x")

    uploader = BackgroundUploader(first_retry_s=0.05, max_retry_s=0.05)
    uploader.submit(UploadJob("checkpoint epoch-0006", down))
    uploader.submit(UploadJob("the model", down, droppable=False))
    with pytest.raises(UploadsFailed) as excinfo:
        uploader.wait(timeout=0.5)
    uploader.close()
    message = str(excinfo.value)
    assert isinstance(excinfo.value, TrainingFailed)
    assert message.startswith(
        "storage did not take checkpoint epoch-0006, the model within 0.5 s of the end of training"
    )
    assert "cannot reach the S3 endpoint http://127.0.0.1:1" in message
    assert "run the same command: it resumes from the last committed checkpoint" in message


def test_bad_uploader_settings_are_refused():
    with pytest.raises(ValueError, match="max_pending=0"):
        BackgroundUploader(max_pending=0)
    with pytest.raises(ValueError, match="first_retry_s=2"):
        BackgroundUploader(first_retry_s=2, max_retry_s=1)


# ------------------------------------------------------------------------------------------------
# A real S3 server that goes away


def test_a_server_killed_mid_upload_leaves_no_commit_and_the_retry_completes(
    s3_env, seaweedfs, tmp_path
):
    bucket = s3_env.removeprefix("s3://")
    output = open_store(f"{s3_env}/runs/r1/model", max_attempts=2, connect_timeout=2)
    checkpoints = CheckpointStore(output)
    # 48 MiB: six multipart parts, so the kill lands inside the upload, not after it.
    folder = stage(tmp_path, 1, size=48 * 1024 * 1024)
    outcome: list[BaseException | None] = []

    def publish():
        try:
            checkpoints.publish(folder)
            outcome.append(None)
        except BaseException as err:
            outcome.append(err)

    client = seaweedfs.client()
    writer = threading.Thread(target=publish)
    writer.start()
    try:
        wait_for(
            lambda: client.list_multipart_uploads(Bucket=bucket).get("Uploads") or outcome,
            60,
            "the multipart upload to start",
        )
        seaweedfs.stop()
        writer.join(120)
    finally:
        seaweedfs.start()
    assert outcome and isinstance(outcome[0], StorageError), outcome

    assert checkpoints.committed_epochs() == []
    assert not output.exists(f"checkpoints/epoch-0001/{COMMITTED}")
    assert checkpoints.load_latest(tmp_path / "resume") == (None, [])
    checkpoints.abort_incomplete_uploads()
    assert not client.list_multipart_uploads(Bucket=bucket).get("Uploads")

    checkpoints.publish(folder)
    assert checkpoints.load(1, tmp_path / "verified").epoch == 1


def test_uploads_wait_out_a_server_restart_while_the_caller_goes_on(s3_env, seaweedfs, tmp_path):
    checkpoints = CheckpointStore(open_store(f"{s3_env}/runs/r1/model", max_attempts=2))
    uploader = BackgroundUploader(first_retry_s=0.2, max_retry_s=1.0)
    try:
        seaweedfs.stop()
        started = time.perf_counter()
        for epoch in (1, 2):
            folder = stage(tmp_path, epoch)
            uploader.submit(UploadJob(f"epoch {epoch}", lambda f=folder: checkpoints.publish(f)))
        assert time.perf_counter() - started < 0.5  # the caller (training) never waited
        wait_for(lambda: uploader.failures >= 1, 60, "an upload to fail")
    finally:
        seaweedfs.start()
    uploader.wait(timeout=120)
    uploader.close()
    assert checkpoints.committed_epochs() == [1, 2]
    for epoch in (1, 2):
        assert checkpoints.load(epoch, tmp_path / f"check-{epoch}").epoch == epoch


def test_training_goes_on_through_a_server_restart_and_publishes_everything(
    prepared, s3_env, seaweedfs, tmp_path
):
    output_uri = f"{s3_env}/runs/r1/model"
    output = open_store(output_uri)
    child = train_child(prepared, output_uri, "--epochs", "6")
    stdout, stderr = Lines(child.stdout), Lines(child.stderr)
    try:
        try:
            wait_for(
                lambda: output.exists(f"checkpoints/epoch-0002/{COMMITTED}"),
                300,
                "epoch 2",
                child,
                lambda: f"{stderr.so_far()[-3000:]}\n--- weed:\n{seaweedfs.log_tail()}",
            )
            seaweedfs.stop()
            stopped = time.monotonic()
            time.sleep(2)
        finally:
            seaweedfs.start()
        restarted = time.monotonic()
        assert child.wait(timeout=400) == 0, stderr.text()[-3000:]
    finally:
        child.kill()  # no training left behind on the shared machine when an assert fails
        child.wait()

    log = stderr.text()
    assert "failed (" in log and "retrying in the background, training goes on" in log
    assert "after" in log and "attempts" in log
    epoch_ends = [t for t, line in stdout.lines if " - val_mse: " in line]
    assert len(epoch_ends) == 6
    assert any(stopped < t < restarted for t in epoch_ends), "no epoch ended during the outage"
    checkpoints = CheckpointStore(output)
    committed = checkpoints.committed_epochs()
    assert committed[-1] == 6
    for epoch in committed:  # every COMMITTED has all its files, each matching its checksum
        checkpoints.load(epoch, tmp_path / f"verify-{epoch}")
    assert output.read_json("train_summary.json")["epochs_run"] == 6


def test_storage_that_never_returns_fails_the_run_at_the_end_and_a_rerun_resumes(
    prepared, s3_env, seaweedfs, caplog
):
    output_uri = f"{s3_env}/runs/r1/model"
    output = open_store(output_uri)
    child = train_child(prepared, output_uri, "--epochs", "4", "--storage-wait", "3")
    stderr = Lines(child.stderr)
    try:
        wait_for(
            lambda: output.exists(f"checkpoints/epoch-0001/{COMMITTED}"),
            300,
            "epoch 1",
            child,
            lambda: f"{stderr.so_far()[-3000:]}\n--- weed:\n{seaweedfs.log_tail()}",
        )
        seaweedfs.stop()
        assert child.wait(timeout=400) == 1
    finally:
        child.kill()
        child.wait()
        seaweedfs.start()
    log = stderr.text()
    assert "Traceback" not in log
    last = log.strip().splitlines()[-1]
    assert last.startswith("plateau-lstm train: failed: storage did not take ")
    assert "the model within 3 s of the end of training" in last
    assert "cannot reach the S3 endpoint" in last
    assert "run the same command: it resumes from the last committed checkpoint" in last
    assert not output.exists("train_summary.json")

    # The advice holds: with storage back, the same command picks up the committed work.
    done = CheckpointStore(output).committed_epochs()[-1]
    rerun = ["train", "--prepared", prepared, "--output", output_uri, *TINY, "--epochs", "4"]
    with caplog.at_level(logging.INFO, logger="plateau_lstm"):
        assert main(rerun) == 0
    assert f"resuming from epoch {done} of 4" in caplog.text
    assert output.read_json("train_summary.json")["epochs_run"] == 4


def test_a_damaged_checkpoint_is_detected_and_the_run_resumes_from_the_one_before(
    prepared, s3_env, seaweedfs, caplog, tmp_path
):
    output_uri = f"{s3_env}/runs/r1/model"
    output = open_store(output_uri)
    args = ["train", "--prepared", prepared, "--output", output_uri, *TINY, "--epochs", "3"]
    assert main(args) == 0
    trace = output.read_bytes("learning_rate.csv")
    # As if the pod died after its last checkpoint, which then rotted on the server.
    output.delete("train_summary.json")
    bucket = s3_env.removeprefix("s3://")
    seaweedfs.client().put_object(
        Bucket=bucket,
        Key="runs/r1/model/checkpoints/epoch-0003/variables.npz",
        Body=b"not the weights that were checksummed",
    )

    with caplog.at_level(logging.INFO, logger="plateau_lstm"):
        assert main(args) == 0
    assert (
        f"checkpoint {output_uri}/checkpoints/epoch-0003 is damaged (variables.npz does not "
        "match its sha256 in manifest.json); using the one before it"
    ) in caplog.text
    assert "resuming from epoch 2 of 3" in caplog.text
    summary = output.read_json("train_summary.json")
    assert summary["resumed_from_epoch"] == 2 and summary["epochs_run"] == 3
    assert output.read_bytes("learning_rate.csv") == trace
    checkpoints = CheckpointStore(output)
    assert checkpoints.load(3, tmp_path / "verified").epoch == 3  # written again, whole
