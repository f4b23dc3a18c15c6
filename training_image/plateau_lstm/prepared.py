"""The prepared data set: writing it whole, and reading it back only when it verifies.

Layout under `prepare --output`: train.parquet, val.parquet, test.parquet (timestamp plus
z-scored float32 columns, target first), scaler.json and manifest.json. The manifest lists
every file with its sha256 and is written last, so a set without a matching manifest is
never used.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from plateau_lstm.errors import UserError

if TYPE_CHECKING:
    import pandas as pd

SPLITS = ("train", "val", "test")
MANIFEST = "manifest.json"
SCALER = "scaler.json"
FORMAT_VERSION = 1
HASH_CHUNK_BYTES = 1 << 20
CHUNK_ROWS = 1 << 20


@dataclass(frozen=True)
class Scaler:
    """Per-column z-score, fit on the training part only."""

    mean: dict[str, float]
    std: dict[str, float]

    @classmethod
    def fit(cls, columns: dict[str, np.ndarray]) -> Scaler:
        """Mean and population standard deviation of each column (give it the training rows)."""
        mean, std = {}, {}
        for name, values in columns.items():
            mean[name] = float(np.mean(values))
            squares = 0.0
            for start in range(0, len(values), CHUNK_ROWS):
                deviation = values[start : start + CHUNK_ROWS] - mean[name]
                # numpy's own pairwise sum, not a BLAS dot: the result must not depend on the
                # machine's thread count, or the same input would not give the same bytes
                squares += float(np.square(deviation, out=deviation).sum())
            std[name] = math.sqrt(squares / len(values)) if len(values) else math.nan
        return cls(mean=mean, std=std)

    def transform_column(self, name: str, values: np.ndarray) -> np.ndarray:
        """float32 z-scores of one column; the arithmetic runs in float64, then rounds once.

        A million rows at a time, so the float64 temporary stays small and warm in cache
        instead of being a fresh copy of the whole column.
        """
        out = np.empty(len(values), dtype=np.float32)
        for start in range(0, len(values), CHUNK_ROWS):
            part = values[start : start + CHUNK_ROWS] - self.mean[name]
            part /= self.std[name]
            out[start : start + CHUNK_ROWS] = part
        return out

    def to_dict(self) -> dict:
        return {"mean": self.mean, "std": self.std}


@dataclass(frozen=True)
class PreparedData:
    """A verified prepared set: all rows in time order, plus where each split starts."""

    columns: list[str]
    timestamps: pd.DatetimeIndex
    values: np.ndarray  # (rows, features) float32, z-scored, target in column 0
    bounds: dict[str, tuple[int, int]]  # split -> [start, end) rows of `values`
    scaler: Scaler
    manifest: dict

    @property
    def target(self) -> str:
        return self.columns[0]

    @property
    def target_std(self) -> float:
        return float(self.scaler.std[self.target])


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path) -> str:
    """The sha256 of a file, read in 1 MiB pieces so that a large input never sits in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def json_bytes(obj) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


def write_split(path, times: np.ndarray, columns: list[str], arrays: list[np.ndarray]) -> None:
    """One split as Parquet: `timestamp` (UTC) and the float32 columns, byte-for-byte repeatable.

    Encodings chosen for a regular float series (measured on 7M rows x 5 columns): no
    dictionaries (measured floats almost never repeat, so pyarrow would build one per page
    only to drop it), delta-encoded timestamps (a constant step packs to almost nothing), and
    byte-stream-split floats, which zstd then compresses to about half: half the bytes in
    half the time of plain zstd.
    """
    table = pa.table(
        [_arrow(times.view("int64"), pa.timestamp("us", tz="UTC"))]
        + [_arrow(a, pa.float32()) for a in arrays],
        names=["timestamp", *columns],
    )
    encodings = {"timestamp": "DELTA_BINARY_PACKED"} | dict.fromkeys(columns, "BYTE_STREAM_SPLIT")
    pq.write_table(table, path, compression="zstd", use_dictionary=False, column_encoding=encodings)


def _arrow(values: np.ndarray, kind: pa.DataType) -> pa.Array:
    """An Arrow array over a numpy array's memory, without a copy.

    pa.array would do the same but imports pandas on the way, a second of start-up.
    """
    values = np.ascontiguousarray(values)
    return pa.Array.from_buffers(kind, len(values), [None, pa.py_buffer(values)])


def load_prepared(store, display: str | None = None) -> PreparedData:
    """Read a prepared set from an artifact store, refusing one whose manifest does not verify."""
    import pandas as pd

    display = display or store.uri
    manifest = _read_manifest(store, display)
    contents = {}
    for name, expected in manifest["files"].items():
        if not store.exists(name):
            raise UserError(
                f"{display}: {name} is listed in {MANIFEST} but missing. Prepare again."
            )
        data = store.read_bytes(name)
        if sha256_bytes(data) != expected.get("sha256"):
            raise UserError(
                f"{display}: {name} does not match the sha256 in {MANIFEST} (changed or damaged "
                "after prepare). Prepare the data again."
            )
        contents[name] = data
    scaler_dict = json.loads(contents[SCALER])
    scaler = Scaler(mean=scaler_dict["mean"], std=scaler_dict["std"])
    columns = list(manifest["columns"])
    frames, bounds, start = [], {}, 0
    for split in SPLITS:
        table = pq.read_table(pa.BufferReader(contents.pop(f"{split}.parquet")))
        frames.append(table)
        bounds[split] = (start, start + table.num_rows)
        start += table.num_rows
    whole = pa.concat_tables(frames)
    values = np.empty((whole.num_rows, len(columns)), dtype="float32")
    for i, name in enumerate(columns):
        values[:, i] = whole.column(name).to_numpy()
    return PreparedData(
        columns=columns,
        timestamps=pd.DatetimeIndex(whole.column("timestamp").to_pandas()),
        values=values,
        bounds=bounds,
        scaler=scaler,
        manifest=manifest,
    )


def _read_manifest(store, display: str) -> dict:
    """The manifest, checked for what load_prepared relies on before any file is trusted."""
    if not store.exists(MANIFEST):
        raise UserError(
            f"{display}: not a prepared data set (no {MANIFEST}). "
            "Run `plateau-lstm prepare --output` to that location first."
        )
    try:
        manifest = json.loads(store.read_bytes(MANIFEST))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(
            f"{display}: {MANIFEST} is not valid JSON ({err}). It was damaged after prepare; "
            "prepare the data again."
        ) from None
    version = manifest.get("format_version") if isinstance(manifest, dict) else None
    if version != FORMAT_VERSION:
        raise UserError(
            f"{display}: {MANIFEST} has format_version {version!r}; this plateau-lstm reads "
            f"{FORMAT_VERSION}. Prepare the data again with this version."
        )
    files = manifest.get("files")
    needed = [SCALER, *(f"{split}.parquet" for split in SPLITS)]
    unlisted = [name for name in needed if not isinstance(files, dict) or name not in files]
    if unlisted or not isinstance(manifest.get("columns"), list):
        what = ", ".join(unlisted) or "columns"
        raise UserError(
            f"{display}: {MANIFEST} does not list {what}. It was changed after prepare; "
            "prepare the data again."
        )
    return manifest
