"""The checkpoint protocol: what a committed checkpoint is, how it is written, read and pruned.

A checkpoint is a folder `<output>/checkpoints/epoch-NNNN/` (NNNN = completed epochs) holding the
training state's files (see `training_state`), `manifest.json` with the sha256 and size of each of
them, and `COMMITTED`, which holds the sha256 of the manifest and is written strictly last (S3 has
no rename, so the marker is what makes the set appear at once). Readers trust a checkpoint only
when `COMMITTED` exists and every file, the manifest included, matches its checksum; a damaged one
is skipped with a warning and the one before it is used.

Retention keeps the last `keep_last` committed checkpoints and the best one (lowest monitored
value), which is where the final model's weights come from after a resume.

Example:

```python
checkpoints = CheckpointStore(open_store("s3://models/runs/r1/model"))
write_manifest("/tmp/stage/epoch-0003", epoch=3, monitor="val_mse", value=0.91)
checkpoints.publish("/tmp/stage/epoch-0003")        # COMMITTED goes last
found, damaged = checkpoints.load_latest("/tmp/resume")   # verified (or None), skipped
```
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from plateau_lstm.storage import ArtifactNotFoundError, ArtifactStore

__all__ = [
    "CHECKPOINTS_DIR",
    "COMMITTED",
    "MANIFEST",
    "CheckpointStore",
    "CorruptCheckpoint",
    "LoadedCheckpoint",
    "checkpoint_name",
    "write_manifest",
]

log = logging.getLogger("plateau_lstm")

CHECKPOINTS_DIR = "checkpoints"
MANIFEST = "manifest.json"
COMMITTED = "COMMITTED"
FORMAT_VERSION = 1
_NAME = re.compile(r"^epoch-(\d{4,})$")
_HASH_BLOCK = 1 << 20


class CorruptCheckpoint(Exception):
    """A committed checkpoint whose files do not match its manifest (or cannot be parsed)."""


@dataclass(frozen=True)
class LoadedCheckpoint:
    """A checkpoint downloaded to `directory` whose every file matched its checksum."""

    epoch: int
    directory: Path
    manifest: dict
    uri: str

    @property
    def monitor_value(self) -> float | None:
        return _finite_or_none(self.manifest.get("monitor_value"))


def checkpoint_name(epoch: int) -> str:
    """`epoch-0003` for 3 completed epochs; four digits sort correctly up to 9999 epochs."""
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0. Received: epoch={epoch}")
    return f"epoch-{epoch:04d}"


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_HASH_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(
    directory: str | os.PathLike[str],
    *,
    epoch: int,
    monitor: str,
    value: float | None,
) -> dict:
    """Write manifest.json and COMMITTED for the files already in `directory`; return the manifest.

    COMMITTED is written locally too, so the folder is complete; `CheckpointStore.publish`
    still uploads it strictly after everything else.
    """
    folder = Path(directory)
    names = sorted(
        p.name for p in folder.iterdir() if p.is_file() and p.name not in (MANIFEST, COMMITTED)
    )
    manifest = {
        "format": FORMAT_VERSION,
        "epoch": int(epoch),
        "monitor": monitor,
        "monitor_value": _finite_or_none(value),
        "files": {
            name: {"sha256": sha256_file(folder / name), "bytes": (folder / name).stat().st_size}
            for name in names
        },
    }
    data = (json.dumps(manifest, sort_keys=True, indent=2) + "\n").encode()
    (folder / MANIFEST).write_bytes(data)
    commit = {"epoch": int(epoch), "manifest_sha256": hashlib.sha256(data).hexdigest()}
    (folder / COMMITTED).write_text(json.dumps(commit, sort_keys=True) + "\n")
    return manifest


class CheckpointStore:
    """The checkpoints of one training output, below `<output>/checkpoints/`.

    It only ever touches keys below that prefix, so runs with different outputs (run ids) never
    see or change each other's checkpoints.

    Args:
        output: the store of the train command's `--output`.
        keep_last: committed checkpoints kept besides the best one, at least 1. Defaults to 3.
    """

    def __init__(self, output: ArtifactStore, keep_last: int = 3):
        if isinstance(keep_last, bool) or not isinstance(keep_last, int) or keep_last < 1:
            raise ValueError(f"keep_last must be an int >= 1. Received: keep_last={keep_last!r}")
        self.store = output.child(CHECKPOINTS_DIR)
        self.keep_last = keep_last
        # epoch -> monitored value of the committed checkpoints, so pruning after each commit
        # does not re-read every manifest. Filled by `load_latest`/`scan` and by `publish`.
        self._values: dict[int, float | None] = {}

    @property
    def uri(self) -> str:
        return self.store.uri

    def checkpoint_uri(self, epoch: int) -> str:
        return self.store.key_uri(checkpoint_name(epoch))

    # ----------------------------------------------------------------------------------------
    # Writing

    def publish(self, local_dir: str | os.PathLike[str]) -> int:
        """Upload a folder made by `write_manifest`, COMMITTED last; returns its epoch.

        A folder of the same epoch left by a killed run (uncommitted, or about to be replaced)
        is overwritten: its COMMITTED goes first, so it is never trusted half-replaced.
        """
        folder = Path(local_dir)
        manifest = json.loads((folder / MANIFEST).read_text())
        epoch = int(manifest["epoch"])
        self.store.publish_dir(folder, checkpoint_name(epoch), last=COMMITTED, overwrite=True)
        self._values[epoch] = _finite_or_none(manifest.get("monitor_value"))
        return epoch

    def prune(self) -> list[int]:
        """Delete committed checkpoints beyond the last `keep_last` and the best, and leftovers.

        Leftovers are uncommitted folders older than the newest committed checkpoint: what a
        killed writer left. Call it only from the single writer of this output (between
        publishes), as an uncommitted folder cannot be told apart from one being written.
        Returns the epochs removed.
        """
        folders = self._folders()
        committed = sorted(epoch for epoch, names in folders.items() if COMMITTED in names)
        if not committed:
            return []
        keep = set(committed[-self.keep_last :])
        best = self.best_epoch(committed)
        if best is not None:
            keep.add(best)
        newest = committed[-1]
        doomed = [
            epoch
            for epoch, names in sorted(folders.items())
            if epoch not in keep and (COMMITTED in names or epoch < newest)
        ]
        for epoch in doomed:
            self._remove(epoch)
        return doomed

    def withdraw(self, epoch: int) -> None:
        """Delete a checkpoint's COMMITTED marker (and then its files): it is trusted no more."""
        self._remove(epoch)

    def abort_incomplete_uploads(self) -> int:
        """Abort multipart uploads a killed writer left below the checkpoints prefix."""
        return self.store.abort_incomplete_uploads()

    def _remove(self, epoch: int) -> None:
        name = checkpoint_name(epoch)
        # The marker first: from then on no reader trusts the rest while it is being deleted.
        self.store.delete(f"{name}/{COMMITTED}")
        self.store.delete_prefix(name)
        self._values.pop(epoch, None)

    # ----------------------------------------------------------------------------------------
    # Reading

    def committed_epochs(self) -> list[int]:
        """Epochs with a COMMITTED marker, oldest first (not yet verified)."""
        return sorted(epoch for epoch, names in self._folders().items() if COMMITTED in names)

    def best_epoch(self, epochs: list[int] | None = None) -> int | None:
        """The committed epoch with the lowest monitored value (the earliest on ties)."""
        epochs = self.committed_epochs() if epochs is None else epochs
        scored = []
        for epoch in epochs:
            if epoch not in self._values:
                self._values[epoch] = self._read_value(epoch)
            value = self._values[epoch]
            if value is not None:
                scored.append((value, epoch))
        return min(scored)[1] if scored else None

    def load(self, epoch: int, destination: str | os.PathLike[str]) -> LoadedCheckpoint:
        """Download one committed checkpoint into `destination` and verify every file.

        Raises:
            CorruptCheckpoint: a file is missing, or it or the manifest fails its checksum.
            StorageError: the store could not be read (not a verdict on the checkpoint).
        """
        name = checkpoint_name(epoch)
        folder = Path(destination)
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        try:
            commit = _json_object(self.store.read_bytes(f"{name}/{COMMITTED}"), COMMITTED)
            manifest_bytes = self.store.read_bytes(f"{name}/{MANIFEST}")
        except ArtifactNotFoundError as err:
            raise CorruptCheckpoint(f"{err}") from err
        if hashlib.sha256(manifest_bytes).hexdigest() != commit.get("manifest_sha256"):
            raise CorruptCheckpoint(f"{MANIFEST} does not match the sha256 in {COMMITTED}")
        manifest = _json_object(manifest_bytes, MANIFEST)
        if manifest.get("epoch") != epoch or not isinstance(manifest.get("files"), dict):
            raise CorruptCheckpoint(f"{MANIFEST} is not the manifest of epoch {epoch}")
        (folder / MANIFEST).write_bytes(manifest_bytes)
        for file_name, expected in sorted(manifest["files"].items()):
            if "/" in file_name or file_name in (MANIFEST, COMMITTED, "", ".", ".."):
                raise CorruptCheckpoint(f"{MANIFEST} lists an invalid file name {file_name!r}")
            try:
                self.store.download_file(f"{name}/{file_name}", folder / file_name)
            except ArtifactNotFoundError as err:
                raise CorruptCheckpoint(f"{file_name} is listed in {MANIFEST} but missing") from err
            if sha256_file(folder / file_name) != expected["sha256"]:
                raise CorruptCheckpoint(f"{file_name} does not match its sha256 in {MANIFEST}")
        self._values[epoch] = _finite_or_none(manifest.get("monitor_value"))
        return LoadedCheckpoint(epoch, folder, manifest, self.checkpoint_uri(epoch))

    def load_latest(
        self, destination: str | os.PathLike[str]
    ) -> tuple[LoadedCheckpoint | None, list[int]]:
        """The newest committed checkpoint that verifies (downloaded to `destination`) or None,
        and the epochs of the newer ones that did not verify.

        A damaged checkpoint is skipped with a warning naming it and why, and the one before it
        is tried.
        """
        damaged: list[int] = []
        for epoch in reversed(self.committed_epochs()):
            try:
                return self.load(epoch, destination), damaged
            except CorruptCheckpoint as err:
                log.warning(
                    "train: checkpoint %s is damaged (%s); using the one before it",
                    self.checkpoint_uri(epoch),
                    err,
                )
                damaged.append(epoch)
        return None, damaged

    def _read_value(self, epoch: int) -> float | None:
        # Only a missing or unreadable manifest means "no value": an unreachable store raises,
        # so a network hiccup during pruning can never make the best checkpoint look deletable.
        try:
            data = self.store.read_bytes(f"{checkpoint_name(epoch)}/{MANIFEST}")
            return _finite_or_none(_json_object(data, MANIFEST).get("monitor_value"))
        except (ArtifactNotFoundError, CorruptCheckpoint):
            return None

    def _folders(self) -> dict[int, set[str]]:
        """epoch -> names of the files in its folder, for every epoch-NNNN folder."""
        folders: dict[int, set[str]] = {}
        for key in self.store.list():
            folder, _, rest = key.partition("/")
            match = _NAME.match(folder)
            if match and rest:
                folders.setdefault(int(match.group(1)), set()).add(rest)
        return folders


def _json_object(data: bytes, what: str) -> dict:
    try:
        obj = json.loads(data)
    except ValueError as err:  # also UnicodeDecodeError
        raise CorruptCheckpoint(f"{what} is not JSON ({err})") from err
    if not isinstance(obj, dict):
        raise CorruptCheckpoint(f"{what} is not a JSON object")
    return obj


def _finite_or_none(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None
