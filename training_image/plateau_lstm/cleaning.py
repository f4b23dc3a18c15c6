"""Turning raw columns into a regular, gap-filled, time-sorted UTC series.

Every check is one vectorized pass over a column; only once a check has found a problem is
the first bad row looked up and named by its file line (`RawTable.where`). Every silent fix
(sorting, merging, resampling, filling) is counted in the report that prepare prints and
keeps in the manifest.

Times are int64 microseconds since the epoch, UTC, in numpy; values are one float64 array
per column. Nothing here copies a column unless it changes it. pandas is imported only by the
paths that need it (text columns, calendar frequencies): a clean numeric file never pays the
second it takes to import.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from plateau_lstm.errors import UserError
from plateau_lstm.raw_input import RawTable

if TYPE_CHECKING:
    import pandas as pd

TIME_UNIT = "us"
"""Microseconds: exact for any sensor clock, and dates from year 1 to 9999 fit."""
_ISO_OFFSET = re.compile(r"(Z|[+-]\d\d(:?\d\d)?)$")
_S, _MIN, _H, _D = 1_000_000, 60_000_000, 3_600_000_000, 86_400_000_000
_UNITS = (("D", _D), ("h", _H), ("min", _MIN), ("s", _S))
ROUND_STEPS = (
    *(n * _S for n in (1, 2, 5, 10, 15, 20, 30)),
    *(n * _MIN for n in (1, 2, 5, 10, 15, 20, 30)),
    *(n * _H for n in (1, 2, 3, 4, 6, 8, 12)),
    *(n * _D for n in (1, 7)),
)
"""Steps an irregular series is resampled to when nothing better is known (see --freq)."""


@dataclass
class CleanSeries:
    """A regular series: strictly increasing UTC times, and one float64 array per column."""

    times: np.ndarray  # datetime64[us], UTC
    columns: list[str]  # the target first
    values: list[np.ndarray]  # float64, no NaN
    freq: str

    def __len__(self) -> int:
        return len(self.times)

    def time(self, row: int) -> str:
        return _timestamp(self.times[row])


@dataclass
class CleaningReport:
    timezone: str = ""
    unsorted_at: str = ""
    duplicates_merged: int = 0
    on_duplicate: str = ""
    freq: str = ""
    freq_given: bool = False
    resampled_rows: int = 0
    resampled_steps: int = 0
    missing_steps: int = 0
    filled_values: dict[str, int] = field(default_factory=dict)
    trimmed_rows: int = 0

    def lines(self) -> list[str]:
        notes = [self.timezone] if self.timezone else []
        if self.unsorted_at:
            notes.append(f"rows were not in time order (first at {self.unsorted_at}); sorted them")
        if self.duplicates_merged:
            notes.append(
                f"merged {self.duplicates_merged} rows with duplicate timestamps "
                f"(--on-duplicate {self.on_duplicate})"
            )
        if self.resampled_rows:
            why = f"--freq {self.freq}" if self.freq_given else "irregular spacing"
            notes.append(
                f"{why}; resampled {self.resampled_rows} rows to {self.resampled_steps} steps "
                f"of {self.freq} (mean of the rows nearest each step; --freq chooses the step)"
            )
        if self.missing_steps:
            notes.append(f"{self.missing_steps} time steps of {self.freq} had no row")
        filled = sum(self.filled_values.values())
        if filled:
            per_column = ", ".join(f"{c}: {n}" for c, n in self.filled_values.items() if n)
            notes.append(f"filled {filled} missing values by time interpolation ({per_column})")
        if self.trimmed_rows:
            notes.append(f"dropped {self.trimmed_rows} leading/trailing rows with missing values")
        return notes


def clean_series(
    raw: RawTable,
    *,
    on_duplicate: str = "error",
    max_gap: int = 24,
    freq: str | None = None,
) -> tuple[CleanSeries, CleaningReport]:
    """Parse, check, sort, merge, regularize and fill `raw`; refuse what cannot be fixed."""
    report = CleaningReport()
    display = raw.display
    times = parse_timestamps(raw.pop(raw.timestamp), raw.timestamp, raw, report)
    _release_arrow_memory()
    values = []
    for name in raw.columns:
        values.append(parse_numbers(raw.pop(name), name, raw))
        _release_arrow_memory()
    target = raw.columns[0]
    if not _all_finite(values[0]) and np.isnan(values[0]).all():
        raise UserError(
            f"{display}: the target column {target!r} has no values at all. "
            "Choose another column with --target-col."
        )

    backwards, repeats, uneven = _spacing(times)
    order = None
    if backwards:
        diffs = np.diff(times.view("int64"))
        report.unsorted_at = raw.where(int(np.argmax(diffs < 0)) + 1)
        # stable, so that among equal timestamps the file's order decides what "last" means
        order = np.argsort(times, kind="stable")
        times = times[order]
        values = [v[order] for v in values]
        backwards, repeats, uneven = _spacing(times)
    if repeats:
        same = np.diff(times.view("int64")) == 0
        times, values = _resolve_duplicates(times, same, values, order, on_duplicate, raw, report)
        uneven = _spacing(times)[2]
    times, values, observed = _regularize(times, uneven, values, freq, display, report)
    if not all(_all_finite(v) for v in values):
        missing = [np.isnan(v) for v in values]
        times, values, missing, observed = _trim_ends(
            times, values, missing, observed, raw.columns, display, report
        )
        values = _fill_gaps(times, values, missing, observed, raw.columns, max_gap, display, report)
    else:
        report.filled_values = dict.fromkeys(raw.columns, 0)
    return CleanSeries(times, list(raw.columns), values, report.freq), report


def _release_arrow_memory() -> None:
    """Give the memory of a converted Arrow column back to the system now.

    pyarrow's allocator keeps freed memory for reuse, but nothing Arrow-sized comes next:
    kept, the raw columns and their numpy copies would both count in the peak (3.3x the
    data on ten million rows instead of 2.5x).
    """
    pa.default_memory_pool().release_unused()


CHUNK_ROWS = 1 << 20
"""Rows per pass of the whole-column checks: their temporaries stay in cache, not 80 MB."""


def _spacing(times: np.ndarray) -> tuple[bool, bool, bool]:
    """(any step backwards, any repeated time, any step unlike the first) in one pass."""
    stamps = times.view("int64")
    first = stamps[1] - stamps[0] if len(stamps) > 1 else 0
    backwards = repeats = uneven = False
    for start in range(0, max(len(stamps) - 1, 0), CHUNK_ROWS):
        steps = np.diff(stamps[start : start + CHUNK_ROWS + 1])
        backwards = backwards or bool((steps < 0).any())
        repeats = repeats or bool((steps == 0).any())
        uneven = uneven or bool((steps != first).any())
    return backwards, repeats, uneven


def _all_finite(values: np.ndarray) -> bool:
    """True when no value is NaN or infinite, in one pass and without a temporary.

    Any NaN or infinity makes the sum non-finite; a sum that merely overflows sends the
    caller to its exact, element-wise check, which is all a false alarm costs.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        return bool(np.isfinite(np.add.reduce(values)))


