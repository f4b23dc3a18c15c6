"""Artifact store: one interface over a local directory and an S3-compatible bucket.

Every command reads and writes its artifacts through an `ArtifactStore`, so `file://` and `s3://`
roots hold the same layout of '/'-separated keys. The commit rule: a set of files (a prepared data
set, a checkpoint) counts only once its last file (`manifest.json`, `COMMITTED`) exists, and
`publish_dir` makes that true by construction: locally it renames a complete hidden copy into place,
on S3 it uploads the last file strictly after all the others.

Example:

```python
store = open_store("s3://models/nightly")          # or "file:///srv/artifacts", "artifacts"
run = store.child("runs/2024-05-01")
run.write_json("eval/metrics.json", {"test_mse": 0.12})
run.publish_dir("/tmp/prepared", "prepared")       # manifest.json goes last
print(run.list("prepared"))
```
"""

from __future__ import annotations

import abc
import contextlib
import ctypes
import errno
import json
import os
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import unquote, urlsplit

__all__ = [
    "TEMP_PREFIX",
    "ArtifactExistsError",
    "ArtifactNotFoundError",
    "ArtifactStore",
    "LocalStore",
    "S3Store",
    "StorageError",
    "open_store",
]

# Names starting with this are writes in flight (or left over by a crashed writer). Listings hide
# them and keys may not use them, so a reader can never mistake half a file for an artifact.
TEMP_PREFIX = ".plateau-"

_MIB = 1024 * 1024
# Managed transfers: files above 8 MiB go up and down in 8 MiB parts, four at a time, so a dropped
# connection costs one part rather than the whole checkpoint.
_MULTIPART_BYTES = 8 * _MIB
_TRANSFER_CONCURRENCY = 4
_COPY_BUFFER_BYTES = _MIB
_DELETE_BATCH = 1000  # the most keys one DeleteObjects call accepts

_ACCEPTED_FORMS = (
    "file:///absolute/path, a plain local path (relative or absolute), or s3://bucket/prefix"
)
_ENDPOINT_HINT = (
    "Check AWS_ENDPOINT_URL_S3 (or AWS_ENDPOINT_URL) and that the server is up and reachable."
)
_CREDENTIALS_HINT = (
    "Check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN, if used) and the "
    "bucket's permissions."
)


class StorageError(Exception):
    """An artifact could not be read or written; the message says what to check.

    The command line prints `str(err)` without a traceback, so messages name the URI and the
    setting to look at.
    """


class ArtifactNotFoundError(StorageError, FileNotFoundError):
    """The key does not exist in the store: `no such artifact: <uri>`."""


class ArtifactExistsError(StorageError, FileExistsError):
    """`publish_dir` refused to replace a prefix that already holds artifacts."""


def open_store(
    uri: str | os.PathLike[str],
    *,
    connect_timeout: float = 10.0,
    read_timeout: float = 60.0,
    max_attempts: int = 5,
) -> ArtifactStore:
    """Open the artifact store rooted at `uri`.

    Example:

    ```python
    open_store("s3://bucket/prefix").read_json("champion.json")
    ```

    Args:
        uri: `file:///absolute/path`, a plain local path (relative or absolute), or
            `s3://bucket/prefix`. S3 endpoint and credentials come from the standard AWS
            environment variables, never from here.
        connect_timeout: S3 only: seconds to wait for a connection. Defaults to 10.
        read_timeout: S3 only: seconds to wait for a response. Defaults to 60.
        max_attempts: S3 only: attempts per request, first one included, with the standard
            retry mode's backoff. Defaults to 5.

    Raises:
        ValueError: the URI is none of the accepted forms.
    """
    text = os.fspath(uri)
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"empty artifact store URI; use {_ACCEPTED_FORMS}. Received: uri={uri!r}")
    scheme = text.split(":", 1)[0].lower() if ":" in text else ""
    if scheme == "s3":
        parts = urlsplit(text)
        if (
            not text.lower().startswith("s3://")
            or not parts.netloc
            or parts.query
            or parts.fragment
        ):
            raise ValueError(
                f"malformed S3 URI {text!r}: expected s3://bucket/prefix "
                f"(accepted forms: {_ACCEPTED_FORMS})"
            )
        try:
            return S3Store(
                parts.netloc,
                parts.path,
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
                max_attempts=max_attempts,
            )
        except ValueError as err:
            raise ValueError(f"malformed S3 URI {text!r}: {err}") from err
    if scheme == "file":
        parts = urlsplit(text)
        path = unquote(parts.path)
        if (
            not text.lower().startswith("file://")
            or parts.netloc not in ("", "localhost")
            or not path.startswith("/")
        ):
            raise ValueError(
                f"malformed file URI {text!r}: expected file:///absolute/path "
                f"(accepted forms: {_ACCEPTED_FORMS})"
            )
        return LocalStore(path)
    if "://" in text:
        raise ValueError(
            f"unsupported artifact store URI {text!r}; accepted forms: {_ACCEPTED_FORMS}"
        )
    return LocalStore(text)


