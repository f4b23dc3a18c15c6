"""The prepared data set: writing it whole, and reading it back only when it verifies.

Layout under `prepare --output`: train.parquet, val.parquet, test.parquet (timestamp plus
z-scored float32 columns, target first), scaler.json and manifest.json. The manifest lists
every file with its sha256 and is written last, so a set without a matching manifest is
never used.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from plateau_lstm.errors import UserError

SPLITS = ("train", "val", "test")
MANIFEST = "manifest.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Scaler:
    """Per-column z-score, fit on the training part only."""

    mean: dict[str, float]
    std: dict[str, float]

    def transform(self, frame: pd.DataFrame) -> pd.DataFrame:
        return (frame - pd.Series(self.mean)) / pd.Series(self.std)

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


def json_bytes(obj) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, engine="pyarrow", index=False, compression="zstd")
    return buffer.getvalue()


def load_prepared(store, display: str | None = None) -> PreparedData:
    """Read a prepared set from an artifact store, refusing one whose manifest does not verify."""
    display = display or store.uri
    if not store.exists(MANIFEST):
        raise UserError(
            f"{display}: not a prepared data set (no {MANIFEST}). "
            "Run `plateau-lstm prepare --output` to that location first."
        )
    manifest = json.loads(store.read_bytes(MANIFEST))
    contents = {}
    for name, expected in manifest["files"].items():
        if not store.exists(name):
            raise UserError(
                f"{display}: {name} is listed in {MANIFEST} but missing. Prepare again."
            )
        data = store.read_bytes(name)
        if sha256_bytes(data) != expected["sha256"]:
            raise UserError(
                f"{display}: {name} does not match the sha256 in {MANIFEST} (changed or damaged "
                "after prepare). Prepare the data again."
            )
        contents[name] = data
    scaler_dict = json.loads(contents["scaler.json"])
    scaler = Scaler(mean=scaler_dict["mean"], std=scaler_dict["std"])
    frames, bounds, start = [], {}, 0
    for split in SPLITS:
        frame = pd.read_parquet(io.BytesIO(contents[f"{split}.parquet"]))
        frames.append(frame)
        bounds[split] = (start, start + len(frame))
        start += len(frame)
    whole = pd.concat(frames, ignore_index=True)
    columns = list(manifest["columns"])
    return PreparedData(
        columns=columns,
        timestamps=pd.DatetimeIndex(whole["timestamp"]),
        values=whole[columns].to_numpy(dtype="float32"),
        bounds=bounds,
        scaler=scaler,
        manifest=manifest,
    )
