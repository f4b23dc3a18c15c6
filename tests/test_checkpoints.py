"""The checkpoint protocol on a local directory and on a real SeaweedFS: commit, verify, prune."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from plateau_lstm.checkpoints import (
    COMMITTED,
    MANIFEST,
    CheckpointStore,
    CorruptCheckpoint,
    checkpoint_name,
    write_manifest,
)
from plateau_lstm.storage import ArtifactStore, open_store


@pytest.fixture(params=["file", "s3"])
def output(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    """A train --output on both backends, below a run prefix like the DAG composes it."""
    if request.param == "file":
        return open_store(str(tmp_path / "artifacts" / "runs" / "r1" / "model"))
    bucket_uri = request.getfixturevalue("s3_env")
    return open_store(f"{bucket_uri}/runs/r1/model")


def stage(root: Path, epoch: int, value: float | None, payload: bytes | None = None) -> Path:
    """A checkpoint folder as the Checkpointer leaves it: state files, manifest, COMMITTED."""
    folder = root / f"stage-{epoch}"
    folder.mkdir(parents=True)
    (folder / "model.weights.h5").write_bytes(payload or f"weights of epoch {epoch}".encode())
    (folder / "state.json").write_text(json.dumps({"epoch": epoch}))
    write_manifest(folder, epoch=epoch, monitor="val_mse", value=value)
    return folder


def publish(checkpoints: CheckpointStore, root: Path, values: dict[int, float | None]) -> None:
    for epoch, value in values.items():
        checkpoints.publish(stage(root, epoch, value))


def test_checkpoint_names_sort_in_epoch_order():
    assert checkpoint_name(3) == "epoch-0003"
    assert sorted(checkpoint_name(e) for e in (10, 2, 100)) == [
        "epoch-0002",
        "epoch-0010",
        "epoch-0100",
    ]
    with pytest.raises(ValueError, match="epoch=-1"):
        checkpoint_name(-1)


def test_manifest_lists_every_file_with_its_sha256_and_commit_names_the_manifest(tmp_path):
    folder = stage(tmp_path, 3, 0.5)
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["epoch"] == 3 and manifest["monitor_value"] == 0.5
    assert set(manifest["files"]) == {"model.weights.h5", "state.json"}
    assert all(len(entry["sha256"]) == 64 for entry in manifest["files"].values())
    commit = json.loads((folder / COMMITTED).read_text())
    assert commit["epoch"] == 3 and len(commit["manifest_sha256"]) == 64


def test_published_checkpoint_loads_back_verified(output, tmp_path):
    checkpoints = CheckpointStore(output)
    checkpoints.publish(stage(tmp_path, 1, 0.9, payload=b"\x00binary\xff" * 1000))
    assert checkpoints.committed_epochs() == [1]
    loaded = checkpoints.load(1, tmp_path / "loaded")
    assert loaded.epoch == 1 and loaded.monitor_value == 0.9
    assert loaded.uri == f"{output.uri}/checkpoints/epoch-0001"
    assert (loaded.directory / "model.weights.h5").read_bytes() == b"\x00binary\xff" * 1000
    assert sorted(output.list()) == [
        f"checkpoints/epoch-0001/{name}"
        for name in sorted([COMMITTED, MANIFEST, "model.weights.h5", "state.json"])
    ]


def test_an_uncommitted_folder_is_never_trusted(output, tmp_path):
    checkpoints = CheckpointStore(output)
    publish(checkpoints, tmp_path, {1: 0.9})
    # What a writer killed before its COMMITTED leaves behind: every file but the marker.
    partial = stage(tmp_path, 2, 0.8)
    for path in partial.iterdir():
        if path.name != COMMITTED:
            output.upload_file(path, f"checkpoints/epoch-0002/{path.name}")
    assert checkpoints.committed_epochs() == [1]
    loaded, damaged = checkpoints.load_latest(tmp_path / "resume")
    assert loaded.epoch == 1 and damaged == []


@pytest.mark.parametrize(
    ("target", "damage"),
    [
        ("model.weights.h5", b"flipped bits"),  # a file that does not match its sha256
        (MANIFEST, b'{"epoch": 2, "files": {}}'),  # a manifest that does not match COMMITTED
        (COMMITTED, b"not json"),
    ],
)
def test_a_damaged_checkpoint_is_skipped_with_a_warning_for_the_previous_one(
    output, tmp_path, caplog, target, damage
):
    checkpoints = CheckpointStore(output)
    publish(checkpoints, tmp_path, {1: 0.9, 2: 0.8})
    output.write_bytes(f"checkpoints/epoch-0002/{target}", damage)
    with pytest.raises(CorruptCheckpoint):
        checkpoints.load(2, tmp_path / "direct")
    with caplog.at_level(logging.WARNING, logger="plateau_lstm"):
        loaded, damaged = checkpoints.load_latest(tmp_path / "resume")
    assert loaded.epoch == 1 and damaged == [2]
    warning = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert f"{output.uri}/checkpoints/epoch-0002 is damaged" in warning
    assert "using the one before it" in warning


def test_a_missing_file_makes_the_checkpoint_damaged(output, tmp_path):
    checkpoints = CheckpointStore(output)
    publish(checkpoints, tmp_path, {1: 0.9})
    output.delete("checkpoints/epoch-0001/state.json")
    with pytest.raises(CorruptCheckpoint, match="state.json is listed in manifest.json but"):
        checkpoints.load(1, tmp_path / "x")
    assert checkpoints.load_latest(tmp_path / "y") == (None, [1])


def test_withdraw_removes_the_marker_so_nobody_trusts_the_rest(output, tmp_path):
    checkpoints = CheckpointStore(output)
    publish(checkpoints, tmp_path, {1: 0.9, 2: 0.8})
    checkpoints.withdraw(2)
    assert checkpoints.committed_epochs() == [1]
    assert not [key for key in output.list() if "epoch-0002" in key]


def test_prune_keeps_the_last_k_and_the_best(output, tmp_path):
    checkpoints = CheckpointStore(output, keep_last=3)
    # The best is epoch 2; epoch 4 diverged (no finite value) and can never be the best.
    publish(checkpoints, tmp_path, {1: 0.9, 2: 0.3, 3: 0.7, 4: None, 5: 0.6, 6: 0.5})
    assert checkpoints.prune() == [1, 3]
    assert checkpoints.committed_epochs() == [2, 4, 5, 6]
    assert checkpoints.best_epoch() == 2


def test_prune_reads_the_best_from_manifests_written_by_an_earlier_process(output, tmp_path):
    publish(CheckpointStore(output), tmp_path, {1: 0.2, 2: 0.9, 3: 0.8, 4: 0.7})
    fresh = CheckpointStore(output, keep_last=2)  # a resumed run knows nothing in memory
    assert fresh.prune() == [2]
    assert fresh.committed_epochs() == [1, 3, 4]


def test_prune_removes_leftovers_older_than_the_newest_commit_but_not_newer_ones(output, tmp_path):
    checkpoints = CheckpointStore(output, keep_last=1)
    publish(checkpoints, tmp_path, {3: 0.5})
    output.write_bytes("checkpoints/epoch-0002/model.weights.h5", b"left by a killed writer")
    output.write_bytes("checkpoints/epoch-0004/model.weights.h5", b"possibly being written")
    checkpoints.prune()
    assert not output.list("checkpoints/epoch-0002")
    assert output.list("checkpoints/epoch-0004") == ["checkpoints/epoch-0004/model.weights.h5"]


def test_republishing_an_epoch_replaces_a_partial_folder(output, tmp_path):
    checkpoints = CheckpointStore(output)
    output.write_bytes("checkpoints/epoch-0001/stale.bin", b"from the killed run")
    checkpoints.publish(stage(tmp_path, 1, 0.5))
    assert "checkpoints/epoch-0001/stale.bin" not in output.list()
    assert checkpoints.load(1, tmp_path / "x").epoch == 1


def test_keep_last_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="keep_last=0"):
        CheckpointStore(open_store(str(tmp_path)), keep_last=0)


def test_two_runs_whose_ids_share_a_prefix_never_touch_each_other(s3_env, seaweedfs, tmp_path):
    """runs/night-1 and runs/night-10: a string prefix of each other, separate runs all the same."""
    night1 = CheckpointStore(open_store(f"{s3_env}/runs/night-1/model"), keep_last=1)
    night10 = CheckpointStore(open_store(f"{s3_env}/runs/night-10/model"), keep_last=1)
    publish(night1, tmp_path / "a", {1: 0.5, 2: 0.6, 3: 0.7})
    bucket = s3_env.removeprefix("s3://")
    client = seaweedfs.client()

    def snapshot(prefix: str) -> dict[str, str]:
        listing = client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
        return {item["Key"]: item["ETag"] for item in listing}

    before = snapshot("runs/night-1/")
    left = client.create_multipart_upload(
        Bucket=bucket, Key="runs/night-1/model/checkpoints/epoch-0004/model.weights.h5"
    )
    # Everything night-10 does to its own checkpoints: write, prune, withdraw, abort uploads.
    publish(night10, tmp_path / "b", {1: 0.1, 2: 0.2, 3: 0.3})
    night10.prune()
    night10.withdraw(3)
    night10.abort_incomplete_uploads()

    assert snapshot("runs/night-1/") == before
    uploads = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert [u["UploadId"] for u in uploads] == [left["UploadId"]]
    assert night1.committed_epochs() == [1, 2, 3]
    assert all(key.startswith("runs/night-10/") for key in snapshot("runs/night-10"))