# ------------------------------------------------------------------------------------------
# Parsing


def parse_timestamps(
    column: pa.ChunkedArray, name: str, raw: RawTable, report: CleaningReport
) -> np.ndarray:
    """datetime64[us] UTC times; refuses empty or unreadable ones by line and value."""
    if column.null_count:
        row = _first(pc.is_null(column))
        raise UserError(
            f"{raw.display}: empty timestamp in column {name!r} at {raw.where(row)}. "
            "Every row needs a time."
        )
    kind = column.type
    if pa.types.is_timestamp(kind):
        aware = kind.tz is not None
        times = _instants(column, kind.unit)
    elif pa.types.is_date(kind):
        aware = False
        times = _instants(pc.cast(column, pa.timestamp(TIME_UNIT)), TIME_UNIT)
    elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
        first = column[0].as_py()
        aware = bool(_ISO_OFFSET.search(first.strip()))
        times = _parse_time_strings(column.to_pandas(), name, raw)
    elif _is_number(kind):
        raise UserError(
            f"{raw.display}: column {name!r} holds numbers (first {column[0].as_py()!r} at "
            f"{raw.where(0)}), not timestamps. Write the times as ISO 8601 (e.g. 2024-01-31 "
            "13:00:00), or name the time column with --timestamp-col."
        )
    else:
        raise UserError(
            f"{raw.display}: cannot read timestamp {column[0].as_py()!r} in column {name!r} at "
            f"{raw.where(0)} ({kind} values). Use ISO 8601, e.g. 2024-01-31 13:00:00."
        )
    report.timezone = (
        "timestamps with time zone offsets converted to UTC"
        if aware
        else "timestamps carry no time zone; taken as UTC"
    )
    return times.astype(f"datetime64[{TIME_UNIT}]", copy=False)


