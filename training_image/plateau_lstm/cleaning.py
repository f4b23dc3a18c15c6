"""Turning a raw frame into a regular, gap-filled, time-sorted UTC series.

Every refusal names the column, the file line and the value, and says what to do; every
silent fix (sorting, resampling, filling) is counted in the report that prepare prints.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from plateau_lstm.errors import UserError
from plateau_lstm.raw_input import CSV_LINE_OFFSET


@dataclass
class CleaningReport:
    sorted_rows: bool = False
    duplicates_merged: int = 0
    resampled: bool = False
    freq: str = ""
    filled_values: dict[str, int] = field(default_factory=dict)
    trimmed_rows: int = 0

    def lines(self) -> list[str]:
        notes = []
        if self.sorted_rows:
            notes.append("rows were not in time order; sorted them")
        if self.duplicates_merged:
            notes.append(f"merged {self.duplicates_merged} rows with duplicate timestamps")
        if self.resampled:
            notes.append(f"irregular spacing; resampled to {self.freq}")
        filled = sum(self.filled_values.values())
        if filled:
            per_column = ", ".join(f"{c}: {n}" for c, n in self.filled_values.items() if n)
            notes.append(f"filled {filled} missing values by time interpolation ({per_column})")
        if self.trimmed_rows:
            notes.append(f"dropped {self.trimmed_rows} leading/trailing rows with missing values")
        return notes


def clean_series(
    frame: pd.DataFrame,
    *,
    timestamp: str,
    columns: list[str],
    display: str,
    on_duplicate: str = "error",
    max_gap: int = 24,
    freq: str | None = None,
) -> tuple[pd.DataFrame, CleaningReport]:
    """Returns a frame indexed by a regular UTC DatetimeIndex with float64 `columns`."""
    report = CleaningReport()
    times = _parse_timestamps(frame[timestamp], timestamp, display)
    data = pd.DataFrame(
        {c: _parse_numeric(frame[c], c, display) for c in columns}, index=pd.Index(times)
    )
    data.index.name = "timestamp"
    if data[columns[0]].isna().all():
        raise UserError(
            f"{display}: the target column {columns[0]!r} has no values at all. "
            "Choose another column with --target-col."
        )

    if not data.index.is_monotonic_increasing:
        data = data.sort_index(kind="stable")
        report.sorted_rows = True
    data = _resolve_duplicates(data, on_duplicate, display, report)
    data = _regularize(data, freq, display, report)
    data = _trim_ends(data, report)
    data = _fill_gaps(data, max_gap, display, report)
    return data, report


def _parse_timestamps(column: pd.Series, name: str, display: str) -> pd.DatetimeIndex:
    if column.isna().any():
        row = int(np.flatnonzero(column.isna().to_numpy())[0])
        raise UserError(
            f"{display}: empty timestamp in column {name!r} at line {row + CSV_LINE_OFFSET}. "
            "Every row needs a time."
        )
    try:
        parsed = pd.to_datetime(column, utc=True, format="ISO8601")
    except (ValueError, TypeError):
        parsed = pd.to_datetime(column, utc=True, errors="coerce", format="mixed")
        bad = np.flatnonzero(parsed.isna().to_numpy())
        if len(bad):
            row = int(bad[0])
            raise UserError(
                f"{display}: cannot read timestamp {column.iloc[row]!r} in column {name!r} at "
                f"line {row + CSV_LINE_OFFSET}. Use ISO 8601, e.g. 2024-01-31 13:00:00."
            ) from None
    return pd.DatetimeIndex(parsed)


def _parse_numeric(column: pd.Series, name: str, display: str) -> np.ndarray:
    if pd.api.types.is_bool_dtype(column) or not pd.api.types.is_numeric_dtype(column):
        coerced = pd.to_numeric(column, errors="coerce")
        bad = coerced.isna() & column.notna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise UserError(
                f"{display}: non-numeric value {column.iloc[row]!r} in column {name!r} at line "
                f"{row + CSV_LINE_OFFSET}. Fix or blank that cell (blanks are interpolated)."
            )
        column = coerced
    values = column.to_numpy(dtype="float64", na_value=np.nan)
    infinite = np.isinf(values)
    if infinite.any():
        row = int(np.flatnonzero(infinite)[0])
        raise UserError(
            f"{display}: infinite value in column {name!r} at line {row + CSV_LINE_OFFSET} "
            f"({int(infinite.sum())} in all). Replace them with real numbers or blanks."
        )
    return values


def _resolve_duplicates(data, on_duplicate, display, report):
    duplicated = data.index.duplicated(keep=False)
    if not duplicated.any():
        return data
    times = data.index[duplicated].unique()
    if on_duplicate == "error":
        examples = ", ".join(str(t) for t in times[:3])
        raise UserError(
            f"{display}: {len(times)} timestamps occur more than once (first: {examples}). "
            "Pass --on-duplicate last or --on-duplicate mean to merge them."
        )
    merged = data.groupby(level=0, sort=True)
    data_out = merged.last() if on_duplicate == "last" else merged.mean()
    report.duplicates_merged = len(data) - len(data_out)
    return data_out


def _regularize(data, freq, display, report):
    if len(data) < 2:
        raise UserError(f"{display}: needs at least two distinct timestamps.")
    if freq is not None:
        try:
            step = pd.tseries.frequencies.to_offset(freq)
        except ValueError as err:
            raise UserError(
                f"--freq {freq!r} is not a pandas frequency (e.g. h, 15min, D)."
            ) from err
    else:
        # the most common spacing; asi8 counts in the index's own unit (ns, us, ...)
        diffs = np.diff(data.index.asi8)
        values, counts = np.unique(diffs, return_counts=True)
        common = pd.Timedelta(int(values[np.argmax(counts)]), unit=data.index.unit)
        step = pd.tseries.frequencies.to_offset(common)
    report.freq = step.freqstr
    grid = pd.date_range(data.index[0], data.index[-1], freq=step)
    if data.index.isin(grid).all() and grid.isin(data.index).sum() == len(data):
        return data.reindex(grid).rename_axis("timestamp")
    report.resampled = True
    resampled = data.resample(step, origin=data.index[0]).mean()
    return resampled.rename_axis("timestamp")


def _trim_ends(data, report):
    complete = data.notna().all(axis=1).to_numpy()
    if not complete.any():
        return data
    first, last = np.flatnonzero(complete)[[0, -1]]
    report.trimmed_rows = int(first + (len(data) - 1 - last))
    return data.iloc[first : last + 1]


def _fill_gaps(data, max_gap, display, report):
    for column in data.columns:
        missing = data[column].isna().to_numpy()
        if not missing.any():
            report.filled_values[column] = 0
            continue
        start, length = _longest_run(missing)
        if length > max_gap:
            first, last = data.index[start], data.index[start + length - 1]
            raise UserError(
                f"{display}: column {column!r} is missing {length} consecutive steps from "
                f"{first} to {last}, more than --max-gap {max_gap}. Fill the data, or pass "
                f"--max-gap {length} to interpolate across it."
            )
        report.filled_values[column] = int(missing.sum())
    if any(report.filled_values.values()):
        data = data.interpolate(method="time", limit_area="inside")
    return data


def _longest_run(mask: np.ndarray) -> tuple[int, int]:
    """(start, length) of the longest run of True in a boolean array."""
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    starts, ends = edges[::2], edges[1::2]
    longest = int(np.argmax(ends - starts))
    return int(starts[longest]), int(ends[longest] - starts[longest])
