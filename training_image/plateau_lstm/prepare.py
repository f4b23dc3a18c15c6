"""`plateau-lstm prepare`: validate, clean, split in time, scale on train only, publish whole."""

from __future__ import annotations

import logging
import math
import os
import tempfile

import numpy as np
import pandas as pd

from plateau_lstm import __version__
from plateau_lstm.cleaning import clean_series
from plateau_lstm.config import PrepareConfig
from plateau_lstm.errors import UserError
from plateau_lstm.prepared import (
    FORMAT_VERSION,
    MANIFEST,
    Scaler,
    json_bytes,
    parquet_bytes,
    sha256_bytes,
)
from plateau_lstm.raw_input import (
    pick_target_column,
    pick_timestamp_column,
    read_table,
    require_columns,
)
from plateau_lstm.storage import open_store
from plateau_lstm.uris import split_uri

log = logging.getLogger("plateau_lstm")


def prepare(
    input_uri: str, output_uri: str, config: PrepareConfig, window: int, horizon: int
) -> dict:
    """Prepare `input_uri` into `output_uri`; returns the manifest. Nothing is written on error."""
    with tempfile.TemporaryDirectory(prefix="plateau-lstm-prepare-") as scratch:
        local_input, source_bytes = _fetch_input(input_uri, scratch)
        frame, file_format = read_table(local_input, display=input_uri)
        timestamp = pick_timestamp_column(frame, config.timestamp_col, input_uri)
        target = pick_target_column(frame, config.target_col, timestamp, input_uri)
        require_columns(frame, config.feature_cols, input_uri, option="--feature-cols")
        columns = [target] + [c for c in config.feature_cols if c != target]
        log.info(
            "read %s: %d rows, %s; target %r, features %s",
            input_uri,
            len(frame),
            file_format,
            target,
            columns[1:] or "none",
        )

        series, report = clean_series(
            frame,
            timestamp=timestamp,
            columns=columns,
            display=input_uri,
            on_duplicate=config.on_duplicate,
            max_gap=config.max_gap,
            freq=config.freq,
        )
        for note in report.lines():
            log.info("prepare: %s", note)
        bounds = split_bounds(len(series), config, window, horizon, input_uri)
        train_start, train_end = bounds["train"]
        scaler = fit_scaler(series.iloc[train_start:train_end], input_uri)
        scaled = scaler.transform(series).astype("float32")

        files = {"scaler.json": json_bytes(scaler.to_dict())}
        for split, (start, end) in bounds.items():
            part = scaled.iloc[start:end].reset_index()
            files[f"{split}.parquet"] = parquet_bytes(part)
        manifest = {
            "format_version": FORMAT_VERSION,
            "created_by": f"plateau-lstm {__version__}",
            "source": {
                "uri": input_uri,
                "sha256": sha256_bytes(source_bytes),
                "format": file_format,
            },
            "columns": columns,
            "timestamp_column": timestamp,
            "freq": report.freq,
            "rows": {split: end - start for split, (start, end) in bounds.items()},
            "time_range": {
                split: [str(series.index[start]), str(series.index[end - 1])]
                for split, (start, end) in bounds.items()
            },
            "filled_values": report.filled_values,
            "cleaning": report.lines(),
            "scaler": scaler.to_dict(),
            "options": {
                "train_fraction": config.train_fraction,
                "val_fraction": config.val_fraction,
                "max_gap": config.max_gap,
                "on_duplicate": config.on_duplicate,
                "freq": config.freq,
                "window": window,
                "horizon": horizon,
            },
            "files": {
                name: {"sha256": sha256_bytes(data), "bytes": len(data)}
                for name, data in sorted(files.items())
            },
        }
        files[MANIFEST] = json_bytes(manifest)
        _publish(files, output_uri, scratch)
    rows = manifest["rows"]
    log.info(
        "prepared %s: train %d, val %d, test %d rows (%s)",
        output_uri,
        rows["train"],
        rows["val"],
        rows["test"],
        report.freq,
    )
    return manifest


def split_bounds(rows: int, config: PrepareConfig, window: int, horizon: int, display: str):
    """Chronological [start, end) rows of each split; refuses a series too short to train on."""
    train_end = int(math.floor(rows * config.train_fraction))
    val_end = train_end + int(math.floor(rows * config.val_fraction))
    if train_end < window + horizon or val_end - train_end < 1 or rows - val_end < 1:
        needed = minimum_rows(config, window, horizon)
        raise UserError(
            f"{display}: {rows} usable rows are too few for window {window} + horizon {horizon} "
            f"and a {config.train_fraction:.0%}/{config.val_fraction:.0%}/rest split; need at "
            f"least {needed}. Give more data or a smaller --window."
        )
    return {"train": (0, train_end), "val": (train_end, val_end), "test": (val_end, rows)}


def minimum_rows(config: PrepareConfig, window: int, horizon: int) -> int:
    rows = window + horizon
    while True:
        train_end = int(math.floor(rows * config.train_fraction))
        val_end = train_end + int(math.floor(rows * config.val_fraction))
        if train_end >= window + horizon and val_end > train_end and rows > val_end:
            return rows
        rows += 1


def fit_scaler(train: pd.DataFrame, display: str) -> Scaler:
    mean = train.mean()
    std = train.std(ddof=0)
    for column in train.columns:
        if not np.isfinite(std[column]) or std[column] == 0:
            raise UserError(
                f"{display}: column {column!r} is constant on the training part "
                f"(value {mean[column]!r}); it cannot be scaled. Drop it from --feature-cols."
            )
    return Scaler(
        mean={c: float(mean[c]) for c in train.columns},
        std={c: float(std[c]) for c in train.columns},
    )


def _fetch_input(uri: str, scratch: str) -> tuple[str, bytes]:
    parent, name = split_uri(uri)
    store = open_store(parent)
    local = store.local_path(name)
    if local is None:
        if not store.exists(name):
            raise UserError(f"{uri}: no such object. Check the --input URI.")
        local = os.path.join(scratch, "input-" + name)
        store.download_file(name, local)
    elif not os.path.exists(local):
        raise UserError(f"{uri}: no such file. Check the --input path or URI.")
    with open(local, "rb") as handle:
        data = handle.read()
    return local, data


def _publish(files: dict[str, bytes], output_uri: str, scratch: str) -> None:
    """Write the set aside, then make it appear whole; an identical existing set is kept."""
    parent, name = split_uri(output_uri)
    store = open_store(parent)
    existing = store.child(name)
    if existing.exists(MANIFEST):
        if existing.read_bytes(MANIFEST) == files[MANIFEST]:
            log.info("prepare: %s already holds this exact data set; left it as it is", output_uri)
            return
        raise UserError(
            f"{output_uri}: already holds a different prepared data set. Nothing was changed; "
            "give another --output, or delete that one first."
        )
    staging = os.path.join(scratch, "out")
    os.makedirs(staging)
    for file_name, data in files.items():
        with open(os.path.join(staging, file_name), "wb") as handle:
            handle.write(data)
    store.publish_dir(staging, name, last=MANIFEST, overwrite=existing.list() != [])
