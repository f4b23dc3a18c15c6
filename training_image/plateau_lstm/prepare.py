"""`plateau-lstm prepare`: validate, clean, split in time, scale on train only, publish whole.

The output is written to a scratch folder and published in one step (a rename locally, the
manifest last on S3), so `--output` holds either the whole set or nothing. The same input
and options give byte-identical files: no clock, random number or thread count reaches them.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor

from plateau_lstm import __version__
from plateau_lstm.cleaning import CleanSeries, clean_series
from plateau_lstm.config import PrepareConfig
from plateau_lstm.errors import UserError
from plateau_lstm.prepared import (
    FORMAT_VERSION,
    MANIFEST,
    SCALER,
    Scaler,
    json_bytes,
    sha256_file,
    write_split,
)
from plateau_lstm.raw_input import read_raw, sniff_format
from plateau_lstm.storage import ArtifactNotFoundError, open_store
from plateau_lstm.uris import split_uri

log = logging.getLogger("plateau_lstm")


def prepare(
    input_uri: str, output_uri: str, config: PrepareConfig, window: int, horizon: int
) -> dict:
    """Prepare `input_uri` into `output_uri`; returns the manifest. Nothing is written on error."""
    for name, value in (("--window", window), ("--horizon", horizon)):
        if value < 1:
            raise UserError(f"{name} must be at least 1. Received: {name} {value}")
    with (
        tempfile.TemporaryDirectory(prefix="plateau-lstm-prepare-") as scratch,
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="prepare-sha256") as hasher,
    ):
        local_input = _fetch_input(input_uri, scratch)
        sniff_format(local_input, input_uri)  # a wrong file is refused before hashing starts
        # hashlib releases the GIL: the source's checksum is computed while pyarrow parses it,
        # from the same pages of the OS cache
        source_sha256 = hasher.submit(sha256_file, local_input)
        raw = read_raw(
            local_input,
            input_uri,
            timestamp_col=config.timestamp_col,
            target_col=config.target_col,
            feature_cols=config.feature_cols,
        )
        log.info(
            "read %s: %d rows, %s; target %r, features %s",
            input_uri,
            raw.rows,
            raw.format,
            raw.columns[0],
            raw.columns[1:] or "none",
        )
        series, report = clean_series(
            raw, on_duplicate=config.on_duplicate, max_gap=config.max_gap, freq=config.freq
        )
        for note in report.lines():
            log.info("prepare: %s", note)
        bounds = split_bounds(len(series), config, window, horizon, input_uri)
        scaler = fit_scaler(series, *bounds["train"], input_uri)

        staging = os.path.join(scratch, "out")
        os.makedirs(staging)
        for split, (start, end) in bounds.items():
            write_split(
                os.path.join(staging, f"{split}.parquet"),
                series.times[start:end],
                series.columns,
                [scaler.transform_column(c, v[start:end]) for c, v in _columns(series)],
            )
        _write(staging, SCALER, json_bytes(scaler.to_dict()))
        manifest = {
            "format_version": FORMAT_VERSION,
            "created_by": f"plateau-lstm {__version__}",
            "source": {
                "uri": input_uri,
                "sha256": source_sha256.result(),
                "format": raw.format,
                "rows": raw.rows,
            },
            "columns": series.columns,
            "timestamp_column": raw.timestamp,
            "freq": series.freq,
            "rows": {split: end - start for split, (start, end) in bounds.items()},
            "time_range": {
                split: [series.time(start), series.time(end - 1)]
                for split, (start, end) in bounds.items()
            },
            "filled_values": report.filled_values,
            "cleaning": report.lines(),
            "scaler": scaler.to_dict(),
            "options": {
                "timestamp_col": config.timestamp_col,
                "target_col": config.target_col,
                "feature_cols": list(config.feature_cols),
                "train_fraction": config.train_fraction,
                "val_fraction": config.val_fraction,
                "max_gap": config.max_gap,
                "on_duplicate": config.on_duplicate,
                "freq": config.freq,
                "window": window,
                "horizon": horizon,
            },
            "files": {
                name: {
                    "sha256": sha256_file(os.path.join(staging, name)),
                    "bytes": os.path.getsize(os.path.join(staging, name)),
                }
                for name in sorted(os.listdir(staging))
            },
        }
        manifest_bytes = json_bytes(manifest)
        _write(staging, MANIFEST, manifest_bytes)
        _publish(staging, manifest_bytes, output_uri)
    rows = manifest["rows"]
    log.info(
        "prepared %s: train %d, val %d, test %d rows (%s)",
        output_uri,
        rows["train"],
        rows["val"],
        rows["test"],
        series.freq,
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


def fit_scaler(series: CleanSeries, start: int, end: int, display: str) -> Scaler:
    """Mean and standard deviation of rows [start, end) only: the training part."""
    scaler = Scaler.fit({name: values[start:end] for name, values in _columns(series)})
    for name in series.columns:
        if not math.isfinite(scaler.std[name]) or scaler.std[name] == 0:
            what = "--target-col" if name == series.columns[0] else "--feature-cols"
            raise UserError(
                f"{display}: column {name!r} is constant on the training part "
                f"(value {scaler.mean[name]!r}); it cannot be scaled. Choose another {what}."
            )
    return scaler


def _columns(series: CleanSeries):
    return zip(series.columns, series.values, strict=True)


def _write(folder: str, name: str, data: bytes) -> None:
    with open(os.path.join(folder, name), "wb") as handle:
        handle.write(data)


def _fetch_input(uri: str, scratch: str) -> str:
    """A local path for `uri`: the file itself, or a copy downloaded through the store."""
    try:
        parent, name = split_uri(uri)
    except ValueError as err:
        raise UserError(f"--input {uri}: {err}") from None
    store = open_store(parent)
    local = store.local_path(name)
    if local is not None:
        return str(local)
    copy = os.path.join(scratch, "input", name)
    try:
        store.download_file(name, copy)
    except ArtifactNotFoundError:
        raise UserError(f"{uri}: no such object. Check the --input URI.") from None
    return copy


def _publish(staging: str, manifest_bytes: bytes, output_uri: str) -> None:
    """Make the staged set appear whole; an identical existing set is kept as it is."""
    parent, name = split_uri(output_uri)
    store = open_store(parent)
    existing = store.child(name)
    if existing.exists(MANIFEST):
        if existing.read_bytes(MANIFEST) == manifest_bytes:
            log.info("prepare: %s already holds this exact data set; left it as it is", output_uri)
            return
        raise UserError(
            f"{output_uri}: already holds a different prepared data set. Nothing was changed; "
            "give another --output, or delete that one first."
        )
    store.publish_dir(staging, name, last=MANIFEST, overwrite=existing.list() != [])