def _clean_key(key: str, *, what: str = "key", allow_empty: bool = False) -> str:
    """Return `key` without a trailing '/', or raise ValueError when it could escape the root."""
    if not isinstance(key, str):
        raise ValueError(f"artifact {what} must be a string. Received: {what}={key!r}")
    cleaned = key[:-1] if key.endswith("/") and what == "prefix" else key
    if not cleaned:
        if allow_empty:
            return ""
        raise ValueError(f"artifact {what} must not be empty. Received: {what}={key!r}")
    parts = cleaned.split("/")
    if (
        cleaned.startswith("/")
        or "\\" in cleaned
        or any(part in ("", ".", "..") for part in parts)
        or any(part.startswith(TEMP_PREFIX) for part in parts)
    ):
        raise ValueError(
            f"invalid artifact {what} {key!r}: use '/'-separated names relative to the store root, "
            f"without '.', '..', empty parts or names starting with {TEMP_PREFIX!r}. "
            f"Received: {what}={key!r}"
        )
    return cleaned


def _join(*parts: str) -> str:
    return "/".join(part for part in parts if part)


def _files_under(local_dir: Path) -> list[str]:
    """Sorted '/'-separated paths of the regular files below `local_dir`."""
    found = []
    for dirpath, _dirnames, filenames in os.walk(local_dir):
        rel_dir = Path(dirpath).relative_to(local_dir)
        for name in filenames:
            found.append((rel_dir / name).as_posix())
    return sorted(found)


def _publish_plan(local_dir: str | os.PathLike[str], last: str | None) -> tuple[Path, list[str]]:
    """Check a publish request; return the source dir and its files with `last` at the end."""
    source = Path(local_dir)
    if not source.is_dir():
        raise ValueError(f"publish_dir needs a directory. Received: local_dir={str(local_dir)!r}")
    files = _files_under(source)
    if not files:
        raise ValueError(f"publish_dir: {source} holds no files to publish")
    if last is None:
        return source, files
    last = _clean_key(last, what="last")
    if last not in files:
        raise ValueError(
            f"publish_dir: {source} has no {last!r}; the file that commits the set must be part "
            f"of it. Received: last={last!r}"
        )
    files.remove(last)
    return source, [*files, last]


