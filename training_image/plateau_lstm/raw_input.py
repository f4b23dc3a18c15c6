"""Reading a raw CSV or Parquet file into a DataFrame, with errors a person can act on."""

from __future__ import annotations

import os

import pandas as pd

from plateau_lstm.errors import UserError

TIME_COLUMN_NAMES = ("timestamp", "time", "date", "datetime", "ds", "date_time")
CSV_LINE_OFFSET = 2
"""File line of DataFrame row 0: line 1 is the header."""


def read_table(path: str, display: str | None = None) -> tuple[pd.DataFrame, str]:
    """Read a local CSV or Parquet file; returns (frame, format). `display` names it in errors."""
    display = display or path
    if not os.path.exists(path):
        raise UserError(f"{display}: no such file. Check the --input path or URI.")
    if os.path.isdir(path):
        raise UserError(f"{display}: is a directory, not a CSV or Parquet file.")
    try:
        with open(path, "rb") as handle:
            head = handle.read(4096)
    except OSError as err:
        raise UserError(
            f"{display}: cannot be read ({err.strerror}). Check its permissions."
        ) from err
    if not head:
        raise UserError(
            f"{display}: the file is empty. Expected a CSV with a header row or Parquet."
        )
    if head.startswith(b"PAR1"):
        return _read_parquet(path, display), "parquet"
    if b"\x00" in head:
        raise UserError(
            f"{display}: not a text file (binary content) and not Parquet. "
            "Give a CSV with a header row or a Parquet file."
        )
    return _read_csv(path, display), "csv"


def _read_parquet(path: str, display: str) -> pd.DataFrame:
    try:
        return pd.read_parquet(path, engine="pyarrow")
    except Exception as err:  # pyarrow raises many types for a damaged file
        raise UserError(f"{display}: not a readable Parquet file ({err}).") from err


def _read_csv(path: str, display: str) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path, engine="pyarrow")
    except pd.errors.EmptyDataError as err:
        raise UserError(f"{display}: the file is empty.") from err
    except Exception:
        # pyarrow's parser is fast but strict; the C parser tolerates more and says where.
        try:
            frame = pd.read_csv(path, engine="c", low_memory=False)
        except UnicodeDecodeError as err:
            raise UserError(f"{display}: not a text CSV file ({err.reason}).") from err
        except pd.errors.ParserError as err:
            raise UserError(f"{display}: not a valid CSV file ({err}).") from err
    if len(frame.columns) < 2:
        raise UserError(
            f"{display}: found {len(frame.columns)} column(s) "
            f"({', '.join(map(str, frame.columns))}); "
            "expected a timestamp column and at least one numeric column, comma separated."
        )
    if frame.empty:
        raise UserError(f"{display}: has a header but no data rows.")
    return frame


def pick_timestamp_column(frame: pd.DataFrame, wanted: str | None, display: str) -> str:
    if wanted is not None:
        require_columns(frame, [wanted], display, option="--timestamp-col")
        return wanted
    for column in frame.columns:
        if str(column).strip().lower() in TIME_COLUMN_NAMES or pd.api.types.is_datetime64_any_dtype(
            frame[column]
        ):
            return column
    raise UserError(
        f"{display}: no timestamp column found among: {_names(frame)}. "
        "Name it with --timestamp-col."
    )


def pick_target_column(
    frame: pd.DataFrame, wanted: str | None, timestamp: str, display: str
) -> str:
    if wanted is not None:
        require_columns(frame, [wanted], display, option="--target-col")
        return wanted
    others = [c for c in frame.columns if c != timestamp]
    for column in others:
        if pd.api.types.is_numeric_dtype(frame[column]):
            return column
    # A numeric column with one bad cell reads as text; pick it anyway so that the cell is
    # reported by line and value instead of the column being ignored.
    for column in others:
        sample = frame[column].dropna().head(1000)
        if len(sample) and pd.to_numeric(sample, errors="coerce").notna().mean() >= 0.9:
            return column
    raise UserError(
        f"{display}: no numeric column to forecast among: {_names(frame)}. "
        "Name it with --target-col."
    )


def require_columns(frame: pd.DataFrame, wanted, display: str, option: str) -> None:
    for column in wanted:
        if column not in frame.columns:
            raise UserError(
                f"{display}: column {column!r} ({option}) not found; "
                f"the columns are: {_names(frame)}."
            )


def _names(frame: pd.DataFrame) -> str:
    return ", ".join(str(c) for c in frame.columns)