def _instants(column: pa.ChunkedArray, unit: str) -> np.ndarray:
    """datetime64 of a timestamp column's UTC instants, whatever its zone."""
    return _to_numpy(pc.cast(column, pa.int64()), np.int64).view(f"datetime64[{unit}]")


def _to_numpy(column: pa.ChunkedArray, dtype) -> np.ndarray:
    """One numpy array over an int64 or float64 column's chunks, nulls as NaN; one copy at most.

    Straight from the Arrow data buffers: pyarrow's own to_numpy imports pandas first, and
    that import alone takes a fifth of a large prepare's time budget.
    """
    parts = []
    for chunk in column.chunks:
        if chunk.null_count:
            chunk = pc.fill_null(chunk, np.nan)
        parts.append(
            np.frombuffer(
                chunk.buffers()[1],
                dtype=dtype,
                count=len(chunk),
                offset=chunk.offset * np.dtype(dtype).itemsize,
            )
        )
    if not parts:
        return np.empty(0, dtype)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _parse_time_strings(text: pd.Series, name: str, raw: RawTable) -> np.ndarray:
    import pandas as pd

    with warnings.catch_warnings():
        # pandas warns when it falls back to guessing each value's format; the outcome is
        # checked value by value below, so the warning adds nothing for the reader
        warnings.simplefilter("ignore", UserWarning)
        try:
            parsed = pd.to_datetime(text, utc=True, format="ISO8601")
        except (ValueError, TypeError, OverflowError):
            parsed = pd.to_datetime(text, utc=True, format="ISO8601", errors="coerce")
            if parsed.isna().all():  # not ISO at all: let pandas infer one format
                try:
                    parsed = pd.to_datetime(text, utc=True)
                except (ValueError, TypeError, OverflowError):
                    parsed = pd.to_datetime(text, utc=True, errors="coerce")
            bad = parsed.isna().to_numpy()
            if bad.any():
                row = int(np.flatnonzero(bad)[0])
                raise UserError(
                    f"{raw.display}: cannot read timestamp {text.iloc[row]!r} in column "
                    f"{name!r} at {raw.where(row)}. Use ISO 8601, e.g. 2024-01-31 13:00:00 or "
                    "2024-01-31T13:00:00+02:00."
                ) from None
    return pd.DatetimeIndex(parsed).as_unit(TIME_UNIT).asi8.view(f"datetime64[{TIME_UNIT}]")