class ArtifactStore(abc.ABC):
    """A root under which artifacts live as '/'-separated keys; see `open_store`."""

    @property
    @abc.abstractmethod
    def uri(self) -> str:
        """The root of this store as a URI (`file:///...` or `s3://bucket/prefix`)."""

    def key_uri(self, key: str) -> str:
        """The URI of one key, as error messages and logs show it."""
        return _join(self.uri, _clean_key(key))

    @abc.abstractmethod
    def child(self, key: str) -> ArtifactStore:
        """A store rooted at `key` below this one; it shares this store's connection."""

    @abc.abstractmethod
    def exists(self, key: str) -> bool:
        """Whether `key` names a stored file (prefixes that only hold files do not count)."""

    @abc.abstractmethod
    def read_bytes(self, key: str) -> bytes:
        """The content of `key`; raises ArtifactNotFoundError when it is missing."""

    @abc.abstractmethod
    def write_bytes(self, key: str, data: bytes) -> None:
        """Store `data` at `key` atomically: readers see the old content or the new, never half."""

    @abc.abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Sorted keys of all files below `prefix` (a directory-like prefix, recursive)."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove `key`; removing a missing key is not an error (deletes are retried safely)."""

    @abc.abstractmethod
    def delete_prefix(self, prefix: str) -> int:
        """Remove every key below `prefix` (all of the store when empty); returns how many."""

    @abc.abstractmethod
    def download_file(self, key: str, local_path: str | os.PathLike[str]) -> None:
        """Copy `key` to `local_path`, creating its parent directories."""

    @abc.abstractmethod
    def upload_file(self, local_path: str | os.PathLike[str], key: str) -> None:
        """Copy the local file `local_path` to `key`, atomically like `write_bytes`."""

    @abc.abstractmethod
    def local_path(self, key: str) -> Path | None:
        """Where `key` lives on this machine's disk, or None when the store is remote."""

    @abc.abstractmethod
    def publish_dir(
        self,
        local_dir: str | os.PathLike[str],
        prefix: str,
        last: str | None = "manifest.json",
        *,
        overwrite: bool = False,
    ) -> list[str]:
        """Publish every file of `local_dir` under `prefix` so the set appears at once.

        Readers that wait for `last` never see a partial set: a local store renames a complete
        copy into place; S3 uploads `last` strictly after all other files.

        Args:
            local_dir: the directory to publish, recursively.
            prefix: where the files land, below this store's root.
            last: path inside `local_dir` of the file that commits the set; it must exist.
                None publishes without a commit file. Defaults to "manifest.json".
            overwrite: replace what `prefix` already holds; the old set stays readable until the
                new one is in place. Defaults to False.

        Returns:
            The published keys, sorted.

        Raises:
            ArtifactExistsError: `prefix` already holds artifacts and `overwrite` is False.
        """

    @abc.abstractmethod
    def abort_incomplete_uploads(self, prefix: str = "") -> int:
        """Discard writes below `prefix` that were started and never finished; returns how many.

        Call it only when no writer is active below `prefix` (e.g. when cleaning old checkpoints):
        an unfinished write cannot be told apart from one that is still running.
        """

    def read_text(self, key: str, encoding: str = "utf-8") -> str:
        """The content of `key` decoded as text."""
        return self.read_bytes(key).decode(encoding)

    def write_text(self, key: str, text: str, encoding: str = "utf-8") -> None:
        """Store `text` at `key`, atomically like `write_bytes`."""
        self.write_bytes(key, text.encode(encoding))

    def read_json(self, key: str) -> Any:
        """The JSON document at `key`."""
        text = self.read_text(key)
        try:
            return json.loads(text)
        except json.JSONDecodeError as err:
            raise StorageError(f"{self.key_uri(key)} is not valid JSON: {err}") from err

    def write_json(self, key: str, obj: Any) -> None:
        """Store `obj` as JSON with sorted keys, indent 2 and a trailing newline (stable diffs)."""
        self.write_text(key, json.dumps(obj, sort_keys=True, indent=2) + "\n")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri!r})"


# --------------------------------------------------------------------------------------------
# Local directories


