"""The artifact store behaves the same on a local directory and on S3 (a real SeaweedFS)."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from plateau_lstm.storage import (
    TEMP_PREFIX,
    ArtifactExistsError,
    ArtifactNotFoundError,
    ArtifactStore,
    LocalStore,
    S3Store,
    StorageError,
    open_store,
)


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    """The same tests on both backends; the S3 one sits below a prefix to exercise key mapping."""
    if request.param == "file":
        return open_store(str(tmp_path / "artifacts"))
    bucket_uri = request.getfixturevalue("s3_env")
    return open_store(f"{bucket_uri}/artifacts")


def make_dir(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def closed_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ------------------------------------------------------------------------------------------------
# open_store


def test_open_store_accepts_file_uris_plain_paths_and_s3(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert open_store(f"file://{tmp_path}/a").uri == (tmp_path / "a").as_uri()
    assert open_store(tmp_path / "a").uri == (tmp_path / "a").as_uri()
    assert open_store("relative/dir").uri == (tmp_path / "relative" / "dir").as_uri()
    assert isinstance(open_store("relative/dir"), LocalStore)
    assert open_store("file:///tmp/with%20space").uri == Path("/tmp/with space").as_uri()
    s3 = open_store("s3://bucket/runs/r1/")
    assert isinstance(s3, S3Store)
    assert (s3.uri, s3.bucket, s3.prefix) == ("s3://bucket/runs/r1", "bucket", "runs/r1")
    assert open_store("s3://bucket").uri == "s3://bucket"


@pytest.mark.parametrize(
    "uri",
    [
        "",
        "gs://bucket/x",
        "https://host/x",
        "s3://",
        "s3:/bucket/x",
        "file://host/x",
        "file:relative",
        "s3://bucket/a/../b",
    ],
)
def test_open_store_rejects_other_uris_naming_the_accepted_forms(uri):
    with pytest.raises(ValueError) as excinfo:
        open_store(uri)
    message = str(excinfo.value)
    assert repr(uri) in message
    if "../" not in uri:
        assert "file:///" in message and "s3://bucket/prefix" in message


# ------------------------------------------------------------------------------------------------
# Behaviour shared by both backends


def test_bytes_and_text_round_trip(store):
    store.write_bytes("runs/r1/blob.bin", b"\x00\x01binary\xff")
    store.write_text("runs/r1/note.txt", "plateaus — überall\n")
    assert store.read_bytes("runs/r1/blob.bin") == b"\x00\x01binary\xff"
    assert store.read_text("runs/r1/note.txt") == "plateaus — überall\n"
    store.write_bytes("runs/r1/blob.bin", b"replaced")
    assert store.read_bytes("runs/r1/blob.bin") == b"replaced"


def test_json_is_sorted_indented_and_ends_with_a_newline(store):
    document = {"val_mse": 0.5, "epochs": 3, "nested": {"b": 1, "a": [1, 2]}}
    store.write_json("eval/metrics.json", document)
    assert store.read_json("eval/metrics.json") == document
    text = store.read_text("eval/metrics.json")
    assert text == json.dumps(document, sort_keys=True, indent=2) + "\n"
    assert text.index('"epochs"') < text.index('"nested"') < text.index('"val_mse"')


def test_list_is_recursive_sorted_and_files_only(store):
    for key in [
        "runs/b/model.keras",
        "runs/a/prepared/train.parquet",
        "runs/a/x.json",
        "runs/ab/y.json",
        "champion.json",
    ]:
        store.write_bytes(key, b"x")
    assert store.list() == [
        "champion.json",
        "runs/a/prepared/train.parquet",
        "runs/a/x.json",
        "runs/ab/y.json",
        "runs/b/model.keras",
    ]
    # A prefix is a directory: "runs/a" does not reach into "runs/ab".
    assert store.list("runs/a") == ["runs/a/prepared/train.parquet", "runs/a/x.json"]
    assert store.list("runs/a/") == store.list("runs/a")
    assert store.list("runs/missing") == []
    assert store.list("champion.json") == []


def test_exists_is_true_for_files_only(store):
    assert not store.exists("runs/r1/model.keras")
    store.write_bytes("runs/r1/model.keras", b"m")
    assert store.exists("runs/r1/model.keras")
    assert not store.exists("runs/r1")


def test_missing_key_raises_a_clear_not_found_error(store, tmp_path):
    expected = f"no such artifact: {store.uri}/runs/x/model.keras"
    with pytest.raises(ArtifactNotFoundError) as excinfo:
        store.read_bytes("runs/x/model.keras")
    assert str(excinfo.value) == expected
    assert isinstance(excinfo.value, StorageError)
    assert isinstance(excinfo.value, FileNotFoundError)
    with pytest.raises(ArtifactNotFoundError, match="no such artifact"):
        store.download_file("runs/x/model.keras", tmp_path / "downloads" / "model.keras")
    assert not (tmp_path / "downloads" / "model.keras").exists()


@pytest.mark.parametrize(
    "bad_key", ["", "/abs", "a//b", "../up", "a/./b", "a\\b", f"runs/{TEMP_PREFIX}part-x"]
)
def test_keys_that_could_escape_or_collide_are_rejected(store, bad_key):
    with pytest.raises(ValueError, match="Received"):
        store.write_bytes(bad_key, b"x")


def test_child_stores_are_rooted_deeper(store):
    run = store.child("runs/r1")
    assert run.uri == f"{store.uri}/runs/r1"
    model = run.child("model")
    model.write_bytes("model.keras", b"weights")
    assert store.read_bytes("runs/r1/model/model.keras") == b"weights"
    assert run.list() == ["model/model.keras"]
    assert model.exists("model.keras")
    assert model.key_uri("model.keras") == f"{store.uri}/runs/r1/model/model.keras"


def test_delete_and_delete_prefix(store):
    for key in ["runs/a/1", "runs/a/sub/2", "runs/ab/3", "keep.json"]:
        store.write_bytes(key, b"x")
    store.delete("keep.json")
    store.delete("keep.json")  # deleting what is gone is fine: cleanup may be retried
    assert not store.exists("keep.json")
    assert store.delete_prefix("runs/a") == 2
    assert store.list() == ["runs/ab/3"]
    assert store.delete_prefix("runs/none") == 0
    run = store.child("runs/ab")
    assert run.delete_prefix("") == 1
    assert store.list() == []


def test_large_file_round_trip_keeps_every_byte(store, tmp_path):
    source = tmp_path / "big.bin"
    with source.open("wb") as f:
        for _ in range(20):  # 20 MiB: above the 8 MiB multipart threshold
            f.write(os.urandom(1 << 20))
    store.upload_file(source, "runs/r1/model/big.bin")
    target = tmp_path / "downloaded" / "big.bin"
    store.download_file("runs/r1/model/big.bin", target)
    assert sha256(target) == sha256(source)
    if isinstance(store, S3Store):
        head = store.client.head_object(
            Bucket=store.bucket, Key=f"{store.prefix}/runs/r1/model/big.bin"
        )
        assert head["ETag"].strip('"').endswith("-3")  # went up as three 8 MiB-or-less parts


def test_upload_of_a_missing_local_file_is_a_storage_error(store, tmp_path):
    with pytest.raises(StorageError, match="no-such-file"):
        store.upload_file(tmp_path / "no-such-file", "x")


# ------------------------------------------------------------------------------------------------
# publish_dir


def test_publish_dir_publishes_the_whole_directory(store, tmp_path):
    source = make_dir(
        tmp_path / "out", {"train.parquet": b"t", "sub/scaler.json": b"{}", "manifest.json": b"{}"}
    )
    keys = store.publish_dir(source, "runs/r1/prepared")
    expected = [
        "runs/r1/prepared/manifest.json",
        "runs/r1/prepared/sub/scaler.json",
        "runs/r1/prepared/train.parquet",
    ]
    assert keys == expected
    assert store.list() == expected
    assert store.read_bytes("runs/r1/prepared/sub/scaler.json") == b"{}"
    assert (source / "train.parquet").exists()  # the source is copied, not moved


def test_publish_dir_refuses_an_existing_prefix_without_overwrite(store, tmp_path):
    first = make_dir(tmp_path / "first", {"a": b"1", "manifest.json": b"first"})
    second = make_dir(tmp_path / "second", {"a": b"2", "manifest.json": b"second"})
    store.publish_dir(first, "runs/r1/prepared")
    with pytest.raises(ArtifactExistsError) as excinfo:
        store.publish_dir(second, "runs/r1/prepared")
    assert isinstance(excinfo.value, FileExistsError)
    assert f"{store.uri}/runs/r1/prepared" in str(excinfo.value)
    assert "overwrite=True" in str(excinfo.value)
    assert store.read_bytes("runs/r1/prepared/manifest.json") == b"first"


def test_publish_dir_overwrite_replaces_the_whole_set(store, tmp_path):
    old = make_dir(tmp_path / "old", {"a": b"old", "gone": b"old", "manifest.json": b"old"})
    new = make_dir(tmp_path / "new", {"a": b"new", "added": b"new", "manifest.json": b"new"})
    store.publish_dir(old, "ckpt")
    store.publish_dir(new, "ckpt", overwrite=True)
    assert store.list() == ["ckpt/a", "ckpt/added", "ckpt/manifest.json"]
    assert {key: store.read_bytes(key) for key in store.list()} == {
        "ckpt/a": b"new",
        "ckpt/added": b"new",
        "ckpt/manifest.json": b"new",
    }


def test_publish_dir_requires_the_commit_file(store, tmp_path):
    source = make_dir(tmp_path / "out", {"weights.h5": b"w"})
    with pytest.raises(ValueError, match="COMMITTED"):
        store.publish_dir(source, "ckpt", last="COMMITTED")
    assert store.list() == []
    assert store.publish_dir(source, "ckpt", last=None) == ["ckpt/weights.h5"]


def test_local_publish_is_never_seen_half_done(tmp_path):
    """A reader polling the prefix sees nothing, the old set or the new set; never a mix."""
    store = open_store(tmp_path / "artifacts")
    # Flat directories: one directory read is one consistent snapshot for the watcher.
    old = make_dir(
        tmp_path / "old", {f"old-{i:03d}": b"o" for i in range(60)} | {"manifest.json": b"o"}
    )
    new = make_dir(
        tmp_path / "new", {f"new-{i:03d}": b"n" for i in range(60)} | {"manifest.json": b"n"}
    )
    old_keys = frozenset(f"prepared/{p.name}" for p in old.iterdir())
    new_keys = frozenset(f"prepared/{p.name}" for p in new.iterdir())
    seen: list[frozenset[str]] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            seen.append(frozenset(store.list("prepared")))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        store.publish_dir(old, "prepared")
        store.publish_dir(new, "prepared", overwrite=True)
    finally:
        done.set()
        watcher.join()
    seen.append(frozenset(store.list("prepared")))
    assert set(seen) <= {frozenset(), old_keys, new_keys}
    assert seen[-1] == new_keys
    # Once the old set was there, the prefix never went empty: the old one stayed in place
    # until the new one replaced it.
    first_full = next(i for i, snapshot in enumerate(seen) if snapshot)
    assert frozenset() not in seen[first_full:]
    # No hidden staging or set-aside copies are left next to the target.
    assert sorted(os.listdir(store.root)) == ["prepared"]


def test_s3_publish_uploads_the_commit_file_after_all_others(s3_env, seaweedfs, tmp_path):
    store = open_store(f"{s3_env}/runs/r1")
    assert isinstance(store, S3Store)
    files = {f"part-{i:02d}.bin": os.urandom(1024) for i in range(12)}
    files |= {"sub/scaler.json": b"{}", "manifest.json": b"{}"}
    source = make_dir(tmp_path / "prepared", files)
    observer = seaweedfs.client()  # a separate client: what any other reader would see
    sent: list[str] = []
    visible_when_commit_sent: list[str] = []

    def before_send(request, **_):
        # Path-style URL: /<bucket>/<key>
        key = unquote(urlsplit(request.url).path).split("/", 2)[2]
        sent.append(key)
        if key.endswith("/manifest.json"):
            listing = observer.list_objects_v2(Bucket=store.bucket, Prefix="runs/r1/prepared/")
            visible_when_commit_sent.extend(item["Key"] for item in listing.get("Contents", []))

    store.client.meta.events.register("before-send.s3.PutObject", before_send)
    store.publish_dir(source, "prepared")
    assert sent[-1] == "runs/r1/prepared/manifest.json"
    assert sorted(sent) == sorted(f"runs/r1/prepared/{rel}" for rel in files)
    assert sorted(visible_when_commit_sent) == sorted(
        f"runs/r1/prepared/{rel}" for rel in files if rel != "manifest.json"
    )


def test_s3_publish_overwrite_withdraws_the_old_commit_file_first(s3_env, tmp_path):
    store = open_store(f"{s3_env}/ckpt")
    store.publish_dir(make_dir(tmp_path / "old", {"w": b"old", "manifest.json": b"old"}), "e1")
    requests: list[tuple[str, str]] = []
    store.client.meta.events.register(
        "before-parameter-build.s3.*",
        lambda model, params, **_: requests.append((model.name, params.get("Key", ""))),
    )
    store.publish_dir(
        make_dir(tmp_path / "new", {"w": b"new", "manifest.json": b"new"}), "e1", overwrite=True
    )
    writes = [(name, key) for name, key in requests if name in ("DeleteObjects", "PutObject")]
    assert writes[0][0] == "DeleteObjects"  # the old manifest goes before any new byte lands
    assert writes[-1] == ("PutObject", "ckpt/e1/manifest.json")
    assert store.read_bytes("e1/w") == b"new"


# ------------------------------------------------------------------------------------------------
# Unfinished uploads


def test_abort_incomplete_uploads_on_s3(s3_env, seaweedfs):
    store = open_store(f"{s3_env}/runs/r1")
    client = seaweedfs.client()
    bucket = store.bucket
    inside = client.create_multipart_upload(Bucket=bucket, Key="runs/r1/ckpt/epoch-0001/w.bin")
    client.upload_part(
        Bucket=bucket,
        Key="runs/r1/ckpt/epoch-0001/w.bin",
        UploadId=inside["UploadId"],
        PartNumber=1,
        Body=b"x" * 1024,
    )
    outside = client.create_multipart_upload(Bucket=bucket, Key="runs/r2/ckpt/w.bin")

    assert store.abort_incomplete_uploads("ckpt") == 1

    remaining = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert [upload["UploadId"] for upload in remaining] == [outside["UploadId"]]
    assert store.abort_incomplete_uploads("ckpt") == 0
    assert store.list() == []


def test_abort_incomplete_uploads_on_a_local_store_removes_crash_leftovers(tmp_path):
    store = open_store(tmp_path / "artifacts")
    store.write_bytes("ckpt/epoch-0001/weights.h5", b"w")
    # What a writer killed mid-write leaves: a temp file and a half-built staging directory.
    (store.root / "ckpt" / "epoch-0001" / f"{TEMP_PREFIX}part-1234-weights.h5").write_bytes(b"w")
    staging = store.root / "ckpt" / f"{TEMP_PREFIX}new-5678-epoch-0002"
    staging.mkdir()
    (staging / "weights.h5").write_bytes(b"w")
    assert store.list() == ["ckpt/epoch-0001/weights.h5"]  # leftovers are never listed

    assert store.abort_incomplete_uploads("ckpt") == 2

    assert sorted(p.name for p in (store.root / "ckpt").iterdir()) == ["epoch-0001"]
    assert os.listdir(store.root / "ckpt" / "epoch-0001") == ["weights.h5"]


# ------------------------------------------------------------------------------------------------
# Errors people can act on


def test_unreachable_endpoint_fails_fast_with_what_to_check(monkeypatch, tmp_path):
    port = closed_loopback_port()
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "nobody")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "nothing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    store = open_store("s3://bucket/runs", max_attempts=2, connect_timeout=1, read_timeout=1)
    started = time.monotonic()
    with pytest.raises(StorageError) as excinfo:
        store.read_bytes("r1/model.keras")
    assert time.monotonic() - started < 5
    message = str(excinfo.value)
    assert f"127.0.0.1:{port}" in message
    assert "AWS_ENDPOINT_URL_S3" in message
    assert "s3://bucket/runs/r1/model.keras" in message


def test_wrong_credentials_say_which_variables_to_check(s3_env, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    store = open_store(s3_env, max_attempts=1)
    with pytest.raises(StorageError) as excinfo:
        store.write_bytes("x.json", b"{}")
    assert "AWS_SECRET_ACCESS_KEY" in str(excinfo.value)
    assert not isinstance(excinfo.value, ArtifactNotFoundError)


def test_missing_bucket_is_named(s3_env):
    store = open_store(f"{s3_env}-does-not-exist/runs")
    with pytest.raises(StorageError, match="no such bucket"):
        store.write_bytes("x.json", b"{}")


def test_s3_outage_is_reported_and_the_same_store_recovers(s3_env, seaweedfs):
    store = open_store(f"{s3_env}/runs/r1", max_attempts=1, connect_timeout=1, read_timeout=2)
    store.write_json("model/history.json", {"epoch": 1})
    seaweedfs.stop()
    try:
        with pytest.raises(StorageError, match="AWS_ENDPOINT_URL_S3"):
            store.read_json("model/history.json")
    finally:
        seaweedfs.start()  # same ports and data directory
    assert store.read_json("model/history.json") == {"epoch": 1}