def parse_numbers(column: pa.ChunkedArray, name: str, raw: RawTable) -> np.ndarray:
    """float64 values (NaN for blanks); refuses text and infinities by line and value."""
    kind = column.type
    if _is_number(kind):
        if not pa.types.is_float64(kind):
            column = pc.cast(column, pa.float64(), safe=False)
        values = _to_numpy(column, np.float64)
    elif pa.types.is_null(kind):
        values = np.full(len(column), np.nan)
    elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
        parts, first_row = [], 0
        for chunk in column.chunks:
            parts.append(_text_to_numbers(chunk, name, first_row, raw))
            first_row += len(chunk)
        values = _to_numpy(pa.chunked_array(parts, pa.float64()), np.float64)
    else:
        row = _first(pc.is_valid(column))
        _non_numeric(column[row].as_py(), name, row, raw)
    if _all_finite(values):
        return values
    infinite = np.isinf(values)
    if infinite.any():
        row = int(np.flatnonzero(infinite)[0])
        raise UserError(
            f"{raw.display}: infinite value in column {name!r} at {raw.where(row)} "
            f"({int(infinite.sum())} in all). Replace them with real numbers or blanks."
        )
    return values


def _text_to_numbers(chunk: pa.Array, name: str, first_row: int, raw: RawTable) -> pa.Array:
    """float64 from one chunk of text; a chunk at a time so pandas never holds a whole column
    of Python strings (ten million of them are most of a gigabyte)."""
    try:  # strict and fast; pandas below also takes padded numbers and finds the bad row
        return pc.cast(chunk, pa.float64())
    except pa.ArrowInvalid:
        pass
    import pandas as pd

    text = pd.Series(chunk.to_pylist(), dtype=object)
    parsed = pd.to_numeric(text, errors="coerce")
    bad = (parsed.isna() & text.notna()).to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        _non_numeric(text.iloc[row], name, first_row + row, raw)
    return pa.array(parsed.to_numpy(dtype="float64", na_value=np.nan))


def _non_numeric(value, name: str, row: int, raw: RawTable):
    raise UserError(
        f"{raw.display}: non-numeric value {value!r} in column {name!r} at {raw.where(row)}. "
        "Fix or blank that cell (blanks are interpolated)."
    )


def _is_number(kind: pa.DataType) -> bool:
    return pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)


def _first(mask: pa.ChunkedArray) -> int:
    """Index of the first true value of a boolean column."""
    return int(pc.index(mask, True).as_py())


# ------------------------------------------------------------------------------------------
# Duplicates and the time grid


def _resolve_duplicates(times, same, values, order, on_duplicate, raw, report):
    """Merge or refuse runs of equal times; `same[i]` says row i + 1 repeats row i's time."""
    keep = np.append(~same, True)  # the last row of every run of equal times
    if on_duplicate == "error":
        starts = np.flatnonzero(same & ~np.insert(same[:-1], 0, False))
        groups = []
        for start in starts[:3]:
            rows = np.arange(start, start + np.argmax(~np.append(same[start:], False)) + 1)
            groups.append(sorted(int(r) for r in (rows if order is None else order[rows]))[:3])
        places = raw.where_groups(groups)
        examples = [
            f"{_timestamp(times[s])} at {p}" for s, p in zip(starts[:3], places, strict=True)
        ]
        raise UserError(
            f"{raw.display}: {len(starts)} timestamps occur more than once "
            f"({int(same.sum())} extra rows); first: {'; '.join(examples)}. Remove them, or "
            "pass --on-duplicate last (keep the last row of each) or --on-duplicate mean "
            "(average them)."
        )
    report.on_duplicate = on_duplicate
    report.duplicates_merged = int(same.sum())
    if on_duplicate == "last":
        return times[keep], [v[keep] for v in values]
    groups = np.concatenate([[0], np.cumsum(~same)])
    return times[keep], [_group_means(groups, v, int(groups[-1]) + 1) for v in values]


def _group_means(groups: np.ndarray, values: np.ndarray, count: int) -> np.ndarray:
    """Mean of each group, skipping NaN (NaN where a group has no value)."""
    present = ~np.isnan(values)
    sums = np.bincount(groups, weights=np.where(present, values, 0.0), minlength=count)
    counts = np.bincount(groups, weights=present, minlength=count)
    return np.divide(sums, counts, out=np.full(count, np.nan), where=counts > 0)