class LocalStore(ArtifactStore):
    """Artifacts as files below a local directory; writes are temp file + fsync + rename."""

    def __init__(self, root: str | os.PathLike[str]):
        self._root = Path(os.path.abspath(os.path.expanduser(os.fspath(root))))

    @property
    def uri(self) -> str:
        return self._root.as_uri()

    @property
    def root(self) -> Path:
        """The directory this store is rooted at."""
        return self._root

    def _path(self, key: str, what: str = "key") -> Path:
        return self._root.joinpath(*_clean_key(key, what=what).split("/"))

    def _prefix_path(self, prefix: str) -> Path:
        cleaned = _clean_key(prefix, what="prefix", allow_empty=True)
        return self._root.joinpath(*cleaned.split("/")) if cleaned else self._root

    def child(self, key: str) -> LocalStore:
        return LocalStore(self._path(key))

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def read_bytes(self, key: str) -> bytes:
        path = self._path(key)
        with self._errors(key, "read"):
            return path.read_bytes()

    def write_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        with self._errors(key, "write"):
            _atomic_write(path, lambda out: out.write(data))

    def list(self, prefix: str = "") -> list[str]:
        base = self._prefix_path(prefix)
        with self._errors(prefix, "list"):
            return [(base.relative_to(self._root) / rel).as_posix() for rel in _visible_files(base)]

    def delete(self, key: str) -> None:
        path = self._path(key)
        with self._errors(key, "delete"), contextlib.suppress(FileNotFoundError):
            path.unlink()

    def delete_prefix(self, prefix: str) -> int:
        base = self._prefix_path(prefix)
        if not base.is_dir():
            return 0
        with self._errors(prefix, "delete"):
            count = len(_visible_files(base))
            if base == self._root:
                # Keep the root itself: the store stays usable, only its contents go.
                for entry in os.scandir(base):
                    _remove(Path(entry.path))
            else:
                shutil.rmtree(base)
            return count

    def download_file(self, key: str, local_path: str | os.PathLike[str]) -> None:
        source = self._path(key)
        with self._errors(key, "read"):
            src = source.open("rb")
        with src:
            try:
                _atomic_write(
                    Path(local_path), lambda out: shutil.copyfileobj(src, out, _COPY_BUFFER_BYTES)
                )
            except OSError as err:
                raise StorageError(
                    f"cannot download {self.key_uri(key)} to {os.fspath(local_path)}: {err}"
                ) from err

    def upload_file(self, local_path: str | os.PathLike[str], key: str) -> None:
        target = self._path(key)
        try:
            src = open(local_path, "rb")  # noqa: SIM115 - closed below, after the copy
        except OSError as err:
            raise StorageError(f"cannot upload {os.fspath(local_path)}: {err.strerror}") from err
        with src, self._errors(key, "write"):
            _atomic_write(target, lambda out: shutil.copyfileobj(src, out, _COPY_BUFFER_BYTES))

    def local_path(self, key: str) -> Path:
        return self._path(key)

    def publish_dir(
        self,
        local_dir: str | os.PathLike[str],
        prefix: str,
        last: str | None = "manifest.json",
        *,
        overwrite: bool = False,
    ) -> list[str]:
        source, files = _publish_plan(local_dir, last)
        target = self._path(prefix, what="prefix")
        prefix = target.relative_to(self._root).as_posix()
        if target.exists() and not target.is_dir():
            raise ArtifactExistsError(f"cannot publish to {self.key_uri(prefix)}: it is a file")
        if not overwrite and _visible_files(target):
            raise self._exists_error(prefix)
        # The copy is built next to the target (same filesystem, so the rename below is atomic)
        # under a hidden name that listings skip.
        staging = target.parent / f"{TEMP_PREFIX}new-{uuid.uuid4().hex}-{target.name}"
        try:
            with self._errors(prefix, "publish"):
                for rel in files:
                    with open(source / rel, "rb") as src:
                        _durable_write(
                            staging / rel,
                            lambda out, src=src: shutil.copyfileobj(src, out, _COPY_BUFFER_BYTES),
                        )
                _fsync_dir(staging)
                if overwrite and target.is_dir():
                    _swap_into_place(staging, target)
                else:
                    if target.is_dir():
                        _remove_empty_dirs(target)  # only empty folders: nothing to lose
                    try:
                        os.rename(staging, target)
                    except OSError as err:
                        if err.errno in (errno.ENOTEMPTY, errno.EEXIST):
                            # Another writer published between our check and the rename.
                            raise self._exists_error(prefix) from err
                        raise
                _fsync_dir(target.parent)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return sorted(_join(prefix, rel) for rel in files)

    def abort_incomplete_uploads(self, prefix: str = "") -> int:
        # The local counterpart of an unfinished multipart upload: temp files and half-built or
        # set-aside directories a crashed writer left behind.
        base = self._prefix_path(prefix)
        removed = 0
        with self._errors(prefix, "clean"):
            for dirpath, dirnames, filenames in os.walk(base):
                for name in [*dirnames, *filenames]:
                    if name.startswith(TEMP_PREFIX):
                        _remove(Path(dirpath) / name)
                        removed += 1
                dirnames[:] = [d for d in dirnames if not d.startswith(TEMP_PREFIX)]
        return removed

    def _exists_error(self, prefix: str) -> ArtifactExistsError:
        return ArtifactExistsError(
            f"{self.key_uri(prefix)} already holds artifacts; publish to a new prefix, pass "
            "overwrite=True to replace them, or delete them first"
        )

    @contextlib.contextmanager
    def _errors(self, key: str, action: str) -> Iterator[None]:
        """Turn OS errors into StorageErrors that name the artifact."""
        try:
            yield
        except StorageError:
            raise
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as err:
            if action == "read":
                raise ArtifactNotFoundError(f"no such artifact: {self._display(key)}") from err
            raise StorageError(f"cannot {action} {self._display(key)}: {err}") from err
        except OSError as err:
            raise StorageError(f"cannot {action} {self._display(key)}: {err}") from err

    def _display(self, key: str) -> str:
        return _join(self.uri, key.rstrip("/"))


def _visible_files(base: Path) -> list[str]:
    """Sorted files below `base`, relative to it, skipping in-flight temp entries."""
    if not base.is_dir():
        return []
    found = []
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = [d for d in dirnames if not d.startswith(TEMP_PREFIX)]
        rel_dir = Path(dirpath).relative_to(base)
        found.extend(
            (rel_dir / name).as_posix() for name in filenames if not name.startswith(TEMP_PREFIX)
        )
    return sorted(found)


def _durable_write(path: Path, fill: Callable[[BinaryIO], object]) -> None:
    """Write a new file and fsync it, so a rename that publishes it also publishes its bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # os.open with 0o666 lets the umask decide the mode, as a plain open() would; mkstemp's 0o600
    # would hide artifacts from the other users (scheduler, dashboards) that read them.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    with os.fdopen(fd, "wb") as out:
        fill(out)
        out.flush()
        os.fsync(out.fileno())


def _atomic_write(path: Path, fill: Callable[[BinaryIO], object]) -> None:
    """Write `path` through a temp file in the same directory and os.replace it into place."""
    temp = path.parent / f"{TEMP_PREFIX}part-{uuid.uuid4().hex}-{path.name}"
    try:
        _durable_write(temp, fill)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    """Make a rename in `path` durable; some filesystems cannot fsync directories, which is fine."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _remove_empty_dirs(path: Path) -> None:
    """Remove a tree of empty folders bottom-up; os.rmdir refuses anything that holds a file."""
    for dirpath, _dirnames, _filenames in os.walk(path, topdown=False):
        with contextlib.suppress(OSError):
            os.rmdir(dirpath)


def _swap_into_place(staging: Path, target: Path) -> None:
    """Put `staging` at `target` and remove the old `target` only after the new one is there."""
    if _exchange(staging, target):
        shutil.rmtree(staging)  # now holds the old set
        return
    aside = target.parent / f"{TEMP_PREFIX}old-{uuid.uuid4().hex}-{target.name}"
    os.rename(target, aside)
    try:
        os.rename(staging, target)
    except BaseException:
        os.rename(aside, target)
        raise
    shutil.rmtree(aside)


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
_renameat2_lock = threading.Lock()
_renameat2: Any = None