def _regularize(times, uneven, values, freq, display, report):
    """Put the series on a regular grid; returns (times, values, observed or None).

    `observed` marks the grid steps that had at least one row (None: all had), so a long
    gap can be reported as absent rows rather than blank cells.
    """
    if len(times) < 2:
        raise UserError(
            f"{display}: needs at least two distinct timestamps; found {len(times)}. "
            "Give more data."
        )
    stamps = times.view("int64")
    if freq is not None:
        report.freq_given = True
        offset = _offset(freq)
        step = _fixed_step(offset)
        if step is None:
            return _regularize_calendar(times, values, offset, report)
        report.freq = offset.freqstr
    else:
        if not uneven:  # the usual case, decided by `_spacing`'s one pass
            report.freq = _step_name(int(stamps[1] - stamps[0]))
            return times, values, None
        step = _inferred_step(times, np.diff(stamps))
        if not isinstance(step, int):
            return _regularize_calendar(times, values, step, report)
        report.freq = _step_name(step)

    offsets = stamps - stamps[0]
    if (offsets % step == 0).all():
        steps = offsets // step
        count = int(steps[-1]) + 1
        if count == len(times):
            return times, values, None
        report.missing_steps = count - len(times)
        spread = []
        for v in values:
            full = np.full(count, np.nan)
            full[steps] = v
            spread.append(full)
        return _grid(stamps[0], step, count), spread, _observed(steps, count)
    # Off the grid: each row goes to its nearest step on a grid of whole steps (whole hours
    # for h), so jittered readings land on the step they were meant for.
    origin = _round_to(stamps[0], step)
    steps = _round_to(stamps - origin, step) // step
    origin += int(steps[0]) * step
    steps -= steps[0]
    count = int(steps[-1]) + 1
    report.resampled_rows, report.resampled_steps = len(times), count
    means = [_group_means(steps, v, count) for v in values]
    return _grid(origin, step, count), means, _none_if_all(_observed(steps, count))


def _round_to(stamps, step: int):
    """Nearest multiple of `step` (halves round up), for ints or int64 arrays."""
    return (stamps + step // 2) // step * step


def _grid(origin: int, step: int, count: int) -> np.ndarray:
    return (origin + np.arange(count, dtype="int64") * step).view(f"datetime64[{TIME_UNIT}]")


def _observed(steps: np.ndarray, count: int) -> np.ndarray:
    observed = np.zeros(count, dtype=bool)
    observed[steps] = True
    return observed


def _regularize_calendar(times, values, offset, report):
    """Month, week and other calendar steps, which have no fixed length: pandas does these."""
    import pandas as pd

    report.freq = offset.freqstr
    index = pd.DatetimeIndex(times, tz="UTC")
    frame = pd.DataFrame(dict(enumerate(values)), index=index)
    grid = pd.date_range(index[0], index[-1], freq=offset)
    if len(grid) and index.isin(grid).all():
        observed = grid.isin(index)
        report.missing_steps = int((~observed).sum())
        frame = frame.reindex(grid)
    else:
        counts = frame.iloc[:, 0].resample(offset).size()
        frame = frame.resample(offset).mean()
        observed = (counts > 0).to_numpy()
        report.resampled_rows, report.resampled_steps = len(index), len(frame)
    out = frame.index.as_unit(TIME_UNIT).tz_localize(None).to_numpy()
    arrays = [frame[i].to_numpy(dtype="float64") for i in range(len(values))]
    return out, arrays, _none_if_all(np.asarray(observed))


def _none_if_all(mask: np.ndarray):
    return None if mask.all() else mask


def _offset(freq: str):
    import pandas as pd

    try:
        return pd.tseries.frequencies.to_offset(freq)
    except ValueError as err:
        raise UserError(
            f"--freq {freq!r} is not a pandas frequency ({err}). Use e.g. h, 15min, D, W-SAT, MS."
        ) from None


def _fixed_step(offset) -> int | None:
    """The offset's length in microseconds, or None for calendar offsets (months, weeks)."""
    import pandas as pd

    try:
        step = pd.Timedelta(offset)
    except ValueError:
        return None
    micros = int(step / pd.Timedelta(1, TIME_UNIT))
    if micros <= 0:
        raise UserError(f"--freq {offset.freqstr!r} must be a positive step. Use e.g. h or 15min.")
    return micros


def _inferred_step(times, diffs):
    """The step of an irregular series: a calendar frequency pandas recognizes (months), the
    spacing of most rows when one dominates (a regular series with missing rows), or else
    the round step nearest the median spacing (jittered clocks)."""
    import pandas as pd

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            inferred = pd.infer_freq(pd.DatetimeIndex(times))
        except (ValueError, TypeError):
            inferred = None
    if inferred is not None:
        offset = _offset(inferred)
        fixed = _fixed_step(offset)
        return offset if fixed is None else fixed
    spacings, counts = np.unique(diffs, return_counts=True)
    if counts.max() * 2 >= len(diffs):
        return int(spacings[np.argmax(counts)])
    median = float(np.median(diffs))
    return min(ROUND_STEPS, key=lambda step: abs(math.log(step / median)))


def _step_name(micros: int) -> str:
    for unit, size in _UNITS:
        if micros % size == 0:
            count = micros // size
            return unit if count == 1 else f"{count}{unit}"
    return f"{micros}us"


# ------------------------------------------------------------------------------------------
# Gaps


def _trim_ends(times, values, missing, observed, columns, display, report):
    """Drop leading and trailing steps where some column is blank: nothing to interpolate from."""
    complete = ~np.logical_or.reduce(missing)
    if not complete.any():
        raise UserError(
            f"{display}: no time step has a value in every one of the columns "
            f"{', '.join(columns)}. Check --feature-cols."
        )
    first, last = (int(i) for i in np.flatnonzero(complete)[[0, -1]])
    if first == 0 and last == len(times) - 1:
        return times, values, missing, observed
    report.trimmed_rows = first + (len(times) - 1 - last)
    keep = slice(first, last + 1)
    return (
        times[keep],
        [v[keep] for v in values],
        [m[keep] for m in missing],
        None if observed is None else observed[keep],
    )


def _fill_gaps(times, values, missing, observed, columns, max_gap, display, report):
    """Interpolate blanks in time, refusing any run longer than `max_gap` steps."""
    stamps = times.view("int64")
    # positions relative to the start keep float64 exact for any realistic span
    position = (stamps - stamps[0]).astype("float64")
    filled = []
    for name, v, gaps in zip(columns, values, missing, strict=True):
        report.filled_values[name] = int(gaps.sum())
        if not report.filled_values[name]:
            filled.append(v)
            continue
        start, length = _longest_run(gaps)
        if length > max_gap:
            first, last = _timestamp(times[start]), _timestamp(times[start + length - 1])
            absent = observed is not None and not observed[start : start + length].any()
            what = (
                f"has no rows for {length} consecutive steps of {report.freq}"
                if absent
                else f"column {name!r} is missing {length} consecutive steps"
            )
            raise UserError(
                f"{display}: {what} from {first} to {last}, more than --max-gap {max_gap}. "
                f"Fill the data, or pass --max-gap {length} to interpolate across it."
            )
        out = v.copy()
        out[gaps] = np.interp(position[gaps], position[~gaps], v[~gaps])
        filled.append(out)
    return filled


def _longest_run(mask: np.ndarray) -> tuple[int, int]:
    """(start, length) of the first longest run of True in a boolean array."""
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    starts, ends = edges[::2], edges[1::2]
    longest = int(np.argmax(ends - starts))
    return int(starts[longest]), int(ends[longest] - starts[longest])


def _timestamp(value) -> str:
    """'2024-01-31 13:00:00+00:00', as pandas prints a UTC time (a fraction only when set)."""
    text = np.datetime_as_string(np.datetime64(value, TIME_UNIT), unit=TIME_UNIT)
    return text.replace("T", " ").removesuffix(".000000") + "+00:00"