def _exchange(first: Path, second: Path) -> bool:
    """Swap two directories in one step (Linux renameat2); False where the system cannot.

    With the swap, readers of `second` see the old set or the new one and never an empty gap,
    which two plain renames would leave for a moment.
    """
    global _renameat2
    with _renameat2_lock:
        if _renameat2 is None:
            try:
                function = ctypes.CDLL(None, use_errno=True).renameat2
                path_arg = [ctypes.c_int, ctypes.c_char_p]  # dirfd, path
                function.argtypes = [*path_arg, *path_arg, ctypes.c_uint]
                function.restype = ctypes.c_int
                _renameat2 = function
            except (AttributeError, OSError):
                _renameat2 = False
    if not _renameat2:
        return False
    source, target = os.fsencode(first), os.fsencode(second)
    if _renameat2(_AT_FDCWD, source, _AT_FDCWD, target, _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False  # kernel or filesystem without RENAME_EXCHANGE: fall back to two renames
    raise OSError(code, os.strerror(code), os.fspath(second))


# --------------------------------------------------------------------------------------------
# S3-compatible object stores


class _SharedClient:
    """One boto3 client for a store and its children, created on first use.

    Creating a client costs tens of milliseconds and a client is thread-safe, so children share
    it; a fresh boto3 Session keeps creation itself safe when stores are opened from threads.
    """

    def __init__(self, connect_timeout: float, read_timeout: float, max_attempts: int):
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_attempts = max_attempts
        self._client: Any = None
        self._lock = threading.Lock()

    def get(self) -> Any:
        with self._lock:
            if self._client is None:
                # boto3 is imported here so that file stores work without it.
                import boto3
                from botocore.config import Config

                # boto3 reads the endpoint itself from AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL;
                # S3-compatible servers behind such an endpoint rarely have virtual-host DNS.
                custom_endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get(
                    "AWS_ENDPOINT_URL"
                )
                config = Config(
                    retries={"mode": "standard", "max_attempts": self.max_attempts},
                    connect_timeout=self.connect_timeout,
                    read_timeout=self.read_timeout,
                    # Newer botocore adds CRC checksums to every request by default; many
                    # S3-compatible servers reject or mishandle them.
                    request_checksum_calculation="when_required",
                    response_checksum_validation="when_required",
                    s3={"addressing_style": "path"} if custom_endpoint else None,
                )
                self._client = boto3.session.Session().client("s3", config=config)
            return self._client


class S3Store(ArtifactStore):
    """Artifacts as objects below `s3://bucket/prefix`, through boto3's managed transfers."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        max_attempts: int = 5,
        _shared: _SharedClient | None = None,
    ):
        if not bucket:
            raise ValueError(f"S3 store needs a bucket. Received: bucket={bucket!r}")
        if max_attempts < 1:
            raise ValueError(
                f"max_attempts must be at least 1. Received: max_attempts={max_attempts}"
            )
        self._bucket = bucket
        self._prefix = _clean_key(prefix.strip("/"), what="prefix", allow_empty=True)
        self._shared = _shared or _SharedClient(connect_timeout, read_timeout, max_attempts)

    @property
    def uri(self) -> str:
        return _join(f"s3://{self._bucket}", self._prefix)

    @property
    def bucket(self) -> str:
        return self._bucket

    @property
    def prefix(self) -> str:
        """The key prefix of this store's root inside the bucket ('' for the bucket root)."""
        return self._prefix

    @property
    def client(self) -> Any:
        """The boto3 S3 client this store and its children use (created on first use)."""
        return self._shared.get()

    def _key(self, key: str, what: str = "key") -> str:
        return _join(self._prefix, _clean_key(key, what=what))

    def _dir_prefix(self, prefix: str) -> str:
        """The bucket-level prefix for a directory-like `prefix`, ending in '/' unless empty."""
        full = _join(self._prefix, _clean_key(prefix, what="prefix", allow_empty=True))
        return f"{full}/" if full else ""

    def _transfer_config(self) -> Any:
        from boto3.s3.transfer import TransferConfig

        return TransferConfig(
            multipart_threshold=_MULTIPART_BYTES,
            multipart_chunksize=_MULTIPART_BYTES,
            max_concurrency=_TRANSFER_CONCURRENCY,
        )

    def child(self, key: str) -> S3Store:
        return S3Store(self._bucket, self._key(key), _shared=self._shared)

    def exists(self, key: str) -> bool:
        full = self._key(key)
        with self._errors(self.key_uri(key)):
            try:
                self.client.head_object(Bucket=self._bucket, Key=full)
            except Exception as err:
                if _error_code(err) in ("404", "NoSuchKey", "NotFound"):
                    return False
                raise
        return True

    def read_bytes(self, key: str) -> bytes:
        full = self._key(key)
        with self._errors(self.key_uri(key)):
            response = self.client.get_object(Bucket=self._bucket, Key=full)
            with contextlib.closing(response["Body"]) as body:
                return body.read()

    def write_bytes(self, key: str, data: bytes) -> None:
        full = self._key(key)
        with self._errors(self.key_uri(key)):
            self.client.put_object(Bucket=self._bucket, Key=full, Body=data)

    def list(self, prefix: str = "") -> list[str]:
        start = self._dir_prefix(prefix)
        return sorted(self._relative(full) for full in self._list_full(start, prefix))

    def delete(self, key: str) -> None:
        full = self._key(key)
        with self._errors(self.key_uri(key)):
            self.client.delete_object(Bucket=self._bucket, Key=full)

    def delete_prefix(self, prefix: str) -> int:
        keys = self._list_full(self._dir_prefix(prefix), prefix)
        self._delete_full(keys, prefix)
        return len(keys)

    def download_file(self, key: str, local_path: str | os.PathLike[str]) -> None:
        full = self._key(key)
        destination = Path(local_path)
        try:
            destination.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StorageError(f"cannot download to {destination}: {err}") from err
        with self._errors(self.key_uri(key)):
            # s3transfer writes to a temp name beside `local_path` and renames it when complete.
            self.client.download_file(
                self._bucket, full, str(destination), Config=self._transfer_config()
            )

    def upload_file(self, local_path: str | os.PathLike[str], key: str) -> None:
        full = self._key(key)
        if not os.path.isfile(local_path):
            raise StorageError(f"cannot upload {os.fspath(local_path)}: no such local file")
        with self._errors(self.key_uri(key)):
            self.client.upload_file(
                os.fspath(local_path), self._bucket, full, Config=self._transfer_config()
            )

    def local_path(self, key: str) -> None:
        _clean_key(key)
        return None

    def publish_dir(
        self,
        local_dir: str | os.PathLike[str],
        prefix: str,
        last: str | None = "manifest.json",
        *,
        overwrite: bool = False,
    ) -> list[str]:
        source, files = _publish_plan(local_dir, last)
        prefix = _clean_key(prefix, what="prefix")
        old_keys = set(self._list_full(self._dir_prefix(prefix), prefix))
        if old_keys and not overwrite:
            raise ArtifactExistsError(
                f"{self.key_uri(prefix)} already holds {len(old_keys)} artifacts; publish to a "
                "new prefix, pass overwrite=True to replace them, or delete them first"
            )
        new_keys = [self._key(_join(prefix, rel)) for rel in files]
        commit_key = new_keys[-1] if last is not None else None
        # S3 cannot rename, so an overwrite first withdraws the old commit file: from then on a
        # reader waits, instead of trusting a manifest whose files are being replaced.
        if commit_key in old_keys:
            self._delete_full([commit_key], prefix)
        body = list(zip(files, new_keys, strict=True))
        if commit_key is not None:
            body = body[:-1]
        self._upload_all(source, body, prefix)
        if commit_key is not None:
            self._upload_all(source, [(files[-1], commit_key)], prefix)
        stale = sorted(old_keys - set(new_keys))
        self._delete_full(stale, prefix)
        return sorted(self._relative(key) for key in new_keys)

    def abort_incomplete_uploads(self, prefix: str = "") -> int:
        start = self._dir_prefix(prefix)
        aborted = 0
        with self._errors(self._display_prefix(prefix)):
            pages = self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self._bucket, Prefix=start
            )
            uploads = [upload for page in pages for upload in page.get("Uploads", [])]
            for upload in uploads:
                try:
                    self.client.abort_multipart_upload(
                        Bucket=self._bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                    )
                except Exception as err:
                    if _error_code(err) != "NoSuchUpload":  # finished or aborted meanwhile
                        raise
                    continue
                aborted += 1
        return aborted

    def _relative(self, full: str) -> str:
        return full[len(self._prefix) + 1 :] if self._prefix else full

    def _display_prefix(self, prefix: str) -> str:
        return _join(self.uri, prefix.rstrip("/"))

    def _list_full(self, start: str, prefix: str) -> list[str]:
        with self._errors(self._display_prefix(prefix)):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self._bucket, Prefix=start
            )
            # Keys ending in '/' are folder markers some tools create, not artifacts.
            return [
                item["Key"]
                for page in pages
                for item in page.get("Contents", [])
                if not item["Key"].endswith("/")
            ]

    def _delete_full(self, keys: list[str], prefix: str) -> None:
        with self._errors(self._display_prefix(prefix)):
            for start in range(0, len(keys), _DELETE_BATCH):
                batch = keys[start : start + _DELETE_BATCH]
                response = self.client.delete_objects(
                    Bucket=self._bucket,
                    Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True},
                )
                if response.get("Errors"):
                    first = response["Errors"][0]
                    raise StorageError(
                        f"could not delete {len(response['Errors'])} of {len(batch)} objects "
                        f"below {self._display_prefix(prefix)}, e.g. {first.get('Key')}: "
                        f"{first.get('Code')} {first.get('Message')}"
                    )

    def _upload_all(self, source: Path, pairs: list[tuple[str, str]], prefix: str) -> None:
        """Upload (relative path, full key) pairs concurrently; return once all are stored."""
        if not pairs:
            return
        from boto3.s3.transfer import create_transfer_manager

        # One transfer manager for the whole set: small files go up side by side and large
        # ones in parts, all within the same concurrency limit. It is a context manager rather
        # than shutdown(cancel=True), which passes its arguments on in the wrong order
        # (boto/s3transfer#143) and turns the real error of a failed upload into "TypeError:
        # 'str' object is not callable"; __exit__ cancels the rest and lets the real error out.
        with (
            self._errors(self._display_prefix(prefix)),
            create_transfer_manager(self.client, self._transfer_config()) as manager,
        ):
            futures = [manager.upload(str(source / rel), self._bucket, key) for rel, key in pairs]
            for future in futures:
                future.result()

    @contextlib.contextmanager
    def _errors(self, where: str) -> Iterator[None]:
        """Turn boto3/botocore errors into StorageErrors that name `where` and what to check."""
        try:
            yield
        except StorageError:
            raise
        except Exception as err:
            translated = self._translate(err, where)
            if translated is None:
                raise
            raise translated from err

    def _translate(self, err: BaseException, where: str) -> StorageError | None:
        from boto3.exceptions import Boto3Error, RetriesExceededError, S3UploadFailedError
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            ConnectionError,
            HTTPClientError,
            NoCredentialsError,
            PartialCredentialsError,
        )

        # boto3's managed transfers wrap the error that matters; judge that one.
        if isinstance(err, S3UploadFailedError) and err.__context__ is not None:
            return self._translate(err.__context__, where)
        if isinstance(err, RetriesExceededError) and err.last_exception is not None:
            return self._translate(err.last_exception, where)
        if isinstance(err, ClientError):
            return self._client_error(err, where)
        if isinstance(err, NoCredentialsError | PartialCredentialsError):
            return StorageError(
                f"no usable S3 credentials for {where}: {err}. Set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY (or another standard AWS credential source)."
            )
        if isinstance(err, ConnectionError | HTTPClientError):
            return StorageError(
                f"cannot reach the S3 endpoint {self._endpoint()} for {where}: {err}. "
                f"{_ENDPOINT_HINT}"
            )
        if isinstance(err, BotoCoreError | Boto3Error):
            return StorageError(
                f"S3 request for {where} failed: {err}. {_ENDPOINT_HINT} {_CREDENTIALS_HINT}"
            )
        return None

    def _client_error(self, err: Any, where: str) -> StorageError:
        code = _error_code(err)
        message = err.response.get("Error", {}).get("Message", "")
        status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ("404", "NoSuchKey", "NotFound"):
            return ArtifactNotFoundError(f"no such artifact: {where}")
        if code == "NoSuchBucket":
            return StorageError(
                f"no such bucket {self._bucket!r} at {self._endpoint()} (while accessing {where}); "
                "create it or fix the URI. " + _ENDPOINT_HINT
            )
        if status == 403 or code in (
            "403",
            "AccessDenied",
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
            "ExpiredToken",
            "InvalidToken",
        ):
            return StorageError(
                f"S3 at {self._endpoint()} refused access to {where} ({code}: {message}). "
                + _CREDENTIALS_HINT
            )
        return StorageError(f"S3 error for {where}: {code} {message}".rstrip())

    def _endpoint(self) -> str:
        return self.client.meta.endpoint_url


def _error_code(err: BaseException) -> str:
    response = getattr(err, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))
